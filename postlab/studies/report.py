"""Study reports: report.html (self-contained, plots embedded) and report.md (+ PNGs in
report_files/) of a study run directory, and the tables `postlab study` prints.

What the report shows is the study YAML's `report` section (postlab.studies.report_schema); the
numbers come from postlab.studies.report_tables and report_stats, the figures from report_plots.
Tables and figures of stages this preset does not run are listed under "Not run in this preset".
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import yaml

from postlab.studies.report_data import load_run, unfinished_seeds
from postlab.studies.report_plots import plot_curves, plot_diagnostics, plot_scatter
from postlab.studies.report_stats import findings
from postlab.studies.report_tables import (compute_table, delta_tables, diagnostics_tables, dynamics_tables,
                                           final_tables, probe_tables, scatter_tables)


def _md_table(t: dict) -> str:
    lines = [f"**{t['title']}**", "", "| " + " | ".join(t["header"]) + " |", "|" + "---|" * len(t["header"])]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in t["rows"]]
    return "\n".join(lines) + "\n"


def _html_table(t: dict) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in t["header"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in t["rows"])
    return f"<h3>{html.escape(t['title'])}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _findings_table(fs: list[dict]) -> dict:
    def ci(f: dict) -> str:
        if not f.get("ci"):
            return "–"
        lo, hi = f["ci"]
        return f"[{lo * 100:+.1f}, {hi * 100:+.1f}]" if f.get("percent", True) else f"[{lo:+.3g}, {hi:+.3g}]"

    return {"title": "paper headline vs this run",
            "header": ["finding", "paper", "measured", "95% CI (paired, problems × seeds)", "reproduced"],
            "rows": [[f["claim"], f["paper"], f["measured"], ci(f),
                      f["reproduced"] + (f" ({f['seeds_agree']}/{f['seeds']} seeds)" if f["seeds"] else "")] for f in fs]}


def _verdict_class(verdict: str) -> str:
    """The CSS class of a findings row's verdict cell, from the verdict (not the cell's text)."""
    if verdict.startswith("direction only"):
        return "verdict-direction"
    return {"yes": "verdict-yes", "no": "verdict-no"}.get(verdict, "verdict-none")


def _findings_html(fs: list[dict]) -> str:
    """The findings table in HTML: the same cells as the Markdown table, the verdict cell classed."""
    ft = _findings_table(fs)
    head = "".join(f"<th>{html.escape(x)}</th>" for x in ft["header"])
    rows = []
    for f, row in zip(fs, ft["rows"]):
        cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row[:-1])
        rows.append(f"<tr>{cells}<td class='{_verdict_class(f['reproduced'])}'>{html.escape(row[-1])}</td></tr>")
    return f"<h2>Findings</h2><table class='findings'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


ENV_LABELS = {"torch": "torch", "transformers": "transformers", "python": "Python", "platform": "platform",
              "cpu": "CPU", "cpu_count": "logical CPUs", "torch_threads": "torch threads", "blas": "BLAS",
              "mkldnn": "oneDNN (mkldnn) available", "onednn_version": "oneDNN version",
              "cpu_capability": "CPU capability (kernels)", "avx512": "AVX-512 used", "cuda_device": "CUDA device"}


def _env_value(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def environment_table(run: dict) -> dict | None:
    """The run's recorded environment (study.json's "environment") as a two-column table;
    None when the study did not record one (runs made before it was recorded)."""
    env = run.get("environment")
    if not isinstance(env, dict) or not env:
        return None
    keys = [k for k in ENV_LABELS if k in env] + [k for k in env if k not in ENV_LABELS and k != "deterministic_note"]
    return {"title": "machine and software this study ran on", "header": ["", "value"],
            "rows": [[ENV_LABELS.get(k, k), _env_value(env[k])] for k in keys]}


def _environment_sections(run: dict) -> tuple[list[str], list[str]]:
    """(Markdown lines, HTML parts) of the Environment section."""
    from postlab.runinfo import DETERMINISM

    t = environment_table(run)
    note = (run.get("environment") or {}).get("deterministic_note") if t else None
    md, h = ["## Environment", ""], ["<h2>Environment</h2>"]
    if t is None:
        md.append("Environment: not recorded (study.json has no 'environment').\n")
        h.append("<p>Environment: not recorded (study.json has no 'environment').</p>")
    else:
        md.append(_md_table(t))
        h.append(_html_table(t))
    # runinfo's note starts with the same sentence: print it once, followed by the run's own values
    note = str(note or "")
    text = note if note.startswith(DETERMINISM) else DETERMINISM + (f" Recorded note: {note}" if note else "")
    md.append(text + "\n")
    h.append(f"<p>{html.escape(text)}</p>")
    return md, h


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
background:#fff}h1{font-size:1.6em}table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;
padding:4px 10px;text-align:right}th:first-child,td:first-child{text-align:left}thead{background:#f0f3f8}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.85em}img{max-width:100%;border:1px solid #eee}
.verdict-yes{color:#176f2c;font-weight:bold}.verdict-no{color:#a11;font-weight:bold}
.verdict-direction{color:#8a5a00}.verdict-none{color:#777}.note{color:#555;font-size:.9em}
.warn{background:#fff6e0;border-left:4px solid #d89b00;padding:.5em 1em}"""


def _figure_section(md: list, h: list, fig_dir: Path, title: str, stem: str, figures: list[dict]) -> None:
    """A section of figures: PNG files beside report.md, embedded (base64) in report.html, each with its notes."""
    drawn = [f for f in figures if f["png"] is not None]
    if not drawn:
        return
    md += [f"## {title}", ""]
    h.append(f"<h2>{html.escape(title)}</h2>")
    for i, fig in enumerate(drawn):
        name, png = fig["title"], fig["png"]
        f = fig_dir / f"{stem}_{i}.png"
        f.write_bytes(png)
        md.append(f"![{name}](report_files/{f.name})\n")
        h.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,"
                 f"{base64.b64encode(png).decode()}'><figcaption>{html.escape(name)}</figcaption></figure>")
        _notes(md, h, fig["notes"])


def _notes(md: list, h: list, notes: list[str]) -> None:
    for note in notes:
        md.append(f"Note: {note}\n")
        h.append(f"<p class='note'>Note: {html.escape(note)}</p>")


def _not_run_section(md: list, h: list, items: list[dict]) -> None:
    """The tables and figures none of whose stages this preset runs: their titles and what they would show."""
    if not items:
        return
    md += ["## Not run in this preset", ""]
    h.append("<h2>Not run in this preset</h2><ul>")
    for item in items:
        text = f"{item['title']}: " + "; ".join(item["notes"])
        md.append(f"- {text}")
        h.append(f"<li>{html.escape(text)}</li>")
    md.append("")
    h.append("</ul>")


def _unfinished_note(md: list, h: list, run: dict) -> None:
    """A report of a partly run study says which seeds are missing stages and how to finish them; its
    findings, tables and seed counts are over the finished stages only."""
    missing = unfinished_seeds(run)
    if not missing:
        return
    per_seed = ", ".join(f"seed {s}: {done} of {total} stages" for s, (done, total) in sorted(missing.items()))
    resume = " ".join(f"--only-seed {s}" for s in sorted(missing))
    preset = f" --preset {run['preset']}" if run.get("preset") else ""
    text = (f" {per_seed} done. Findings, tables and seed counts below use the finished stages only. To finish: "
            f"`postlab study {run['name']}{preset} --seeds {len(run['seeds'])} {resume}` with the same --out "
            f"(every finished stage is cached).")
    md += [f"> **Incomplete run:**{text}", ""]
    h.append(f"<p class='warn'><b>Incomplete run:</b>{html.escape(text)}</p>")


def build_report(root: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md (+ PNGs in report_files/) into the run dir."""
    run = load_run(root)
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    fs = findings(run)
    tables = final_tables(run) + delta_tables(run) + scatter_tables(run) + diagnostics_tables(run) + \
        dynamics_tables(run) + probe_tables(run)
    comp = compute_table(run)
    figs, diag_figs, scatter_figs = plot_curves(run), plot_diagnostics(run), plot_scatter(run)
    study = run["study"]
    title = f"postlab study {run['name']} — preset {run['preset']}, seeds {run['seeds']}"
    fig_dir = out / "report_files"
    fig_dir.mkdir(exist_ok=True)
    md = [f"# {title}", "", study.get("description", "").strip(), "", f"Paper: {study.get('paper', '')}", "",
          f"Command: `postlab study {run['name']} --preset {run['preset']} --seeds {len(run['seeds'])}`", ""]
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style>"
         f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(study.get('description', ''))}</p>"
         f"<p>Paper: {html.escape(str(study.get('paper', '')))}</p>"]
    _unfinished_note(md, h, run)
    if fs:
        ft = _findings_table(fs)
        md += ["## Findings", "", _md_table(ft)]
        h.append(_findings_html(fs))
    md += ["## Results", ""]
    h.append("<h2>Results</h2>")
    for t in tables:
        if not t["rows"]:
            continue
        md.append(_md_table(t))
        h.append(_html_table(t))
        _notes(md, h, t.get("notes") or [])
        if t.get("paper"):
            md.append(f"Paper: {t['paper']}\n")
            h.append(f"<p>Paper: {html.escape(str(t['paper']))}</p>")
    for section, stem, figures in (("Success vs compute", "curves", figs),
                                   ("Gain against drift", "scatter", scatter_figs),
                                   ("Diagnostics", "diagnostics", diag_figs)):
        _figure_section(md, h, fig_dir, section, stem, figures)
    _not_run_section(md, h, [t for t in tables if not t["rows"]] +
                     [f for f in figs + scatter_figs + diag_figs if f["png"] is None])
    md += ["## Compute", "", _md_table(comp)]
    h += ["<h2>Compute</h2>", _html_table(comp)]
    env_md, env_html = _environment_sections(run)
    md += env_md
    h += env_html
    cfg = yaml.safe_dump(study, sort_keys=False, allow_unicode=True)
    md += ["## Configuration", "", "```yaml", cfg, "```"]
    h.append(f"<h2>Configuration</h2><pre>{html.escape(cfg)}</pre></body></html>")
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text("".join(h), encoding="utf-8")
    md_path.write_text("\n".join(md), encoding="utf-8")
    return html_path, md_path


def rich_tables(root: str | Path):
    """The final, delta and diagnostics tables and the measured findings as rich Tables (what
    `postlab study` prints); a table's notes are its caption."""
    from rich.table import Table

    run = load_run(root)
    out = []
    measured = [f for f in findings(run) if f["reproduced"] != "not run"]  # the report lists the others
    for t in final_tables(run) + delta_tables(run) + diagnostics_tables(run) + \
            ([_findings_table(measured)] if measured else []):
        if not t["rows"]:
            continue
        table = Table(title=t["title"], caption="; ".join(t.get("notes") or []) or None)
        for i, col in enumerate(t["header"]):
            table.add_column(str(col), justify="left" if i == 0 else "right")
        for row in t["rows"]:
            table.add_row(*[str(c) for c in row])
        out.append(table)
    return out
