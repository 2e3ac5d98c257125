"""The tables of a study report, as {title, header, rows, notes}: final success per split (mean ±
std over seeds), deltas from a baseline, diagnose stages' numbers, training dynamics, RL budget
probes and compute per stage.

What a table cannot show is named in its `notes`, never dropped silently: rows whose stage this
preset does not run, and columns no row has a value for (a split this preset does not evaluate,
a diagnostic another answer style records). A table none of whose rows ran has no rows, only the
note. A row that reads a split its stage cannot have is an error (postlab.studies.report_schema).
"""

from __future__ import annotations

from postlab.studies.report_data import (column_map, diagnostic_values, dynamics_values, scatter_not_run,
                                         scatter_points, values)
from postlab.studies.report_schema import axis_label, check_run_reads, left_out_note, scatter_axis
from postlab.studies.report_stats import format_mean_std, format_number, mean_std, paired_differences


def _table(title: str, header: list, rows: list, notes: list, **extra) -> dict:
    return {"title": title, "header": header, "rows": rows, "notes": [n for n in notes if n], **extra}


def _run_rows(run: dict, rows: dict, stage_of=lambda row: row) -> tuple[dict, list[tuple[str, str]]]:
    """(the rows whose stage this preset runs, [(label, stage)] of the others)."""
    kept, left_out = {}, []
    for label, row in rows.items():
        stage = stage_of(row)
        if stage in run["stages"]:
            kept[label] = row
        else:
            left_out.append((label, stage))
    return kept, left_out


def _drop_empty_columns(cols: dict, rows: list[list]) -> tuple[list, list[list], list[tuple[str, str]]]:
    """(kept column labels, rows with only those cells, [(label, reference)] of columns with no value in any row)."""
    keep = [i for i in range(len(cols)) if any(r[1 + i] != "–" for r in rows)]
    empty = [(label, ref) for i, (label, ref) in enumerate(cols.items()) if i not in keep]
    return [list(cols)[i] for i in keep], [[r[0], *(r[1 + i] for i in keep)] for r in rows], empty


def final_tables(run: dict) -> list[dict]:
    """Final success (or another per-split metric) of each `report.tables` item: mean ± std over seeds.
    Without a `tables` section: every eval stage x its splits."""
    rep = run["study"].get("report") or {}
    specs = rep.get("tables")
    if specs:
        check_run_reads(run, "tables")
    else:
        evals = [s for s in run["stages"] if any("points" in (seed.get(s) or {}) for seed in run["results"].values())]
        splits = []
        for seed in run["results"].values():
            for s in evals:
                for sp in (seed.get(s) or {}).get("splits", []):
                    if sp not in splits:
                        splits.append(sp)
        specs = [{"title": "final success", "rows": {s: s for s in evals}, "splits": splits}]
    tables = []
    for t in specs:
        cols = column_map(t.get("splits"))
        run_rows, not_run = _run_rows(run, t.get("rows") or {})
        rows = []
        for label, stage in run_rows.items():
            cells = []
            for split in cols.values():
                xs = values(run, stage, split)
                # percent by default; `percent: false` for tables of other quantities (KL in nats, distances)
                cells.append(format_mean_std(*mean_std(xs), len(xs)) if t.get("percent", True) else format_number(xs))
            rows.append([label, *cells])
        header, rows, empty = _drop_empty_columns(cols, rows)
        if not header:  # no row has a value yet: nothing to tabulate
            rows = []
        notes = [left_out_note("not run in this preset", not_run),
                 left_out_note("no value in this run", empty) if run_rows else None]
        if rows or any(notes):
            tables.append(_table(t.get("title", ""), ["", *header] if rows else [], rows, notes))
    return tables


def delta_tables(run: dict) -> list[dict]:
    """Each `report.deltas` item: per row (a split), the change of each column's stage from its baseline,
    paired per seed, in points of %."""
    rep = run["study"].get("report") or {}
    check_run_reads(run, "deltas")
    out = []
    for t in rep.get("deltas") or []:
        # a column is a stage (change from the table's baseline) or a pair [stage, baseline] with
        # its own baseline (e.g. each SFT amount's RL gain: [post-RL eval, pre-RL eval])
        cols = {c: list(st) if isinstance(st, (list, tuple)) else [st, t.get("baseline")]
                for c, st in (t.get("columns") or {}).items()}
        not_run = [(c, s) for c, pair in cols.items() for s in pair if s not in run["stages"]]
        cols = {c: pair for c, pair in cols.items() if all(s in run["stages"] for s in pair)}
        rows = []
        for label, split in column_map(t.get("rows")).items() if cols else []:
            cells = []
            for stage, base in cols.values():
                d = paired_differences(run, stage, base, split)
                cells.append(format_mean_std(*mean_std(d), len(d), signed=True))
            rows.append([label, *cells])
        out.append(_table(t.get("title", "change from baseline"), ["", *cols] if rows else [], rows,
                          [left_out_note("not run in this preset", not_run)], paper=t.get("paper")))
    return out


def _scatter_cell(xs: list[float], axis: dict) -> str:
    """Drift (KL, NLL) to 3 significant digits; success in percent points, signed where it is a change."""
    if axis["split"].startswith("drift:"):
        return format_number(xs)
    return format_mean_std(*mean_std(xs), len(xs), signed=bool(axis.get("change_from")))


def scatter_tables(run: dict) -> list[dict]:
    """The numbers behind each `scatter` figure: per point (method), x and y as mean ± std over seeds."""
    check_run_reads(run, "scatter")
    out = []
    for spec in (run["study"].get("report") or {}).get("scatter") or []:
        axes = [scatter_axis(spec[a]) for a in ("x", "y")]
        data = scatter_points(run, spec)
        not_run = scatter_not_run(run, spec)
        rows = [[label, *[_scatter_cell([p[i] for p in data[label]], ax) for i, ax in enumerate(axes)],
                 len(data[label])] for label in data]
        out.append(_table(spec.get("title", "scatter"), ["", *[axis_label(ax) for ax in axes], "seeds"], rows,
                          [n for n in [left_out_note("not run in this preset", not_run)] if n]))
    return out


def compute_table(run: dict) -> dict:
    """Tokens, FLOPs and wall time per stage, summed over the seeds it ran for (a shared stage once)."""
    rows = []
    tot = {"tokens_trained": 0, "tokens_generated": 0, "flops": 0.0, "wall_time_s": 0.0}
    for stage in run["stages"]:
        agg = {k: 0.0 for k in tot}
        n = 0
        seen = set()  # a shared stage appears under every seed but ran once
        for seed, res in run["results"].items():
            r = res.get(stage)
            if r and run["dirs"][seed][stage] not in seen:
                seen.add(run["dirs"][seed][stage])
                n += 1
                for k in agg:
                    agg[k] += float(r["compute"].get(k, 0))
        for k in tot:
            tot[k] += agg[k]
        rows.append([stage, run["stages"][stage]["kind"], str(n), f"{int(agg['tokens_trained']):,}",
                     f"{int(agg['tokens_generated']):,}", f"{agg['flops']:.3g}", f"{agg['wall_time_s']:.0f}"])
    rows.append(["total", "", "", f"{int(tot['tokens_trained']):,}", f"{int(tot['tokens_generated']):,}",
                 f"{tot['flops']:.3g}", f"{tot['wall_time_s']:.0f}"])
    return {"title": "compute per stage (summed over the seeds it ran for; FLOPs ≈ 6·N·D_train + 2·N·D_gen)",
            "header": ["stage", "kind", "seeds", "tokens trained", "tokens generated", "FLOPs", "wall time (s)"],
            "rows": rows}


def diagnostic_specs(run: dict) -> list[dict]:
    """The report's diagnostics tables: each with its columns as a mapping, the rows whose stage this
    preset runs, and `not_run`, [(label, stage)] of the others."""
    check_run_reads(run, "diagnostics")
    out = []
    for t in (run["study"].get("report") or {}).get("diagnostics") or []:
        rows, not_run = _run_rows(run, t.get("rows") or {}, lambda row: row.partition(":")[0])
        out.append({**t, "rows": rows, "columns": column_map(t.get("columns")), "not_run": not_run})
    return out


def diagnostics_tables(run: dict) -> list[dict]:
    """Diagnose stages' numbers (mean ± std over seeds), one row per diagnosed model (or its base)."""
    out = []
    for t in diagnostic_specs(run):
        rows = [[label, *[format_number(diagnostic_values(run, row, col)) for col in t["columns"].values()]]
                for label, row in t["rows"].items()]
        out.append(_table(t.get("title", "diagnostics"), ["", *t["columns"]] if rows else [], rows,
                          [left_out_note("not run in this preset", t["not_run"])]))
    return out


def dynamics_tables(run: dict) -> list[dict]:
    """`report.dynamics`: training-time metrics of trainer stages (mean ± std over seeds)."""
    out = []
    for t in (run["study"].get("report") or {}).get("dynamics") or []:
        run_rows, not_run = _run_rows(run, t.get("rows") or {})
        cols = column_map(t.get("columns"))
        rows = [[label, *[format_number(dynamics_values(run, st, c)) for c in cols.values()]]
                for label, st in run_rows.items()]
        header, rows, empty = _drop_empty_columns(cols, rows)
        if not header:  # no row has a value yet: nothing to tabulate
            rows = []
        notes = [left_out_note("not run in this preset", not_run),
                 left_out_note("no value in this run (no such training metric logged)", empty) if run_rows else None]
        out.append(_table(t.get("title", "training dynamics"), ["", *header] if rows else [], rows, notes,
                          paper=t.get("paper")))
    return out


def probe_tables(run: dict) -> list[dict]:
    """One table per `rl-probe` stage and seed (a shared probe once, titled with the seeds it serves): every
    probed setting, its training success against the frozen checkpoint on the same problems, the gain with
    its CI, and which setting was chosen (or skip)."""
    out = []
    for stage, info in run.get("stages", {}).items():
        if info.get("kind") != "rl-probe":
            continue
        by_dir: dict = {}  # a shared stage appears under every seed but ran once, in one directory
        for seed in sorted(run["results"], key=int):
            if run["results"][seed].get(stage):
                by_dir.setdefault((run.get("dirs", {}).get(seed) or {}).get(stage, seed), []).append(seed)
        for seeds in by_dir.values():
            seed = seeds[0]
            res = run["results"][seed][stage]
            if not res.get("probes"):
                continue
            rows = []
            for p in res["probes"]:
                setting = ", ".join(f"{k}={v}" for k, v in p["setting"].items())
                lo, hi = p["gain_ci"]
                rows.append([setting, p["sequences_per_step"], f"{100 * p['on_policy_success']:.1f}%",
                             f"{100 * p['frozen_success']:.1f}%", f"{100 * p['gain']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                             f"{100 * p['frozen_groups_solved']:.0f}%", "chosen" if p["setting"] == res.get("chosen") else ""])
            choice = "skip RL" if res.get("skip") else "chosen"
            which = f"seed {seed}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))} (shared)"
            out.append({"title": f"RL budget probe {stage}, {which}: {res['steps']} steps per setting, last "
                                 f"{res['window']} compared ({choice}: {res.get('reason', '')})",
                        "header": ["setting", "sequences/step", "training success", "frozen, same problems",
                                   "gain (points) [95% CI]", "groups with a success (frozen)", ""],
                        "rows": rows})
    rows = []  # the rl stages fed by a probe: the same test on the real run
    for stage in run.get("stages", {}):
        for seed in sorted(run["results"], key=int):
            g = (run["results"][seed].get(stage) or {}).get("training_gain")
            if g:
                lo, hi = g["gain_ci"]
                rows.append([stage, seed, g["window"], f"{100 * g['on_policy_success']:.1f}%",
                             f"{100 * g['frozen_success']:.1f}%", f"{100 * g['gain']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"])
    if rows:
        out.append({"title": "RL training success vs the frozen start on the same problems (last steps of each run)",
                    "header": ["stage", "seed", "steps compared", "training success", "frozen, same problems",
                               "gain (points) [95% CI]"], "rows": rows})
    return out
