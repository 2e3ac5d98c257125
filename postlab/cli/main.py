"""`postlab` command line. Each command group lives in its own module with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Command modules, each adding its subcommands; a module missing here is simply skipped.
COMMAND_MODULES = ["postlab.cli.train", "postlab.cli.model", "postlab.cli.envs", "postlab.cli.eval",
                   "postlab.cli.study", "postlab.cli.rollout", "postlab.cli.interventions"]


def build_parser() -> argparse.ArgumentParser:
    from postlab import __version__

    parser = argparse.ArgumentParser(prog="postlab", description="SFT vs RL post-training research: train, evaluate, "
                                     "and rerun the seed studies at lab or paper scale.")
    parser.add_argument("--version", action="version", version=f"postlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from postlab.config import ConfigError
    from postlab.data.records import DataError
    from postlab.models.io import CheckpointError
    from postlab.trainers.common import TrainingError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting positionals at an option, so `train sft CFG --resume RUN lr=...` leaves the
    # dotted overrides after --resume unparsed: they belong to the command's overrides.
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from postlab import distributed

    # Under torchrun (WORLD_SIZE > 1) the process group starts here, once, before any command
    # touches a model; a command run without torchrun never sees torch.distributed.
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        if multi:
            distributed.init_from_env()
        code = args.func(args) or 0
        if multi:
            distributed.shutdown()
        return code
    except (ConfigError, DataError, CheckpointError, TrainingError) as e:
        print(f"postlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("postlab: interrupted; resume with --resume RUN_DIR", file=sys.stderr)
        return 130
    except OSError as e:  # a path from the command line that cannot be read or written as asked
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"postlab: error:{where}: {e.strerror or e} (check the paths given on the command line)", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: one line, the traceback on request
        if os.environ.get("POSTLAB_TRACEBACK"):
            raise
        print(f"postlab: internal error: {type(e).__name__}: {e}\n(a bug in postlab, not in your input: rerun with "
              "POSTLAB_TRACEBACK=1 for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
