"""The spectrum's arms as study stages with real (nano) trainers: one warm-up, then GRPO, LUFFY, CHORD,
UFT and on-policy distillation (reverse KL, GKD) from it (the teacher a second SFT stage, `after: [warmup, teacher]`),
each evaluated: what `postlab study spectrum` runs, at one step each."""

import pytest

from postlab.config import ConfigError
from postlab.studies import StudyRunner, resolve

RUN = {"tensorboard": False, "progress": False, "device": "cpu"}
RL = {"batch": {"prompts_per_step": 2, "samples_per_prompt": 4, "micro_batch_sequences": 4},
      "sampling": {"max_new_tokens": 4}, "run": {**RUN, "max_steps": 1}}
SFT = {"run": {**RUN, "max_steps": 2}, "batch": {"sequences_per_step": 8, "micro_batch_sequences": 8}}
STUDY = {
    "name": "spectrum-mini", "env": "math",
    "defaults": {"*": {"split": "id", "max_turns": 1}},
    "stages": {
        "base": {"kind": "pretrain", "data": {"n": 32}, "config": {"model": {"preset": "nano"}, **SFT}},
        "warmup": {"kind": "sft", "after": "base", "data": {"n": 16}, "config": SFT},
        "teacher": {"kind": "sft", "after": "base", "data": {"n": 32}, "config": {**SFT, "run": {**RUN, "max_steps": 4}}},
        "grpo": {"kind": "rl", "after": "warmup", "config": RL},
        "luffy": {"kind": "rl", "after": "warmup", "config": {**RL, "algorithm": "luffy"}},
        "chord": {"kind": "rl", "after": "warmup", "config": {**RL, "algorithm": "chord", "chord": {"decay": 2}}},
        "uft": {"kind": "rl", "after": "warmup", "config": {**RL, "algorithm": "uft", "uft": {"hint_steps": 2}}},
        "opd": {"kind": "rl", "after": ["warmup", "teacher"], "config": {**RL, "algorithm": "opd"}},
        "gkd": {"kind": "rl", "after": ["warmup", "teacher"], "config": {**RL, "algorithm": "gkd"}},
        **{f"eval-{a}": {"kind": "eval", "after": a, "splits": ["id"], "eval": {"n_episodes": 2, "max_new_tokens": 4},
                         "drift": {"n_problems": 2, "samples": 1}}
           for a in ("grpo", "luffy", "chord", "uft", "opd", "gkd")},
    },
}


def test_every_arm_runs_as_a_stage(tmp_path):
    import json

    runner = StudyRunner(resolve(STUDY), tmp_path)
    res = runner.run()[0]
    dirs = runner.plan()[0]
    for arm in ("grpo", "luffy", "chord", "uft", "opd", "gkd"):
        assert res[arm]["steps"] == 1 and res[f"eval-{arm}"]["points"]
    for arm in ("opd", "gkd"):  # the teacher is the second input's checkpoint
        assert "teacher: " + str(dirs["teacher"]) in (dirs[arm] / "run" / "config.yaml").read_text()
    rows = [json.loads(x) for x in open(dirs["luffy"] / "run" / "metrics.jsonl")]
    assert any("expert_success" in r for r in rows)


@pytest.mark.parametrize("after", [["warmup", "probe", "teacher"], ["warmup", "teacher", "teacher"],
                                   ["probe", "warmup"]])
def test_an_rl_stage_with_misordered_inputs_fails_before_anything_runs(tmp_path, after):
    import copy

    study = copy.deepcopy(STUDY)
    study["stages"]["probe"] = {"kind": "rl-probe", "after": "warmup", "config": RL,
                                "probe": {"steps": 2, "grid": {"optim.lr": [1.0e-3]}}}
    study["stages"]["gkd"]["after"] = after
    runner = StudyRunner(resolve(study), tmp_path)
    with pytest.raises(ConfigError, match=r"gkd.after: an rl stage takes \[START\], \[START, PROBE\]"):
        runner.run()
    assert not runner.calls


def test_an_opd_stage_without_a_teacher_fails_before_anything_runs(tmp_path):
    import copy

    study = copy.deepcopy(STUDY)
    study["stages"]["gkd"]["after"] = "warmup"
    runner = StudyRunner(resolve(study), tmp_path)
    with pytest.raises(ConfigError, match=r"gkd.after: a gkd stage distills from a teacher"):
        runner.run()
    assert not runner.calls
