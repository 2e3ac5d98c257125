"""Every configs/paper/*.yaml loads with its trainer's config class (no model load, no download),
and names envs and splits that exist."""

from pathlib import Path

import pytest

from postlab.config import load_config, read_yaml

PAPER = sorted((Path(__file__).resolve().parents[2] / "configs" / "paper").glob("*.yaml"))


def _config_class(path: Path):
    from postlab.trainers.rl import RLConfig
    from postlab.trainers.sft import SFTConfig

    return RLConfig if "algorithm" in read_yaml(path) else SFTConfig


def test_there_are_paper_configs():
    assert len(PAPER) >= 3


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_config_loads(path):
    cfg = load_config(_config_class(path), path)
    assert cfg.model.path is not None and cfg.model.dtype == "bfloat16"
    if hasattr(cfg, "env"):
        from postlab.trainers.rl import validate_env

        validate_env(cfg.env)
        assert cfg.batch.prompts_per_step % 8 == 0  # the torchrun command in docs/scale.md uses 8 processes
