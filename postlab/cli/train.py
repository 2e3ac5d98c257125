"""`postlab train {sft,rl,...} CONFIG [key=value ...] [--resume RUN_DIR]`."""

from __future__ import annotations

from postlab.trainers.registry import TRAINERS


def register(sub) -> None:
    p = sub.add_parser("train", help=f"train a model ({', '.join(TRAINERS)})", description="Train a model with one "
                       "stage's config (YAML) and dotted overrides, e.g. `postlab train sft cfg.yaml optim.lr=3e-4`.")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage, entry in TRAINERS.items():
        sp = stages.add_parser(stage, help=entry.doc or f"{stage} trainer", description=f"Train with the {stage} "
                               f"trainer ({entry.module}).")
        sp.add_argument("config", nargs="?", help="YAML config file (optional: defaults + overrides)")
        sp.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 run.max_steps=100")
        sp.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its latest checkpoint")
        sp.add_argument("--config-help", action="store_true",
                        help=f"print every config key of the {stage} trainer with its default, valid values and meaning "
                             "(read from the config classes), and exit")
        sp.set_defaults(func=_run, trainer=entry)


def _run(args) -> int:
    from postlab.config import ConfigError, load_config

    try:
        config_cls, train = args.trainer.load()
    except ModuleNotFoundError as e:
        raise ConfigError(f"trainer {args.stage!r} is not available in this postlab build ({e})") from None
    if getattr(args, "config_help", False):
        from postlab.confighelp import config_help

        print(config_help(config_cls), end="")
        return 0
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no YAML file: the first argument is an override
        config, overrides = None, [config, *overrides]
    if args.resume:  # the run's own resolved config, then any overrides
        from pathlib import Path

        if not (Path(args.resume) / "config.yaml").exists():
            raise ConfigError(f"--resume {args.resume}: no run there (no config.yaml); give the run directory of the "
                              "run to continue, or drop --resume to start a new run")
        config = config or str(Path(args.resume) / "config.yaml")
    cfg = load_config(config_cls, config, overrides)
    train(cfg, resume=args.resume)
    return 0
