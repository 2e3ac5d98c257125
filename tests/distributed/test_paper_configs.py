"""Every configs/paper/*.yaml loads with its trainer's config class (no model load, no download),
and names envs and splits that exist."""

from pathlib import Path

import pytest

from postlab.config import load_config, read_yaml

PAPER = sorted((Path(__file__).resolve().parents[2] / "configs" / "paper").glob("*.yaml"))


def _config_class(path: Path):
    from postlab.rollout.offline import RolloutJobConfig
    from postlab.trainers.drift import DRIFTConfig
    from postlab.trainers.rasft import RASFTConfig
    from postlab.trainers.rl import RLConfig
    from postlab.trainers.sft import SFTConfig

    data = read_yaml(path)
    if "algorithm" in data:
        return RLConfig
    if "routing" in data:
        return RASFTConfig
    if "weights" in data:
        return DRIFTConfig
    if "samples_per_prompt" in data:
        return RolloutJobConfig
    return SFTConfig


def test_there_are_paper_configs():
    assert len(PAPER) >= 7  # every seed paper: Chu (SFT, PPO), Cheng, Miao, Mu (rollout, DRIFT), Liu


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_config_loads(path):
    cls = _config_class(path)
    cfg = load_config(cls, path)
    if cls.__name__ == "RolloutJobConfig":  # a one-process job: its model is a path string
        assert cfg.model and cfg.dtype == "bfloat16"
        return
    assert cfg.model.path is not None and cfg.model.dtype == "bfloat16"
    if hasattr(cfg, "env") and hasattr(cfg.env, "eval_splits") and hasattr(cfg, "algorithm"):
        from postlab.trainers.rl import validate_env

        if cfg.env.name != "math-jsonl":  # its prompts file is the user's local data, not shipped
            validate_env(cfg.env)
        assert cfg.batch.prompts_per_step % 8 == 0  # the torchrun command in docs/scale.md uses 8 processes
