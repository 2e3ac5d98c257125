"""Every shipped study, under every preset, builds valid trainer configs for all its stages.

A study runs for tens of minutes before it reaches its later stages; a config that a trainer
rejects (the tiny preset's navigation RL once asked for micro-batches larger than its batch)
must fail here, in a second, not 17 minutes into a run."""

from pathlib import Path

import pytest

from postlab.studies.kinds import _trainer_config
from postlab.studies.rl_adapter import rl_stage_config
from postlab.studies.spec import load_study
from postlab.trainers.sft import SFTConfig

STUDIES = sorted(Path(__file__).resolve().parents[2].glob("configs/studies/*.yaml"))


class _Ctx:
    """The parts of a StageContext that config building reads."""

    def __init__(self, stage, seed: int, tmp: Path):
        self.stage, self.spec, self.seed = stage, stage.spec, seed
        self.run_dir = tmp / stage.name / "run"

    def input_checkpoint(self, i: int = 0) -> Path:
        return Path("/nonexistent/checkpoint")


def _presets(path: Path) -> list:
    import yaml

    return [None] + list((yaml.safe_load(path.read_text()).get("presets") or {}))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_preset_builds_valid_trainer_configs(path, tmp_path):
    checked = 0
    for preset in _presets(path):
        study = load_study(str(path), preset=preset)
        for stage in study.stages.values():
            ctx = _Ctx(stage, study.seeds[0], tmp_path)
            if stage.kind == "rl":
                cfg = rl_stage_config(ctx)
                assert cfg.env.name == stage.spec["env"]
            elif stage.kind in ("sft", "pretrain"):
                _trainer_config(ctx, SFTConfig, None if stage.kind == "pretrain" else ctx.input_checkpoint())
            else:
                continue
            checked += 1
    assert checked >= 4
