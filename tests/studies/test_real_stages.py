"""pretrain -> sft -> eval with real (nano) trainers on a toy env: plumbing, compute, resume."""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))

import toy_env  # noqa: E402,F401 - registers toy-copy

from postlab.studies import StudyRunner, resolve  # noqa: E402

RUN = {"tensorboard": False, "progress": False, "device": "cpu"}
STUDY = {
    "name": "real", "env": "toy-copy",
    "defaults": {"*": {"config": {"run": RUN, "batch": {"sequences_per_step": 8, "micro_batch_sequences": 8},
                                  "eval": {"max_examples": 4}}}},
    "stages": {
        "base": {"kind": "pretrain", "data": {"n": 64},
                 "config": {"model": {"preset": "nano"}, "run": {"max_steps": 4}}},
        "warm": {"kind": "sft", "after": "base", "data": {"n": 32}, "config": {"run": {"max_steps": 4, "save_every": 2}}},
        "eval-warm": {"kind": "eval", "after": "warm", "splits": ["id", "ood"], "points": "all",
                      "eval": {"n_episodes": 4, "max_new_tokens": 4}},
    },
    "report": {"tables": [{"title": "final", "rows": {"warm-up": "eval-warm"}, "splits": {"ID": "id", "OOD": "ood"}}]},
}


def test_pretrain_sft_eval_and_trainer_resume(tmp_path):
    runner = StudyRunner(resolve(STUDY), tmp_path)
    res = runner.run()[0]
    base, warm, ev = res["base"], res["warm"], res["eval-warm"]
    assert base["compute"]["tokens_trained"] > 0 and base["compute"]["params"] > 1000
    assert warm["compute"]["flops"] == 6 * warm["compute"]["params"] * warm["compute"]["tokens_trained"]
    assert [p["step"] for p in warm["checkpoints"]] == [2, 4]
    assert [p["step"] for p in ev["points"]] == [2, 4]  # points: all
    assert ev["points"][0]["flops"] < ev["points"][1]["flops"] == warm["compute"]["flops"]
    assert set(ev["success"]) == {"id", "ood"} and ev["compute"]["tokens_generated"] > 0
    # simulate a kill of the sft stage after its step-2 checkpoint: it resumes from it
    wdir = runner.plan()[0]["warm"]
    for name in ("DONE", "result.json"):
        (wdir / name).unlink()
    shutil.rmtree(wdir / "run" / "final")
    shutil.rmtree(wdir / "run" / "checkpoints" / "step_000004")
    r2 = StudyRunner(resolve(STUDY), tmp_path)
    res2 = r2.run()[0]
    assert r2.calls == [(0, "warm")]  # eval-warm's hash is unchanged: its cached result stands
    assert res2["warm"]["compute"]["resumed"] is True
    assert res2["warm"]["compute"]["tokens_trained"] == warm["compute"]["tokens_trained"]  # bit-identical data order
    metrics = [json.loads(x) for x in (wdir / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [1, 2, 3, 4]


def test_an_interrupted_eval_stage_resumes_at_its_first_unfinished_point(tmp_path, monkeypatch):
    """Killed while measuring its second point, the eval stage reruns that point only: the first one's
    results (the final checkpoint's, measured first) are read back, the same numbers, not measured again."""
    import functools
    import importlib

    import pytest

    evaluation = importlib.import_module("postlab.eval.evaluate")  # the module (the package exports the function)
    runner = StudyRunner(resolve(STUDY), tmp_path)
    full = runner.run()[0]["eval-warm"]
    edir = runner.plan()[0]["eval-warm"]
    for name in ("DONE", "result.json"):
        (edir / name).unlink()
    (edir / "points" / "step_2.json").unlink()  # the final point (4) is measured first: killed during step 2
    real, calls = evaluation.evaluate, []

    @functools.wraps(real)  # the stage validates its options against evaluate's signature
    def counted(model, tok, env, split, **kw):
        calls.append(split)
        return real(model, tok, env, split, **kw)

    monkeypatch.setattr(evaluation, "evaluate", counted)
    again = StudyRunner(resolve(STUDY), tmp_path).run()[0]["eval-warm"]
    assert calls == ["id", "ood"]  # step 2's two splits; step 4 was read back
    def measured(points):  # what a rerun reproduces: everything but wall times
        return [{**p, "results": {s: {k: v for k, v in r.items() if k != "wall_time_s"}
                                  for s, r in p["results"].items()}} for p in json.loads(json.dumps(points))]

    assert measured(again["points"]) == measured(full["points"])
    kept = json.loads((edir / "points" / "step_4.json").read_text())["point"]
    assert again["points"][1]["results"]["id"]["wall_time_s"] == kept["results"]["id"]["wall_time_s"]  # read back
    assert again["compute"]["tokens_generated"] == pytest.approx(full["compute"]["tokens_generated"])


def test_an_eval_point_file_that_does_not_read_is_measured_again(tmp_path):
    runner = StudyRunner(resolve(STUDY), tmp_path)
    full = runner.run()[0]["eval-warm"]
    edir = runner.plan()[0]["eval-warm"]
    for name in ("DONE", "result.json"):
        (edir / name).unlink()
    (edir / "points" / "step_2.json").write_text('{"point": ')  # damaged by hand
    again = StudyRunner(resolve(STUDY), tmp_path).run()[0]["eval-warm"]
    assert [p["step"] for p in again["points"]] == [2, 4]
    assert again["points"][0]["results"]["id"]["per_problem"] == full["points"][0]["results"]["id"]["per_problem"]
    assert json.loads((edir / "points" / "step_2.json").read_text())["point"]["step"] == 2  # rewritten
