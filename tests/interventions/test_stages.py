"""The `diagnose` and `rejuvenate` study stage kinds, end to end with real (nano) trainers:
pretrain -> sft -> rejuvenate -> rl and sft -> diagnose through StudyRunner, on the toy-copy env."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))

import toy_env  # noqa: E402,F401 - registers toy-copy

from postlab.config import ConfigError  # noqa: E402
from postlab.studies import StudyRunner, resolve  # noqa: E402
from postlab.studies.report import build_report  # noqa: E402
from postlab.studies.report_data import load_run  # noqa: E402
from postlab.studies.report_tables import diagnostics_tables  # noqa: E402
from postlab.studies.stages_interventions import DIAGNOSTIC_SUMMARY_KEYS  # noqa: E402

RUN = {"tensorboard": False, "progress": False, "device": "cpu"}


def study(**rejuvenate_config) -> dict:
    return {
        "name": "interventions", "env": "toy-copy",
        "defaults": {"pretrain": {"config": {"run": RUN, "batch": {"sequences_per_step": 8, "micro_batch_sequences": 8}}},
                     "sft": {"config": {"run": RUN, "batch": {"sequences_per_step": 8, "micro_batch_sequences": 8}}},
                     "rl": {"config": {"run": RUN}}, "diagnose": {"config": {"device": "cpu"}},
                     "rejuvenate": {"config": {"device": "cpu"}}},
        "stages": {
            "base": {"kind": "pretrain", "data": {"n": 64},
                     "config": {"model": {"preset": "nano"}, "run": {"max_steps": 3}}},
            "sft": {"kind": "sft", "after": "base", "data": {"n": 32}, "config": {"run": {"max_steps": 4}}},
            "diag": {"kind": "diagnose", "after": ["sft", "base"], "splits": ["id", "ood"],
                     "config": {"n": 4, "hessian_iters": 2, "perturb_samples": 2, "plots": False}},
            "rejuv": {"kind": "rejuvenate", "after": ["sft", "base"],
                      "config": {"n": 4, "top_positions": 4, "fraction": 0.05, **rejuvenate_config}},
            "rl": {"kind": "rl", "after": "rejuv",
                   "config": {"algorithm": "grpo", "sampling": {"max_new_tokens": 4},
                              "batch": {"prompts_per_step": 2, "samples_per_prompt": 2, "micro_batch_sequences": 4},
                              "run": {"max_steps": 2}}},
            # the diagnose stage passes its checkpoint through: an eval can follow it
            "eval-diag": {"kind": "eval", "after": "diag", "splits": ["id"], "eval": {"n_episodes": 2, "max_new_tokens": 4}},
        },
        "report": {"diagnostics": [{"title": "diagnostics", "rows": {"base": "diag:base", "SFT": "diag"},
                                    "columns": {"entropy (ID)": "id:entropy_mean", "drift": "drift"}}]},
    }


def test_diagnose_and_rejuvenate_stages_run_end_to_end(tmp_path):
    runner = StudyRunner(resolve(study()), tmp_path)
    res = runner.run()[0]
    dirs = runner.plan()[0]

    diag = res["diag"]
    assert (dirs["diag"] / diag["checkpoint"]).resolve() == (dirs["sft"] / "run" / "final").resolve()
    summary = diag["diagnostics"]
    assert summary["drift"] > 0 and summary["splits"] == ["id", "ood"]
    for split in ("id", "ood"):
        assert set(summary["per_split"][split]) == {*DIAGNOSTIC_SUMMARY_KEYS, "entropy_gap_mean"}
        assert summary["per_split"][split]["hessian_top_eigenvalue"] is not None
        assert summary["base"][split]["entropy_gap_mean"] == 0.0
    full = json.loads((dirs["diag"] / "diagnostics.json").read_text())
    assert full["per_split"]["id"]["checkpoint"]["entropy_mean"] == summary["per_split"]["id"]["entropy_mean"]
    assert diag["compute"]["tokens_trained"] == 0 and diag["compute"]["params"] > 1000
    assert res["eval-diag"]["success"].keys() == {"id"}

    rejuv = res["rejuv"]
    model = dirs["rejuv"] / rejuv["checkpoint"]
    assert (model / "config.json").exists() and (model / "rejuvenation_report.json").exists()
    assert rejuv["rejuvenation"]["reset_units"] > 0
    assert set(rejuv["rejuvenation"]["entropy"]) == {"base", "sft", "fused", "rejuvenated"}
    assert rejuv["compute"]["tokens_trained"] == 0 and rejuv["compute"]["params"] == res["sft"]["compute"]["params"]
    report = json.loads((model / "rejuvenation_report.json").read_text())
    assert report["config"]["calibration_seed"] == 0 and report["config"]["fraction"] == 0.05

    rl = res["rl"]  # RL started from the rejuvenated model
    assert rl["steps"] == 2 and rl["compute"]["tokens_generated"] > 0
    rl_config = (dirs["rl"] / "run" / "config.yaml").read_text()
    assert str(model) in rl_config

    # the report's diagnostics table: rows are diagnose stages (or their base), columns summary keys
    (table,) = diagnostics_tables(load_run(tmp_path / "interventions" / "default"))
    assert table["header"] == ["", "entropy (ID)", "drift"]
    assert table["rows"][0][0] == "base" and table["rows"][0][2] == "0"
    assert float(table["rows"][1][1]) == pytest.approx(summary["per_split"]["id"]["entropy_mean"], rel=1e-2)
    _, md = build_report(tmp_path / "interventions" / "default")
    assert "entropy (ID)" in md.read_text()


@pytest.mark.parametrize("config, words", [
    ({"fraction": 1.5}, ["stages.rejuv (rejuvenate)", "config.fraction", "[0, 1)"]),
    ({"alpah": 0.5}, ["rejuvenate", "unknown option 'alpah'", "alpha"]),
    ({"mode": "redo", "units": "slices"}, ["stages.rejuv", "config.units slices", "config.units neurons"]),
])
def test_validate_rejects_a_bad_rejuvenate_option_before_any_stage_runs(tmp_path, config, words):
    runner = StudyRunner(resolve(study(**config)), tmp_path)
    with pytest.raises(ConfigError) as e:
        runner.run()
    for w in words:
        assert w in str(e.value)
    assert not runner.calls  # nothing ran


@pytest.mark.parametrize("change, words", [
    ({"config": {"n": 0}}, ["stages.diag (diagnose)", "config.n must be >= 1"]),
    ({"config": {"hessian_iter": 2}}, ["stages.diag.config.hessian_iter", "hessian_iters"]),
    ({"after": "sft"}, ["stages.diag.after", "two inputs", "[MODEL, BASE]"]),
    ({"splits": ["id", "odd"]}, ["stages.diag", "odd"]),
])
def test_validate_rejects_a_bad_diagnose_stage(tmp_path, change, words):
    spec = study()
    spec["stages"]["diag"].update(change)
    runner = StudyRunner(resolve(spec), tmp_path)
    with pytest.raises(ConfigError) as e:
        runner.run()
    for w in words:
        assert w in str(e.value)
    assert not runner.calls


def test_report_rl_gain_columns_and_gain_difference_findings(tmp_path):
    """A delta column [stage, baseline] has its own baseline (each SFT amount's RL gain), and a
    `gain_diff` finding compares two gains with a paired CI over the shared problems."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "studies"))
    from postlab.studies.report_stats import findings
    from postlab.studies.report_tables import delta_tables

    def train(after, gain):
        return {"kind": "fake_stages:train", "after": after, "data": {"steps": 1, "gain": gain}}

    def evaluate(after):
        return {"kind": "fake_stages:evaluate", "after": after, "splits": ["id"], "data": {"problems": 50}}

    spec = {"name": "gains", "stages": {
        "base": train([], 0.0), "sft-1x": train("base", 0.2), "sft-16x": train("base", 0.6),
        "rl-1x": train("sft-1x", 0.3), "rl-16x": train("sft-16x", 0.1),
        **{f"eval-{s}": evaluate(s) for s in ("sft-1x", "sft-16x", "rl-1x", "rl-16x")}},
        "report": {"deltas": [{"title": "RL gain", "rows": {"ID": "id"},
                               "columns": {"1x": ["eval-rl-1x", "eval-sft-1x"], "16x": ["eval-rl-16x", "eval-sft-16x"],
                                           "absent": ["eval-rl-4x", "eval-sft-4x"]}}],
                   "findings": [{"claim": "gain falls", "expect": "negative",
                                 "metric": {"gain_diff": [["eval-rl-16x", "eval-sft-16x"], ["eval-rl-1x", "eval-sft-1x"]],
                                            "split": "id"}}]}}
    StudyRunner(resolve(spec), tmp_path).run()
    run = load_run(tmp_path / "gains" / "default")
    (table,) = delta_tables(run)
    assert table["header"] == ["", "1x", "16x"]  # a column whose stages this study lacks is left out
    assert table["rows"] == [["ID", "+30.0%", "+10.0%"]]
    (f,) = findings(run)
    assert f["mean"] == pytest.approx(-0.2) and f["reproduced"] == "yes"
    assert f["ci"][0] < -0.2 < f["ci"][1] < 0  # the paired bootstrap over the 50 shared problems
