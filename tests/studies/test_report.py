import base64
import json
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser

import pytest

from postlab.cli.main import main
from postlab.studies import StudyRunner, resolve
from postlab.studies.report import build_report
from postlab.studies.report_data import load_run, split_metric
from postlab.studies.report_stats import _verdict, findings

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


ENVIRONMENT = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "python": "3.11.7", "platform": "Linux-6.1-x86_64",
               "cpu": "Fixture CPU 9000", "cpu_count": 16, "torch_threads": 8, "blas": "mkl", "mkldnn": True,
               "cpu_capability": "AVX512", "avx512": True, "cuda_device": None,
               "deterministic_note": "bit-identical on Fixture CPU 9000 with 8 threads"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    runner = StudyRunner(resolve(STUDY, preset="tiny", seeds=2), out)
    runner.run()
    # a known environment, as the runner records it (postlab.runinfo.environment()), so the report's is checkable
    manifest = json.loads((runner.root / "study.json").read_text())
    manifest["environment"] = ENVIRONMENT
    (runner.root / "study.json").write_text(json.dumps(manifest))
    return runner.root


class _Tables(HTMLParser):
    """Every <table> of a page: the <h2>/<h3> heading before it, header texts, rows of (text, class) cells."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._heading, self._in_heading, self._cell = "", False, None

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "h3"):
            self._heading, self._in_heading = "", True
        elif tag == "table":
            self.tables.append({"heading": self._heading, "header": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("th", "td") and self.tables:
            self._cell = {"tag": tag, "text": "", "class": dict(attrs).get("class")}

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._in_heading = False
        elif tag in ("th", "td") and self._cell is not None:
            t = self.tables[-1]
            (t["header"] if self._cell["tag"] == "th" else t["rows"][-1]).append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._in_heading:
            self._heading += data
        if self._cell is not None:
            self._cell["text"] += data


def _html_tables(text: str) -> dict[str, dict]:
    p = _Tables()
    p.feed(text)
    return {t["heading"]: {**t, "rows": [r for r in t["rows"] if r]} for t in p.tables}


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


def test_html_findings_rows_show_their_verdict(run_dir):
    html_path, md_path = build_report(run_dir)
    fs = findings(load_run(run_dir))
    table = _html_tables(html_path.read_text())["Findings"]
    header = [c["text"] for c in table["header"]]
    assert header[-1] == "reproduced" and len(table["rows"]) == len(fs)
    classes = {"yes": "verdict-yes", "no": "verdict-no"}
    for f, row in zip(fs, table["rows"]):
        assert len(row) == len(header), f"row {[c['text'] for c in row]} has {len(row)} cells for {len(header)} headers"
        assert row[0]["text"] == f["claim"]
        assert row[-1]["text"].startswith(f["reproduced"]) and f"({f['seeds_agree']}/2 seeds)" in row[-1]["text"]
        assert row[-1]["class"] == classes[f["reproduced"]]
        assert row[3]["text"].startswith("[") and row[3]["class"] is None  # the CI cell is plain
    for f in fs:  # the Markdown rows end with the same verdict
        assert any(line.startswith(f"| {f['claim']} |") and f"| {f['reproduced']} (" in line
                   for line in md_path.read_text().splitlines())


def test_report_prints_the_environment(run_dir, tmp_path):
    html_path, md_path = build_report(run_dir)
    md, page = md_path.read_text(), html_path.read_text()
    env = {r[0]["text"]: r[1]["text"] for r in _html_tables(page)["machine and software this study ran on"]["rows"]}
    assert env["torch"] == "2.13.0+cpu" and env["CPU"] == "Fixture CPU 9000" and env["torch threads"] == "8"
    assert env["AVX-512 used"] == "yes" and env["CUDA device"] == "–" and env["BLAS"] == "mkl"
    sentence = "bit-identical only on the same machine type, torch build and thread count"
    for text in ("## Environment", "| CPU | Fixture CPU 9000 |", "| torch threads | 8 |", "| Python | 3.11.7 |",
                 sentence, ENVIRONMENT["deterministic_note"]):
        assert text in md
    assert "<h2>Environment</h2>" in page and sentence in page and ENVIRONMENT["deterministic_note"] in page
    assert md.count(sentence) == 1 and page.count(sentence) == 1
    # a study run that did not record its environment says so, in both outputs
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    manifest = json.loads((old / "study.json").read_text())
    del manifest["environment"]
    (old / "study.json").write_text(json.dumps(manifest))
    html_path, md_path = build_report(old)
    for text in (md_path.read_text(), html_path.read_text()):
        assert "Environment: not recorded" in text and sentence in text and "Fixture CPU" not in text


def test_runinfo_environment_is_json_ready():
    from postlab.runinfo import cpu_model, environment

    env = environment()
    json.dumps(env)  # stored in study.json and meta.json
    for key in ("torch", "transformers", "python", "platform", "cpu", "cpu_count", "torch_threads", "mkldnn",
                "cpu_capability", "avx512", "cuda_device", "deterministic_note"):
        assert key in env
    assert env["torch_threads"] >= 1 and env["cpu_count"] >= 1 and isinstance(env["avx512"], bool)
    assert "thread count" in env["deterministic_note"]
    assert isinstance(cpu_model("/nonexistent/cpuinfo"), (str, type(None)))  # falls back to platform.processor()


def test_tables_of_stages_a_preset_does_not_run_say_so(run_dir, tmp_path):
    """A row, column or table this preset does not run is left out with a note naming it, never silently."""
    from postlab.studies.report_tables import delta_tables, final_tables

    run = load_run(run_dir)
    rep = run["study"]["report"]
    rep["tables"].append({"title": "navigation", "rows": {"warm-up": "eval-nav"}, "splits": {"ID": "id"}})
    rep["tables"][0]["rows"]["nav RL"] = "eval-nav-rl"
    rep["deltas"].append({"title": "nav change", "baseline": "eval-nav", "columns": {"RL": "eval-nav-rl"},
                          "rows": {"nav OOD": "ood"}})
    tables = {t["title"]: t for t in final_tables(run)}
    assert [r[0] for r in tables["final success"]["rows"]] == ["warm-up", "SFT", "RL"]
    assert tables["final success"]["notes"] == ["not run in this preset: nav RL (eval-nav-rl)"]
    assert tables["navigation"]["rows"] == [] and tables["navigation"]["notes"] == [
        "not run in this preset: warm-up (eval-nav)"]
    deltas = {t["title"]: t for t in delta_tables(run)}
    assert deltas["nav change"]["rows"] == [] and "RL (eval-nav-rl), RL (eval-nav)" in deltas["nav change"]["notes"][0]
    # a column that no row has a value for (another answer style's diagnostic) is left out, with a note
    rep["tables"][0]["splits"]["OOD: values read"] = "ood:values_read=stated"
    first = final_tables(run)[0]
    assert first["header"] == ["", "ID", "OOD"]
    assert "no value in this run: OOD: values read (ood:values_read=stated)" in first["notes"]
    # the written report lists the tables it could not show and shows the notes under the others
    study = json.loads((run_dir / "study.json").read_text())
    study["study"]["report"] = rep
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "study.json").write_text(json.dumps(study))
    _, md_path = build_report(copy)
    md = md_path.read_text()
    assert "## Not run in this preset" in md and "- navigation: not run in this preset: warm-up (eval-nav)" in md
    assert "Note: not run in this preset: nav RL (eval-nav-rl)" in md


def test_a_row_that_reads_a_split_its_stage_cannot_have_is_an_error():
    """A row whose stage ran but is no eval stage, or whose env has no such split, fails naming the row,
    the stage and what exists, instead of showing an empty row or column."""
    from postlab.config import ConfigError
    from postlab.studies.report_tables import final_tables

    point = {"step": 1, "flops": 1.0, "results": {"id": {"success_rate": 0.5}, "ood": {"success_rate": 0.25}}}
    run = {"stages": {"rl": {"kind": "rl"}, "eval-rl": {"kind": "eval"}},
           "results": {"0": {"rl": {"checkpoint": "run/final", "steps": 3},
                             "eval-rl": {"env": "toy", "splits": ["id", "ood"], "points": [point]}}},
           "study": {"report": {"tables": [{"title": "T", "rows": {"RL": "eval-rl"}, "splits": {"ID": "id"}}]}}}
    assert final_tables(run)[0]["rows"] == [["RL", "50.0%"]]
    tables = run["study"]["report"]["tables"]
    tables[0]["splits"]["OOD"] = "odd"
    with pytest.raises(ConfigError) as e:
        final_tables(run)
    for words in ("report.tables[0] (T), row 'RL'", "stage 'eval-rl' (toy) has no split 'odd'", "id, ood"):
        assert words in str(e.value)
    tables[0]["splits"] = {"ID": "id"}
    tables[0]["rows"]["RL (trainer)"] = "rl"
    with pytest.raises(ConfigError, match=r"row 'RL \(trainer\)': stage 'rl' has no evaluated points \(a rl stage\)"):
        final_tables(run)
    run["study"]["report"] = {"findings": [{"claim": "C", "metric": {"value": ["eval-rl", "odd"]}}]}
    with pytest.raises(ConfigError, match=r"report.findings\[0\] \(C\): stage 'eval-rl' \(toy\) has no split 'odd'"):
        findings(run)


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
    rendered = _rendered_verdicts(browser, html_path, tmp_path)
    expected = [f["reproduced"] for f in findings(load_run(run_dir))]
    assert len(rendered) == len(expected)
    for verdict, cell in zip(expected, rendered):
        assert cell["visible"] and cell["text"].startswith(verdict), f"under 'reproduced': {cell}, expected {verdict!r}"


# Runs in the rendered page: for each findings row, the laid-out text (innerText: what is shown)
# of the cell that sits under the "reproduced" header, found by position, not by DOM index.
_VERDICT_PROBE = """<script>
const h2 = [...document.querySelectorAll('h2')].find(h => h.textContent.trim() === 'Findings');
let table = h2.nextElementSibling; while (table && table.tagName !== 'TABLE') table = table.nextElementSibling;
const th = [...table.querySelectorAll('thead th')].find(x => x.textContent.trim() === 'reproduced');
const col = th.getBoundingClientRect(), mid = (col.left + col.right) / 2;
const out = [...table.querySelectorAll('tbody tr')].map(tr => {
  const td = [...tr.children].find(c => { const r = c.getBoundingClientRect(); return r.left <= mid && mid <= r.right; });
  const r = td ? td.getBoundingClientRect() : null;
  return {text: td ? td.innerText.trim() : '', visible: !!r && r.width > 0 && r.height > 0};
});
const pre = document.createElement('pre'); pre.id = 'rendered-verdicts'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _rendered_verdicts(browser: str, html_path, tmp_path) -> list[dict]:
    """What headless Chromium shows under the findings table's "reproduced" header, row by row."""
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", _VERDICT_PROBE + "</body>"))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,1600", "--dump-dom", probe.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    assert "id=\"rendered-verdicts\">" in dom, "the probe script did not run in Chromium"
    return json.loads(unescape(dom.split('id="rendered-verdicts">')[1].split("</pre>")[0]))


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
    assert split_metric(results, "ood-rule") == (0.1, [0.0, 1.0])
    assert split_metric(results, "ood-rule:face_rule=other") == (0.5, [0.0, 1.0, None])
    assert split_metric(results, "ood-rule:face_rule=neither") == (0.0, [0.0, 0.0, None])  # no answer fell in it
    assert split_metric(results, "ood-rule:nothing=x") == (None, None)
    assert split_metric(results, "id") == (None, None)


def test_dynamics_reads_quarters_of_a_training_stages_metrics(tmp_path):
    """report.dynamics: KEY@first / @last = mean over the first / last quarter of the train rows, per seed."""
    import json

    import pytest

    from postlab.studies.report_data import dynamics_values
    from postlab.studies.report_tables import dynamics_tables

    for seed, offset in (("0", 0.0), ("1", 1.0)):
        d = tmp_path / f"seed_{seed}" / "rl-abc" / "run"
        d.mkdir(parents=True)
        rows = [{"step": i + 1, "kind": "train", "entropy": offset + i} for i in range(8)]
        rows.insert(3, {"step": 4, "kind": "eval", "entropy": 99.0})  # eval rows are not training dynamics
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    run = {"root": str(tmp_path), "stages": ["rl"], "results": {"0": {"rl": {}}, "1": {"rl": {}}},
           "dirs": {"0": {"rl": "seed_0/rl-abc"}, "1": {"rl": "seed_1/rl-abc"}},
           "study": {"report": {"dynamics": [{"title": "t", "rows": {"RL": "rl"},
                                                 "columns": {"first": "entropy@first", "last": "entropy@last"}}]}}}
    assert dynamics_values(run, "rl", "entropy@first") == [0.5, 1.5]  # steps 1-2 of 8
    assert dynamics_values(run, "rl", "entropy@last") == [6.5, 7.5]
    assert dynamics_values(run, "rl", "entropy@end") == [7.0, 8.0]
    assert dynamics_values(run, "rl", "entropy@all") == [3.5, 4.5]
    assert dynamics_tables(run)[0]["rows"] == [["RL", "1 ± 0.71", "7 ± 0.71"]]
    with pytest.raises(ValueError, match="first, last, all, end"):
        dynamics_values(run, "rl", "entropy@middle")


def _point(flops, per_problem, step=1):
    return {"step": step, "flops": flops,
            "results": {"ood": {"success_rate": sum(per_problem) / len(per_problem), "per_problem": per_problem}}}


def test_findings_at_matched_compute_and_values_with_a_ci():
    """`match_compute` compares with the other model's point nearest in training compute, not its
    final one; a `value` finding gets a bootstrap CI over its problems pooled over seeds."""
    rl = {"points": [_point(0.6e11, [0, 1, 0, 0] * 8), _point(1.2e11, [1, 1, 0, 0] * 8, 2)]}
    sft = {"points": [_point(1e11, [1, 0, 0, 0] * 8), _point(1e12, [1, 1, 1, 1] * 8, 2)]}
    warm = {"points": [_point(0.0, [1] * 2 + [0] * 30)]}
    rare = {"points": [_point(0.0, [1] + [0] * 31)]}
    diff = {"diff": [["rl", "ood"], ["sft", "ood"]]}
    run = {"study": {"report": {"findings": [
        {"claim": "final", "metric": diff},
        {"claim": "matched", "metric": {**diff, "match_compute": True}},
        {"claim": "warm above 0", "metric": {"value": ["warm", "ood"]}},
        {"claim": "rare above 0", "metric": {"value": ["rare", "ood"]}},
    ]}}, "results": {str(s): {"rl": rl, "sft": sft, "warm": warm, "rare": rare} for s in range(3)}}
    by_claim = {f["claim"]: f for f in findings(run)}
    assert by_claim["final"]["mean"] == pytest.approx(0.5 - 1.0)  # against SFT's last point
    assert by_claim["final"]["reproduced"] == "no"
    assert by_claim["matched"]["mean"] == pytest.approx(0.5 - 0.25)  # against SFT at 1e11 FLOPs
    assert by_claim["matched"]["reproduced"] == "yes" and by_claim["matched"]["ci"][0] > 0
    # 2 of 32 problems per seed, 3 seeds pooled (96 problems): the CI excludes 0
    assert by_claim["warm above 0"]["mean"] == pytest.approx(2 / 32)
    assert by_claim["warm above 0"]["ci"][0] > 0 and by_claim["warm above 0"]["reproduced"] == "yes"
    # 1 of 32 per seed: 3 successes in 96 can resample to none
    assert by_claim["rare above 0"]["ci"][0] == 0.0
    assert by_claim["rare above 0"]["reproduced"].startswith("direction only")
    # a shared stage (the same result, same hash, for every seed) counts its problems once:
    # 2 successes in 32 problems, not 6 in 96
    shared = {**warm, "hash": "abc"}
    for s in range(3):
        run["results"][str(s)]["warm"] = shared
    once = {f["claim"]: f for f in findings(run)}["warm above 0"]
    assert once["mean"] == pytest.approx(2 / 32) and once["ci"][0] == 0.0


def test_findings_at_matched_compute_need_a_point_within_2x():
    """RL trained 8.6x the FLOPs of SFT's last point (the reason preset, seed 0): no comparison "at matched
    compute", and the finding says so with the FLOPs of both sides; within 2x it compares as before."""
    rl = {"points": [_point(4.7e13, [1, 1, 0, 0] * 8, 60)]}
    sft = {"points": [_point(1.4e12, [0, 0, 0, 0] * 8, 50), _point(5.5e12, [1, 0, 0, 0] * 8, 200)]}
    diff = {"diff": [["rl", "ood"], ["sft", "ood"]], "match_compute": True}
    run = {"study": {"report": {"findings": [{"claim": "matched", "metric": diff}]}},
           "results": {str(s): {"rl": rl, "sft": sft} for s in range(2)}}
    (f,) = findings(run)
    assert f["reproduced"] == "not comparable: no point of sft within 2x of rl's training compute"
    assert "FLOPs 4.7e+13 vs 5.5e+12 at step 200" in f["measured"] and f["ci"] is None
    sft["points"].append(_point(3.0e13, [1, 0, 0, 0] * 8, 1100))  # within 2x: compared at that point
    (f,) = findings(run)
    assert f["mean"] == pytest.approx(0.5 - 0.25) and f["reproduced"] == "yes"
    assert "FLOPs 4.7e+13 vs 3e+13 at step 1100" in f["measured"]


def test_a_partly_run_study_says_which_seeds_are_missing_and_how_to_finish(tmp_path, run_dir):
    # seed 1 of 3 only, as one process of a study spread with --only-seed writes it
    runner = StudyRunner(resolve(STUDY, preset="tiny", seeds=3), tmp_path, only_seeds=[1])
    runner.run()
    run = load_run(runner.root)
    fs = {f["claim"]: f for f in findings(run)}
    assert fs["RL raises OOD"]["seeds"] == 1  # findings over the finished seed only
    build_report(runner.root)
    md, page = (runner.root / "report.md").read_text(), (runner.root / "report.html").read_text()
    n = len(STUDY["stages"])
    for text in (f"seed 0: 0 of {n} stages, seed 2: 0 of {n} stages done",
                 "postlab study fixture --preset tiny --seeds 3 --only-seed 0 --only-seed 2"):
        assert text in md and text in unescape(page)
    assert "Incomplete run" in md and "class='warn'" in page
    # a study whose every seed finished carries no such note
    build_report(run_dir)
    assert "Incomplete run" not in (run_dir / "report.md").read_text()
