"""Every shipped study, under every preset, validates: every stage's trainer config, environment,
splits and `data:` / `eval:` keys, before anything runs.

A study runs for tens of minutes before it reaches its later stages; a config that a trainer
rejects (the tiny preset's navigation RL once asked for micro-batches larger than its batch)
must fail here, in a second, not 17 minutes into a run."""

from pathlib import Path

import pytest

from postlab.config import ConfigError
from postlab.studies.runner import StudyRunner
from postlab.studies.spec import load_study, resolve

STUDIES = sorted(Path(__file__).resolve().parents[2].glob("configs/studies/*.yaml"))


def _presets(path: Path) -> list:
    import yaml

    return [None] + list((yaml.safe_load(path.read_text()).get("presets") or {}))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_preset_validates(path, tmp_path):
    for preset in _presets(path):
        study = load_study(str(path), preset=preset)
        StudyRunner(study, out=tmp_path).validate()


def _study(**stage_fields) -> dict:
    base = {"kind": "pretrain", "data": {"n": 10}, "config": {"model": {"preset": "nano"}, "run": {"max_steps": 1}}}
    later = {"kind": "sft", "after": "base", "split": "id", "data": {"n": 10}, "config": {"run": {"max_steps": 1}}}
    later.update(stage_fields)
    return {"name": "t", "env": "toy", "stages": {"base": base, "late": later}}


@pytest.mark.parametrize("fields, words", [
    ({"data": {"n": 10, "base_mixx": 0.3}}, ["late.data.base_mixx", "base_mix"]),
    ({"split": "od"}, ["late", "unknown split 'od'"]),
    ({"config": {"optim": {"lrr": 1e-3}}}, ["late", "optim.lrr"]),
    ({"kind": "eval", "eval": {"n_episode": 4}}, ["late.eval.n_episode", "n_episodes"]),
    ({"kind": "rl", "config": {"env": {"eval_splits": ["nope"]}}}, ["late", "eval_splits", "nope"]),
])
def test_a_typo_in_a_late_stage_fails_before_the_first_stage_runs(fields, words, tmp_path):
    runner = StudyRunner(resolve(_study(**fields)), out=tmp_path)
    with pytest.raises(ConfigError) as e:
        runner.run()
    for w in words:
        assert w in str(e.value)
    assert not runner.calls  # nothing ran
