"""The figures of a study report (matplotlib, rendered to PNG bytes): success vs training compute
per `report.curves` item, one point per method and seed per `report.scatter` item (e.g. gain against
forgetting), and diagnose stages' numbers per diagnostics table with `plot: true`.

Each figure is {title, png, notes}: a figure of stages this preset does not run has no png, only
the note naming them, like a table none of whose rows ran (postlab.studies.report_tables).
"""

from __future__ import annotations

import io

from postlab.studies.report_data import (column_map, diagnostic_values, point_metric, scatter_not_run, scatter_points,
                                         values)
from postlab.studies.report_schema import axis_label, check_run_reads, left_out_note, scatter_axis
from postlab.studies.report_stats import mean_std
from postlab.studies.report_tables import diagnostic_specs


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display; reports are written by headless runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def curve_data(run: dict, spec: dict, split: str) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """label -> (FLOPs, mean success, std) along training, averaged over seeds by point index."""
    out = {}
    base_vals = values(run, spec["baseline"], split) if spec.get("baseline") else []
    for label, stage in column_map(spec.get("series")).items():
        per_seed = [r[stage]["points"] for r in run["results"].values() if r.get(stage)]
        if not per_seed:
            continue
        n = min(len(p) for p in per_seed)
        xs, ms, sds = [], [], []
        if base_vals:
            m, sd = mean_std(base_vals)
            xs.append(0.0), ms.append(m), sds.append(sd)
        for i in range(n):
            pts = [(p[i], v) for p in per_seed if (v := point_metric(p[i], split)[0]) is not None]
            if not pts:
                continue
            xs.append(sum(p["flops"] for p, _ in pts) / len(pts))
            m, sd = mean_std([v for _, v in pts])
            ms.append(m), sds.append(sd)
        out[label] = (xs, ms, sds)
    return out


def plot_curves(run: dict) -> list[dict]:
    """Each `curves` figure: success vs compute, one panel per split, one line per series that ran."""
    check_run_reads(run, "curves")
    rep = run["study"].get("report") or {}
    figs = []
    for spec in rep.get("curves") or []:
        title = spec.get("title", "curves")
        not_run = [(label, st) for label, st in column_map(spec.get("series")).items() if st not in run["stages"]]
        notes = [n for n in [left_out_note("not run in this preset", not_run)] if n]
        splits = column_map(spec.get("splits"))
        data = {split: curve_data(run, spec, split) for split in splits.values()}
        if not any(data.values()):  # no series ran (or none has a point yet): the note says which
            figs.append({"title": title, "png": None, "notes": notes})
            continue
        plt = _pyplot()
        fig, axes = plt.subplots(1, max(1, len(splits)), figsize=(4.2 * max(1, len(splits)), 3.4), squeeze=False)
        for ax, (panel, split) in zip(axes[0], splits.items()):
            for label, (xs, ms, sds) in data[split].items():
                ax.plot(xs, [100 * m for m in ms], marker="o", label=label)
                ax.fill_between(xs, [100 * (m - s) for m, s in zip(ms, sds)], [100 * (m + s) for m, s in zip(ms, sds)],
                                alpha=0.15)
            ax.set_title(panel)
            ax.set_xlabel("training compute (FLOPs)")
            ax.set_ylabel("% of first answers" if ":" in split else "success (%)")
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.suptitle(spec.get("title", ""))
        fig.tight_layout()
        figs.append({"title": title, "png": _png(plt, fig), "notes": notes})
    return figs


def plot_diagnostics(run: dict) -> list[dict]:
    """Each diagnostics table with `plot: true`: one panel per column, the rows (e.g. SFT amounts)
    along the x axis, mean ± std over seeds."""
    figs = []
    for t in diagnostic_specs(run):
        if not t.get("plot"):
            continue
        title = t.get("title", "diagnostics")
        notes = [n for n in [left_out_note("not run in this preset", t["not_run"])] if n]
        if not t["rows"]:
            figs.append({"title": title, "png": None, "notes": notes})
            continue
        plt = _pyplot()
        cols = t["columns"]
        fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.2), squeeze=False)
        for ax, (panel, col) in zip(axes[0], cols.items()):
            stats = [mean_std(diagnostic_values(run, row, col)) for row in t["rows"].values()]
            ax.errorbar(range(len(stats)), [m for m, _ in stats], yerr=[sd for _, sd in stats], marker="o", capsize=3)
            ax.set_xticks(range(len(stats)), list(t["rows"]), rotation=30, ha="right", fontsize=7)
            ax.set_title(panel, fontsize=9)
            ax.grid(alpha=0.3)
        fig.suptitle(t.get("title", ""))
        fig.tight_layout()
        figs.append({"title": title, "png": _png(plt, fig), "notes": notes})
    return figs


def _axis_scale(split: str) -> float:
    """Success and fractions plot in %, drift (KL, parameter distance) as it is."""
    return 1.0 if split.startswith("drift:") else 100.0


def plot_scatter(run: dict) -> list[dict]:
    """Each `scatter` figure: one marker per point (method) and seed, a method's seeds in one colour."""
    check_run_reads(run, "scatter")
    figs = []
    for spec in (run["study"].get("report") or {}).get("scatter") or []:
        title = spec.get("title", "scatter")
        not_run = scatter_not_run(run, spec)
        notes = [n for n in [left_out_note("not run in this preset", not_run)] if n]
        data = scatter_points(run, spec)
        if not data:
            figs.append({"title": title, "png": None, "notes": notes})
            continue
        x_axis, y_axis = scatter_axis(spec["x"]), scatter_axis(spec["y"])
        sx, sy = _axis_scale(x_axis["split"]), _axis_scale(y_axis["split"])
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5.6, 4.2))
        for label, pts in data.items():
            ax.scatter([sx * x for x, _ in pts], [sy * y for _, y in pts], label=label, s=28, alpha=0.8)
        if y_axis.get("change_from"):
            ax.axhline(0, color="grey", lw=0.8)
        if x_axis.get("change_from"):
            ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel(axis_label(x_axis) + (" (points of %)" if sx == 100 and x_axis.get("change_from") else ""))
        ax.set_ylabel(axis_label(y_axis) + (" (points of %)" if sy == 100 and y_axis.get("change_from") else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        figs.append({"title": title, "png": _png(plt, fig), "notes": notes})
    return figs
