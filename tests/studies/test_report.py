import base64
import json
import shutil
import subprocess

import pytest

from postlab.cli.main import main
from postlab.studies import StudyRunner, resolve
from postlab.studies.report import _metric, _verdict, build_report, findings, load_run

STUDY = {
    "name": "fixture", "description": "a small fixture study", "paper": "Chu et al. 2025",
    "stages": {
        "warm": {"kind": "fake_stages:train", "data": {"steps": 2, "gain": 0.4}},
        "sft": {"kind": "fake_stages:train", "after": "warm", "data": {"steps": 3, "gain": -0.1}},
        "rl": {"kind": "fake_stages:train", "after": "warm", "data": {"steps": 3, "gain": 0.2}},
        "eval-warm": {"kind": "fake_stages:evaluate", "after": "warm", "splits": ["id", "ood"],
                      "data": {"offsets": {"ood": -0.2}, "problems": 50}},
        "eval-sft": {"kind": "fake_stages:evaluate", "after": "sft", "splits": ["id", "ood"],
                     "data": {"offsets": {"ood": -0.2}, "problems": 50}},
        "eval-rl": {"kind": "fake_stages:evaluate", "after": "rl", "splits": ["id", "ood"],
                    "data": {"offsets": {"ood": -0.2}, "problems": 50}},
    },
    "report": {
        "tables": [{"title": "final success", "rows": {"warm-up": "eval-warm", "SFT": "eval-sft", "RL": "eval-rl"},
                    "splits": {"ID": "id", "OOD": "ood"}}],
        "deltas": [{"title": "OOD change from the warm-up", "baseline": "eval-warm",
                    "columns": {"RL": "eval-rl", "SFT": "eval-sft"}, "rows": {"toy OOD": "ood"}}],
        "curves": [{"title": "toy", "baseline": "eval-warm", "series": {"SFT": "eval-sft", "RL": "eval-rl"},
                    "splits": {"ID": "id", "OOD": "ood"}}],
        "findings": [
            {"claim": "RL raises OOD", "paper": "+3.5%", "metric": {"delta": ["eval-rl", "eval-warm"], "split": "ood"},
             "expect": "positive"},
            {"claim": "SFT lowers OOD", "paper": "-8.1%", "metric": {"delta": ["eval-sft", "eval-warm"], "split": "ood"},
             "expect": "negative"},
            {"claim": "SFT beats RL in distribution", "paper": "n/a",
             "metric": {"diff": [["eval-sft", "id"], ["eval-rl", "id"]]}, "expect": "positive"},
        ],
    },
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    runner = StudyRunner(resolve(STUDY, preset="tiny", seeds=2), out)
    runner.run()
    return runner.root


def test_report_builds(run_dir):
    run = load_run(run_dir)
    fs = {f["claim"]: f for f in findings(run)}
    assert fs["RL raises OOD"]["reproduced"] == "yes" and fs["RL raises OOD"]["seeds"] == 2
    assert fs["RL raises OOD"]["mean"] == pytest.approx(0.2)
    assert fs["SFT lowers OOD"]["reproduced"] == "yes"
    assert fs["SFT beats RL in distribution"]["reproduced"] == "no"
    # paired CI over 50 shared problems x 2 seeds: RL solves 10 more OOD problems per seed
    assert 0 < fs["RL raises OOD"]["ci"][0] < 0.2 < fs["RL raises OOD"]["ci"][1]
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    assert "data:image/png;base64," in html and "src='report_files" not in html  # self-contained
    png = base64.b64decode(html.split("data:image/png;base64,")[1].split("'")[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("+3.5%", "-8.1%", "OOD change from the warm-up", "+20.0", "compute per stage", "warm-up"):
        assert text in html and text in md
    assert (run_dir / "report_files" / "curves_0.png").exists()


def test_tables_of_stages_a_preset_does_not_run_are_left_out(run_dir):
    from postlab.studies.report import delta_tables, final_tables

    run = load_run(run_dir)
    rep = run["study"]["report"]
    rep["tables"].append({"title": "navigation", "rows": {"warm-up": "eval-nav"}, "splits": {"ID": "id"}})
    rep["deltas"].append({"title": "nav change", "baseline": "eval-nav", "columns": {"RL": "eval-nav-rl"},
                          "rows": {"nav OOD": "ood"}})
    assert [t["title"] for t in final_tables(run)] == ["final success"]
    assert [t["title"] for t in delta_tables(run)] == ["OOD change from the warm-up"]


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium binary (apt-get install -y chromium)")
    html_path, _ = build_report(run_dir)
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
           html_path.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=60)
    assert shot.exists() and shot.stat().st_size > 1000
    from PIL import Image

    img = Image.open(shot).convert("L")
    hist = img.histogram()
    dark = sum(hist[:128]) / (img.width * img.height)
    assert 0.002 < dark < 0.9, f"screenshot looks blank (dark pixel fraction {dark:.4f})"
    colors = sum(1 for c in img.resize((300, 400)).histogram() if c)
    assert colors > 20  # grey levels: text, table borders and the plot, not a flat page


def test_verdict_needs_the_ci_to_exclude_zero():
    assert _verdict(0.05, (0.01, 0.09), "positive", 1, 1) == "yes"
    assert _verdict(0.05, (-0.02, 0.12), "positive", 1, 1).startswith("direction only")
    assert _verdict(-0.05, (-0.09, -0.01), "positive", 0, 1) == "no"
    assert _verdict(-0.05, (-0.09, -0.01), "negative", 3, 3) == "yes"
    assert _verdict(-0.05, (-0.09, -0.01), "negative", 1, 3) == "no"  # most seeds disagree
    assert _verdict(0.05, None, "positive", 1, 1) == "yes"  # no per-problem data: direction only decides


def test_metric_reads_success_or_a_diagnostic_fraction():
    results = {"ood-rule": {"success_rate": 0.1, "per_problem": [0.0, 1.0],
                            "diagnostics": {"face_rule": {"stated": 0.5, "other": 0.5}},
                            "diagnostics_per_problem": {"face_rule": [["stated"], ["other"], [None]]}}}
    assert _metric(results, "ood-rule") == (0.1, [0.0, 1.0])
    assert _metric(results, "ood-rule:face_rule=other") == (0.5, [0.0, 1.0, None])
    assert _metric(results, "ood-rule:face_rule=neither") == (0.0, [0.0, 0.0, None])  # no answer fell in it
    assert _metric(results, "ood-rule:nothing=x") == (None, None)
    assert _metric(results, "id") == (None, None)
