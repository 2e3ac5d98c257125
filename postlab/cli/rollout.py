"""`postlab rollout CONFIG [key=value ...]`: sample an offline trajectory dataset (DRIFT's data).

    postlab rollout model=runs/sft/final out=data/drift.jsonl n_prompts=512
    postlab rollout configs/drift_rollout.yaml samples_per_prompt=8

Rerunning the same command on an existing output resumes it (see postlab.rollout.offline).
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("rollout", help="sample trajectories once from a fixed reference checkpoint (DRIFT data)",
                       description="Sample samples_per_prompt trajectories per prompt from the reference checkpoint "
                       "`model` and append them to the JSONL file `out`; rerun the same command to resume.")
    p.add_argument("config", nargs="?", help="YAML config file (optional: defaults + overrides)")
    p.add_argument("overrides", nargs="*", help="overrides, e.g. model=runs/sft/final n_prompts=256 out=d.jsonl")
    p.add_argument("--config-help", action="store_true", help="print every config key with its default, valid values "
                   "and meaning (read from RolloutJobConfig), and exit")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from postlab.config import load_config
    from postlab.rollout.offline import RolloutJobConfig, run_rollout_job

    if args.config_help:
        from postlab.confighelp import config_help

        print(config_help(RolloutJobConfig), end="")
        return 0
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # no YAML file: the first argument is an override
        config, overrides = None, [config, *overrides]
    cfg = load_config(RolloutJobConfig, config, overrides)
    try:
        run_rollout_job(cfg)
    except KeyboardInterrupt:  # every finished chunk is on disk; the job knows where to continue
        print(f"postlab: interrupted; rerun the same command to resume {cfg.out}", file=sys.stderr)
        return 130
    return 0
