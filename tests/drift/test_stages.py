"""`rollout` and `drift` study stages with real (nano) trainers: pretrain -> rollout -> drift -> eval."""

import copy

import pytest

from postlab.config import ConfigError
from postlab.data.trajectories import read_trajectories
from postlab.studies import StudyRunner, resolve
from postlab.studies.report_data import load_run, values

RUN = {"tensorboard": False, "progress": False, "device": "cpu"}
STUDY = {
    "name": "drift-mini", "env": "unary-feedback",
    "defaults": {"*": {"split": "id", "env_args": {"env": "math", "max_attempts": 2}, "max_turns": 4}},
    "stages": {
        "base": {"kind": "pretrain", "data": {"n": 64},
                 "config": {"model": {"preset": "nano"}, "run": {**RUN, "max_steps": 2},
                            "batch": {"sequences_per_step": 8, "micro_batch_sequences": 8}}},
        "rollout": {"kind": "rollout", "after": "base",
                    "config": {"n_prompts": 3, "samples_per_prompt": 2, "max_new_tokens": 6, "batch_size": 4,
                               "device": "cpu", "progress": False}},
        "drift": {"kind": "drift", "after": ["base", "rollout"],
                  "config": {"run": RUN, "batch": {"sequences_per_step": 4, "micro_batch_sequences": 2}}},
        "eval": {"kind": "eval", "after": "drift", "splits": ["id"], "eval": {"n_episodes": 2, "max_new_tokens": 6}},
    },
    "report": {"tables": [{"title": "t", "rows": {"DRIFT": "eval"}, "splits": {"multi@2": "id:multi@2"}}]},
}


def test_rollout_then_drift_stages(tmp_path):
    runner = StudyRunner(resolve(STUDY), tmp_path)
    res = runner.run()[0]
    roll, drift = res["rollout"], res["drift"]
    dataset = runner.plan()[0]["rollout"] / roll["dataset"]
    trajs = read_trajectories(dataset)
    assert roll["trajectories"] == len(trajs) == 6 and roll["prompts"] == 3
    assert roll["compute"]["tokens_generated"] == sum(t["generated_tokens"] for t in trajs) > 0
    assert roll["compute"]["tokens_trained"] == 0 and roll["compute"]["flops"] > 0
    assert {t["env"]["name"] for t in trajs} == {"unary-feedback(math)"}
    assert drift["dataset"] == str(dataset) and drift["steps"] == 2  # 6 records, batch 4, 1 epoch
    assert drift["compute"]["tokens_trained"] > 0 and drift["compute"]["tokens_generated"] == 0
    ev = res["eval"]["points"][-1]["results"]["id"]
    assert ev["multiturn"]["k_max"] == 2
    assert values(load_run(runner.root), "eval", "id:multi@2") == [ev["multiturn"]["multi@2"]["mean"]]


@pytest.mark.parametrize("change, words", [
    (lambda s: s["stages"]["drift"].update(after=["base"]), ["drift.after", "[REFERENCE, ROLLOUT]"]),
    (lambda s: s["stages"].update(other={"kind": "sft", "after": "base", "data": {"n": 4}, "config": {"run": RUN}})
     or s["stages"]["drift"].update(after=["other", "rollout"]), ["drift.after", "sampled from", "'other'"]),
    # the rollout stage plays the env the other stages play: 1 turn cannot hold 2 attempts
    (lambda s: s["stages"]["rollout"].update(max_turns=1), ["rollout", "max_turns (1) must be >= max_attempts (2)"]),
    (lambda s: s["stages"]["rollout"]["config"].update(out="x.jsonl"), ["rollout.config", "out"]),
    (lambda s: s["stages"]["drift"]["config"].update(weights={"bta": 1}), ["drift", "weights.bta", "beta"]),
])
def test_stage_misconfigurations_fail_before_anything_runs(tmp_path, change, words):
    study = copy.deepcopy(STUDY)
    change(study)
    runner = StudyRunner(resolve(study), tmp_path)
    with pytest.raises(ConfigError) as e:
        runner.run()
    for w in words:
        assert w in str(e.value)
    assert not runner.calls
