"""Issue 27's report tools: success on the problems a reference never solved (pass@N = 0), and the
gain-against-forgetting scatter (one point per method and seed), on hand-made evaluation results."""

import json

import pytest

from postlab.config import ConfigError
from postlab.studies.report_data import load_run, mark_unsolved, scatter_points, split_metric
from postlab.studies.report_schema import check_report_references
from postlab.studies.report_stats import findings


def _sampled(per_problem, n=4):
    return {"decoding": "sampled", "n_samples": n, "success_rate": sum(per_problem) / len(per_problem),
            "per_problem": per_problem}


def _greedy(per_problem):
    return {"decoding": "greedy", "n_samples": 1, "success_rate": sum(per_problem) / len(per_problem),
            "per_problem": per_problem}


def _eval(id_sampled, id_greedy, kl=0.0):
    return {"points": [{"step": 1, "flops": 1.0, "drift": {"kl": kl, "kl_per_problem": None},
                        "results": {"id@sampled": _sampled(id_sampled), "id": _greedy(id_greedy)}}]}


# The warm-up solves problems 0 and 2 in some of its 4 samples, never 1, 3 and 4 (pass@4 = 0 there).
WARM = _eval([0.5, 0.0, 0.25, 0.0, 0.0], [1, 0, 0, 0, 0])
LUFFY = _eval([0.75, 0.5, 0.25, 0.25, 0.0], [1, 1, 0, 0, 0], kl=0.4)
GRPO = _eval([1.0, 0.0, 0.75, 0.0, 0.0], [1, 0, 1, 0, 0], kl=0.2)


def _run(seeds=2):
    results = {str(s): {"eval-warm": json.loads(json.dumps(WARM)), "eval-luffy": json.loads(json.dumps(LUFFY)),
                        "eval-grpo": json.loads(json.dumps(GRPO))} for s in range(seeds)}
    return {"study": {"report": {}}, "results": results, "stages": ["eval-warm", "eval-luffy", "eval-grpo"]}


def test_unsolved_reads_only_the_problems_the_reference_never_solved():
    run = _run()
    mark_unsolved(run, "eval-warm")
    luffy = run["results"]["0"]["eval-luffy"]["points"][0]["results"]
    # problems 1, 3, 4: sampled 0.5, 0.25, 0.0 -> mean 0.25; greedy 1, 0, 0 -> 1/3
    assert split_metric(luffy, "id@sampled:unsolved") == (pytest.approx(0.25), [0.5, 0.25, 0.0])
    assert split_metric(luffy, "id:unsolved") == (pytest.approx(1 / 3), [1, 0, 0])
    assert split_metric(luffy, "id:unsolved_share")[0] == pytest.approx(3 / 5)
    warm = run["results"]["0"]["eval-warm"]["points"][0]["results"]
    assert split_metric(warm, "id@sampled:unsolved") == (0.0, [0.0, 0.0, 0.0])  # by construction
    # without the mark (no report.unsolved_by) the subset reads nothing rather than everything
    assert split_metric(_run()["results"]["0"]["eval-luffy"]["points"][0]["results"], "id:unsolved") == (None, None)


def test_a_paired_finding_on_the_unsolved_problems():
    """LUFFY - GRPO on the warm-up's unsolved problems: (0.5 - 0) + (0.25 - 0) + (0 - 0) over 3 = +0.25 per seed,
    where on all five problems the two are equal (0.35 each): the subset is what separates them."""
    run = _run()
    run["study"]["report"] = {"unsolved_by": "eval-warm", "findings": [
        {"claim": "hard", "metric": {"diff": [["eval-luffy", "id@sampled:unsolved"], ["eval-grpo", "id@sampled:unsolved"]]},
         "expect": "positive"},
        {"claim": "all", "metric": {"diff": [["eval-luffy", "id@sampled"], ["eval-grpo", "id@sampled"]]},
         "expect": "positive"}]}
    mark_unsolved(run, "eval-warm")
    by = {f["claim"]: f for f in findings(run)}
    assert by["hard"]["mean"] == pytest.approx(0.25) and by["all"]["mean"] == pytest.approx(0.0)
    assert by["hard"]["seeds"] == 2 and by["hard"]["measured"] == "+25.0 ± 0.0%"


def test_a_finding_on_drift_reads_in_its_own_units():
    """A KL or NLL difference is not a success rate: no percent, 3 significant digits, the CI likewise."""
    from postlab.studies.report import _findings_table

    run = _run()
    run["study"]["report"] = {"findings": [{"claim": "kl", "metric": {"diff": [["eval-luffy", "drift:kl"],
                                                                              ["eval-grpo", "drift:kl"]]}}]}
    [f] = findings(run)
    assert f["percent"] is False and f["measured"] == "+0.2 ± 0" and f["mean"] == pytest.approx(0.2)
    assert _findings_table([{**f, "ci": (0.1234, 0.2345)}])["rows"][0][3] == "[+0.123, +0.234]"


def test_load_run_marks_the_unsolved_problems_the_report_names(tmp_path):
    run = _run(seeds=1)
    dirs = {"0": {}}
    for stage, res in run["results"]["0"].items():
        d = tmp_path / "seed_0" / stage
        d.mkdir(parents=True)
        (d / "DONE").write_text("")
        (d / "result.json").write_text(json.dumps(res))
        dirs["0"][stage] = f"seed_0/{stage}"
    (tmp_path / "study.json").write_text(json.dumps({"study": {"report": {"unsolved_by": "eval-warm"}}, "dirs": dirs}))
    loaded = load_run(tmp_path)
    grpo = loaded["results"]["0"]["eval-grpo"]["points"][0]["results"]
    assert split_metric(grpo, "id@sampled:unsolved")[1] == [0.0, 0.0, 0.0]


def test_scatter_points_are_one_per_method_and_seed_with_changes_from_the_reference():
    run = _run(seeds=3)
    run["results"]["2"].pop("eval-grpo")  # a seed that did not run GRPO has no point for it
    spec = {"points": {"LUFFY": "eval-luffy", "GRPO": "eval-grpo"}, "x": "drift:kl",
            "y": {"split": "id@sampled", "change_from": "eval-warm"}}
    pts = scatter_points(run, spec)
    assert pts["LUFFY"] == [(pytest.approx(0.4), pytest.approx(0.35 - 0.15))] * 3
    assert pts["GRPO"] == [(pytest.approx(0.2), pytest.approx(0.35 - 0.15))] * 2
    # a pair of stages: x from the first (here the change on another evaluation), y from the second
    paired = {**spec, "points": {"LUFFY": ["eval-grpo", "eval-luffy"]},
              "x": {"split": "id", "change_from": "eval-warm"}}
    assert scatter_points(run, paired)["LUFFY"] == [(pytest.approx(0.4 - 0.2), pytest.approx(0.35 - 0.15))] * 2


def test_scatter_figure_and_its_table(tmp_path):
    from postlab.studies.report_plots import plot_scatter
    from postlab.studies.report_tables import scatter_tables

    run = _run()
    run["study"]["report"] = {"scatter": [{"title": "gain vs drift", "points": {"LUFFY": "eval-luffy", "GRPO": "eval-grpo",
                                                                                "UFT": "eval-uft"},
                                           "x": {"split": "drift:kl", "label": "KL to the warm-up"},
                                           "y": {"split": "id@sampled", "change_from": "eval-warm"}}]}
    [fig] = plot_scatter(run)
    assert fig["png"][:8] == b"\x89PNG\r\n\x1a\n" and "UFT (eval-uft)" in fig["notes"][0]
    [table] = scatter_tables(run)
    assert table["header"] == ["", "KL to the warm-up", "change in id@sampled from eval-warm", "seeds"]
    assert table["rows"] == [["LUFFY", "0.4 ± 0", "+20.0 ± 0.0%", 2], ["GRPO", "0.2 ± 0", "+20.0 ± 0.0%", 2]]


def test_report_checks_name_the_mistake():
    def study(report):
        return {"name": "s", "env": "toy", "stages": {"base": {"kind": "pretrain"},
                                                      "ev": {"kind": "eval", "after": "base"}}, "report": report}

    check_report_references(study({"unsolved_by": "ev", "tables": [{"rows": {"x": "ev"}, "splits": {"h": "id:unsolved"}}],
                                   "scatter": [{"points": {"x": "ev"}, "x": "drift:kl",
                                                "y": {"split": "id@sampled", "change_from": "ev"}}]}), {}, "s")
    for report, words in (
            ({"tables": [{"rows": {"x": "ev"}, "splits": {"h": "id@sampled:unsolved"}}]}, "name that stage in report.unsolved_by"),
            ({"unsolved_by": "evv"}, "report.unsolved_by: unknown stage 'evv'"),
            ({"unsolved_by": ["ev"]}, "report.unsolved_by must be the name of an eval stage"),
            ({"scatter": [{"points": {"x": "ev"}, "x": "drift:kl"}]}, "y must be a split reference"),
            ({"scatter": [{"points": {"x": "ev"}, "x": "drift:kl", "y": {"split": "id", "minus": "ev"}}]},
             r"y.minus: unknown key"),
            ({"scatter": [{"points": {"x": "evx"}, "x": "drift:kl", "y": "id"}]}, "unknown stage 'evx'"),
            ({"scatter": [{"points": {"x": ["ev", "evy"]}, "x": "drift:kl", "y": "id"}]}, "unknown stage 'evy'"),
            ({"scatter": [{"points": {"x": ["ev"]}, "x": "drift:kl", "y": "id"}]}, r"\[X_STAGE, Y_STAGE\]")):
        with pytest.raises(ConfigError, match=words):
            check_report_references(study(report), {}, "s")


def test_a_study_still_running_gets_its_paired_ci_from_the_seeds_that_ran():
    """Seed 1 has not evaluated the warm-up yet: the finding is measured on seed 0 alone, and so is its CI
    (before, one missing seed dropped the CI for all)."""
    run = _run()
    run["results"]["1"].pop("eval-warm")
    run["study"]["report"] = {"findings": [{"claim": "x", "metric": {"diff": [["eval-luffy", "id"], ["eval-warm", "id"]]}}]}
    [f] = findings(run)
    assert f["seeds"] == 1 and f["mean"] == pytest.approx(0.4 - 0.2) and f["ci"] is not None
    run["results"]["1"]["eval-warm"] = _eval([0.0] * 4, [1, 0, 0, 0])  # another problem set: no paired CI at all
    assert findings(run)[0]["ci"] is None
