"""`postlab train {sft,rl,...} CONFIG [key=value ...] [--resume RUN_DIR]`."""

from __future__ import annotations

import importlib

# stage name -> (module, config class, entry function)
TRAINERS = {
    "sft": ("postlab.trainers.sft", "SFTConfig", "train_sft"),
    "rl": ("postlab.trainers.rl", "RLConfig", "train_rl"),
    "rasft": ("postlab.trainers.rasft", "RASFTConfig", "train_rasft"),
    "rft": ("postlab.trainers.rft", "RFTConfig", "train_rft"),
    "drift": ("postlab.trainers.drift", "DRIFTConfig", "train_drift"),
}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (sft, rl, rasft, rft, drift)", description="Train a model with one "
                       "stage's config (YAML) and dotted overrides, e.g. `postlab train sft cfg.yaml optim.lr=3e-4`.")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage, (module, cls, fn) in TRAINERS.items():
        sp = stages.add_parser(stage, help=f"{stage} trainer", description=f"Train with the {stage} trainer.")
        sp.add_argument("config", nargs="?", help="YAML config file (optional: defaults + overrides)")
        sp.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 run.max_steps=100")
        sp.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its latest checkpoint")
        sp.add_argument("--config-help", action="store_true",
                        help=f"print every config key of the {stage} trainer with its default, valid values and meaning "
                             "(read from the config classes), and exit")
        sp.set_defaults(func=_run, trainer=(module, cls, fn))


def _run(args) -> int:
    from postlab.config import ConfigError, load_config

    module_name, cls_name, fn_name = args.trainer
    if getattr(args, "config_help", False):
        from postlab.confighelp import config_help

        print(config_help(getattr(importlib.import_module(module_name), cls_name)), end="")
        return 0
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no YAML file: the first argument is an override
        config, overrides = None, [config, *overrides]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise ConfigError(f"trainer {args.stage!r} is not available in this postlab build") from None
    if args.resume:  # the run's own resolved config, then any overrides
        from pathlib import Path

        if not (Path(args.resume) / "config.yaml").exists():
            raise ConfigError(f"--resume {args.resume}: no run there (no config.yaml); give the run directory of the "
                              "run to continue, or drop --resume to start a new run")
        config = config or str(Path(args.resume) / "config.yaml")
    cfg = load_config(getattr(module, cls_name), config, overrides)
    getattr(module, fn_name)(cfg, resume=args.resume)
    return 0
