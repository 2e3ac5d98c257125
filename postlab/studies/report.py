"""Study reports: tables, plots (success vs compute), paper-vs-measured findings; HTML + Markdown.

The study YAML's ``report`` section says what to show::

    report:
      tables:                      # final success per split, mean ± std over seeds
        - title: GeneralPoints, final success
          rows: {SFT warm-up: eval-warmup, SFT: eval-sft, RL: eval-rl}   # label -> eval stage
          splits: {ID: id, rule OOD: ood-rule, visual OOD: ood-visual}   # column -> split (or a list)
      deltas:                      # change from a baseline, in the paper's format (points of %)
        - title: OOD change from the SFT warm-up
          baseline: eval-warmup
          columns: {RL: eval-rl, SFT: eval-sft}
          rows: {GeneralPoints rule OOD: ood-rule, GeneralPoints visual OOD: ood-visual}
      curves:                      # success vs training compute, one panel per split
        - title: GeneralPoints
          baseline: eval-warmup    # plotted at 0 FLOPs (where every series starts)
          series: {SFT: eval-sft, RL: eval-rl}
          splits: [id, ood-rule, ood-visual]
      findings:                    # the paper's headline numbers and whether the direction reproduced
        - claim: RL improves rule OOD over the warm-up
          paper: "+3.5%"
          metric: {delta: [eval-rl, eval-warmup], split: ood-rule}   # or {value: [stage, split]}
          expect: positive          # or {diff: [[stage, split], [stage, split]]}; positive | negative | a number
                                    # or {gain_diff: [[a, a0], [b, b0]], split: s}: (a - a0) - (b - b0),
                                    # e.g. RL gain after 16x SFT minus RL gain after 1x SFT
      diagnostics:                 # numbers of `diagnose` stages (postlab.studies.kinds), mean ± std over seeds
        - title: Plasticity diagnostics vs SFT amount
          rows: {base: "diag-1x:base", SFT 1x: diag-1x, SFT 16x: diag-16x}   # STAGE, or STAGE:base (its base model)
          columns: {entropy (ID): "id:entropy_mean", drift: drift}   # drift or SPLIT:KEY (a summary key)
          plot: true               # also one panel per column, rows along the x axis
    A delta table's column may also be a pair [stage, baseline] (its own baseline), e.g. the RL
    gain of each SFT amount: {"1x": [eval-rl-1x, eval-sft-1x], "16x": [eval-rl-16x, eval-sft-16x]}.
    A split may name a metric other than success: ``SPLIT:KEY=CATEGORY`` (a diagnostic's fraction)
    or ``SPLIT:KEY`` (a multi-turn metric, e.g. ``id:multi@5``, ``id:correction_rate``).
    Eval stages with ``sampled:`` also hold ``SPLIT@sampled`` (mean success of N samples per
    problem, i.e. pass@1 at the stated temperature) and ``SPLIT@sampled:pass@K``; every eval
    of a continuation holds ``drift:kl`` (KL(start || model), nats per sequence, per problem) and
    ``drift:param_distance`` / ``drift:param_distance_rel`` / ``drift:kl_per_token``. A table of
    such numbers sets ``percent: false``. A ``diff`` finding may set ``match_compute: true`` (the
    second stage's point nearest the first's final FLOPs) or ``match_kl: true`` (its point whose
    KL to the shared start is nearest the first's final KL: "RL forgets less" at equal drift).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import yaml

from postlab.eval.drift import DRIFT_KEYS
from postlab.eval.metrics import paired_difference_ci, pass_at_k


# ----------------------------------------------------------------------------- loading


def load_run(root: str | Path) -> dict:
    """The manifest of a study run dir plus every completed stage's result, per seed."""
    root = Path(root)
    mf = root / "study.json"
    if not mf.exists():
        raise FileNotFoundError(f"{root}: not a study run directory (no study.json); expected "
                                "runs/studies/NAME/PRESET")
    manifest = json.loads(mf.read_text())
    results: dict[str, dict[str, dict]] = {}
    for seed, dirs in manifest["dirs"].items():
        results[seed] = {}
        for stage, rel in dirs.items():
            d = root / rel
            if (d / "DONE").exists():
                results[seed][stage] = json.loads((d / "result.json").read_text())
    manifest["results"] = results
    manifest["root"] = str(root)
    return manifest


def _metric(results: dict, split: str) -> tuple[float | None, list | None]:
    """(value, per-problem values) of a split's eval result. `split` is a split name (success
    rate; ``SPLIT@sampled`` for the mean success of N samples per problem, i.e. pass@1),
    ``SPLIT:KEY=CATEGORY``, a first-attempt diagnostic's fraction, e.g.
    ``ood-rule:face_rule=other`` (GeneralPoints: answers that apply the other face-card rule),
    ``SPLIT@sampled:pass@K`` (unbiased pass@K from the N samples, K <= N), or ``SPLIT:KEY``
    with a multi-turn metric (`evaluate`'s ``multiturn``), e.g. ``id:multi@5`` or
    ``id:correction_rate``."""
    name, _, diag = split.partition(":")
    r = results.get(name)
    if r is None:
        return None, None
    if not diag:
        return r["success_rate"], r.get("per_problem")
    if diag.startswith("pass@") and "=" not in diag:
        return _pass_at(r, int(diag[len("pass@"):]))
    if "=" not in diag:
        m = (r.get("multiturn") or {}).get(diag)
        if not isinstance(m, dict) or not m.get("n"):
            return None, None
        return m["mean"], (r.get("multiturn_per_problem") or {}).get(diag)
    key, _, cat = diag.partition("=")
    if key not in (r.get("diagnostics") or {}):
        return None, None
    cats = (r.get("diagnostics_per_problem") or {}).get(key)
    per_problem = None if cats is None else [
        None if not (seen := [c for c in cs if c is not None]) else sum(c == cat for c in seen) / len(seen) for cs in cats]
    return r["diagnostics"][key].get(cat, 0.0), per_problem


def _pass_at(r: dict, k: int) -> tuple[float | None, list | None]:
    """Unbiased pass@k per problem from a sampled result's per-problem success fractions and n."""
    n = int(r.get("n_samples") or 1)
    if r.get("decoding") != "sampled" or not 1 <= k <= n or r.get("per_problem") is None:
        return None, None
    per_problem = [pass_at_k(n, round(f * n), k) for f in r["per_problem"]]
    return sum(per_problem) / len(per_problem), per_problem


def _point_metric(point: dict, split: str) -> tuple[float | None, list | None]:
    """`_metric` of one evaluated point; ``drift:KEY`` reads its drift from the start instead
    (``drift:kl``: KL(start || model) in nats per sequence, per problem; ``drift:param_distance``...)."""
    name, _, key = split.partition(":")
    if name == "drift":
        d = point.get("drift")
        if d is None or key not in DRIFT_KEYS:
            return None, None
        return d[key], (d.get("kl_per_problem") if key == "kl" else None)
    return _metric(point["results"], split)


def _final_metric(res: dict | None, split: str) -> tuple[float | None, list | None]:
    """`_metric` of a stage's last evaluated point (None, None when it has none)."""
    pts = (res or {}).get("points") or []
    return _point_metric(pts[-1], split) if pts else (None, None)


def _final(res: dict, split: str) -> float | None:
    return _final_metric(res, split)[0]


def _matched_metric(res: dict | None, split: str, flops: float | None) -> tuple[float | None, list | None]:
    """`_metric` at the evaluated point whose training compute is nearest `flops` (the other
    model's final compute): "at matched compute". The final point when `flops` is None."""
    pts = (res or {}).get("points") or []
    if not pts or flops is None:
        return _final_metric(res, split)
    p = min(pts, key=lambda p: (abs(p.get("flops", 0.0) - flops), -p.get("step", 0)))
    return _point_metric(p, split)


# "matched KL" needs a point that moved about as far: within this factor of the other model's KL
KL_MATCH_FACTOR = 2.0


def _nearest_kl_point(res: dict | None, kl: float | None) -> dict | None:
    """The evaluated point of `res` whose KL to the start is nearest `kl` (None without drift records)."""
    pts = [p for p in (res or {}).get("points") or [] if p.get("drift")]
    if kl is None or not pts:
        return None
    return min(pts, key=lambda p: (abs(p["drift"]["kl"] - kl), -p.get("step", 0)))


def _within_kl_factor(kl: float, point: dict) -> bool:
    """Whether `point` moved about as far as `kl`: within KL_MATCH_FACTOR (both near 0 count as matched)."""
    lo, hi = sorted((max(kl, 0.0), max(point["drift"]["kl"], 0.0)))
    return hi <= KL_MATCH_FACTOR * lo or hi < 1e-3


def _kl_matched_point(res: dict | None, kl: float | None) -> dict | None:
    """`_nearest_kl_point`, if it lies within KL_MATCH_FACTOR of `kl`; None otherwise: a comparison "at
    matched KL" with a point that moved 8x as far would be the confound it exists to remove."""
    p = _nearest_kl_point(res, kl)
    return p if p is not None and _within_kl_factor(kl, p) else None


def _final_flops(res: dict | None) -> float | None:
    pts = (res or {}).get("points") or []
    return pts[-1].get("flops") if pts else None


def values(run: dict, stage: str, split: str) -> list[float]:
    """Final success of `stage` on `split`, one value per seed that has it."""
    out = []
    for seed in sorted(run["results"], key=int):
        r = run["results"][seed].get(stage)
        v = _final(r, split) if r else None
        if v is not None:
            out.append(v)
    return out


def _mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return (math.nan, math.nan)
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def _fmt(m: float, sd: float, n: int, pct: bool = True, signed: bool = False) -> str:
    if math.isnan(m):
        return "–"
    scale = 100 if pct else 1
    s = f"{m * scale:+.1f}" if signed else f"{m * scale:.1f}"
    if n > 1:
        s += f" ± {sd * scale:.1f}"
    return s + ("%" if pct else "")


def _splits(spec) -> dict[str, str]:
    if isinstance(spec, dict):
        return dict(spec)
    return {s: s for s in (spec or [])}


# ----------------------------------------------------------------------------- tables


def final_tables(run: dict) -> list[dict]:
    """[{title, header, rows: [[label, cells...]]}] of final success (mean ± std over seeds)."""
    rep = run["study"].get("report") or {}
    tables = []
    specs = rep.get("tables")
    if not specs:  # default: every eval stage x its splits
        evals = [s for s in run["stages"] if any("points" in (seed.get(s) or {}) for seed in run["results"].values())]
        splits = []
        for seed in run["results"].values():
            for s in evals:
                for sp in (seed.get(s) or {}).get("splits", []):
                    if sp not in splits:
                        splits.append(sp)
        specs = [{"title": "final success", "rows": {s: s for s in evals}, "splits": splits}]
    for t in specs:
        cols = _splits(t.get("splits"))
        rows = []
        for label, stage in (t.get("rows") or {}).items():
            if stage not in run["stages"]:
                continue
            cells = []
            for col, split in cols.items():
                xs = values(run, stage, split)
                # percent by default; `percent: false` for tables of other quantities (KL in nats, distances)
                cells.append(_fmt(*_mean_std(xs), len(xs)) if t.get("percent", True) else _fmt_number(xs))
            rows.append([label, *cells])
        # a column no row has a value for (a diagnostic of another answer style) is left out, and
        # so is a table whose stages this preset does not run (e.g. navigation in the demo)
        keep = [i for i in range(len(cols)) if any(r[1 + i] != "–" for r in rows)]
        if rows and keep:
            tables.append({"title": t.get("title", ""), "header": ["", *(list(cols)[i] for i in keep)],
                           "rows": [[r[0], *(r[1 + i] for i in keep)] for r in rows]})
    return tables


def delta_tables(run: dict) -> list[dict]:
    rep = run["study"].get("report") or {}
    out = []
    for t in rep.get("deltas") or []:
        # a column is a stage (change from the table's baseline) or a pair [stage, baseline] with
        # its own baseline (e.g. each SFT amount's RL gain: [post-RL eval, pre-RL eval])
        cols = {c: list(st) if isinstance(st, (list, tuple)) else [st, t.get("baseline")]
                for c, st in (t.get("columns") or {}).items()}
        cols = {c: pair for c, pair in cols.items() if all(s in run["stages"] for s in pair)}
        if not cols:
            continue
        rows = []
        for label, split in _splits(t.get("rows")).items():
            cells = []
            for col, (stage, base) in cols.items():
                d = _paired(run, stage, base, split)
                cells.append(_fmt(*_mean_std(d), len(d), signed=True))
            rows.append([label, *cells])
        out.append({"title": t.get("title", "change from baseline"), "header": ["", *cols], "rows": rows,
                    "paper": t.get("paper")})
    return out


def _side_b(run: dict, seed: str, a: str, b: str, split: str, match: str | None) -> tuple[float | None, list | None]:
    """`b`'s metric for a comparison with `a`: its final point; with match "compute" its point
    nearest `a`'s final training compute; with match "kl" its point whose KL to the start is
    nearest `a`'s final KL (both continuations must start from the same checkpoint)."""
    res_a = run["results"][seed].get(a)
    if match == "kl":
        kl = _final_metric(res_a, "drift:kl")[0]
        point = _kl_matched_point(run["results"][seed].get(b), kl)
        return _point_metric(point, split) if point is not None else (None, None)
    flops = _final_flops(res_a) if match == "compute" else None
    return _matched_metric(run["results"][seed].get(b), split, flops)


def _paired(run: dict, a: str, b: str, split: str, split_b: str | None = None, match: str | None = None) -> list[float]:
    """Per seed: final(a, split) - final(b, split_b) (b at a's compute or KL with `match`)."""
    out = []
    for seed in sorted(run["results"], key=int):
        va = _final_metric(run["results"][seed].get(a), split)[0]
        vb = _side_b(run, seed, a, b, split_b or split, match)[0]
        if va is not None and vb is not None:
            out.append(va - vb)
    return out


def paired_problem_outcomes(run: dict, a: str, b: str, split: str, split_b: str | None = None,
                            match: str | None = None) -> tuple[list, list]:
    """Per-problem values of final(a) and final(b), aligned and pooled over seeds, where both
    sides were evaluated on the same problems (eval results with per-problem values); ([], [])
    otherwise. Problems where either side has no value (a diagnostic with no verdict) are left out.
    With `match` ("compute" or "kl"), b's values are those of its point nearest a's final compute or KL."""
    xs: list[float] = []
    ys: list[float] = []
    for seed in sorted(run["results"], key=int):
        pa = _final_metric(run["results"][seed].get(a), split)[1]
        pb = _side_b(run, seed, a, b, split_b or split, match)[1]
        if pa is None or pb is None or len(pa) != len(pb):
            return [], []
        pairs = [(x, y) for x, y in zip(pa, pb) if x is not None and y is not None]
        xs += [x for x, _ in pairs]
        ys += [y for _, y in pairs]
    return xs, ys


def _expected(expect: str):
    """The predicate a finding's value must satisfy: > 0, < 0, or >= a threshold."""
    if expect == "positive":
        return lambda x: x > 0
    if expect == "negative":
        return lambda x: x < 0
    return lambda x: x >= float(expect)


def _verdict(mean: float, ci: tuple[float, float] | None, expect: str, agree: int, n: int) -> str:
    """'yes' when the direction holds and the 95% CI of the paired difference excludes 0 on that
    side; 'direction only' when the mean points the right way but the CI includes 0 (noise can
    explain it); 'no' otherwise."""
    ok = _expected(expect)
    if not (ok(mean) and agree > n / 2):
        return "no"
    if ci is None or expect not in ("positive", "negative"):
        return "yes"
    return "yes" if ok(ci[0]) and ok(ci[1]) else "direction only (95% CI includes 0)"


def _gain_diff(run: dict, spec, split: str) -> tuple[list[float], tuple[list, list]]:
    """(per seed, per-problem pairs) of (a - a0) - (b - b0) for spec [[a, a0], [b, b0]]: a
    difference of two gains, e.g. RL gain after 16x SFT minus RL gain after 1x SFT. All four
    models see the same problems, so the per-problem gains pair up for the bootstrap."""
    (a, a0), (b, b0) = spec
    per_seed = []
    for seed in sorted(run["results"], key=int):
        vals = [_final(run["results"][seed].get(s), split) for s in (a, a0, b, b0)]
        if None not in vals:
            per_seed.append((vals[0] - vals[1]) - (vals[2] - vals[3]))
    xa, ya = paired_problem_outcomes(run, a, a0, split)
    xb, yb = paired_problem_outcomes(run, b, b0, split)
    if not xa or len(xa) != len(xb):
        return per_seed, ([], [])
    return per_seed, ([x - y for x, y in zip(xa, ya)], [x - y for x, y in zip(xb, yb)])


def findings(run: dict) -> list[dict]:
    rep = run["study"].get("report") or {}
    out = []
    for f in rep.get("findings") or []:
        m = f.get("metric") or {}
        pairs: tuple[list, list] = ([], [])
        if "delta" in m:
            per_seed = _paired(run, m["delta"][0], m["delta"][1], m["split"])
            pairs = paired_problem_outcomes(run, m["delta"][0], m["delta"][1], m["split"])
        elif "diff" in m:
            (a, sa), (b, sb) = m["diff"]
            match = "kl" if m.get("match_kl") else "compute" if m.get("match_compute") else None
            per_seed = _paired(run, a, b, sa, sb, match)
            pairs = paired_problem_outcomes(run, a, b, sa, sb, match)
        elif "gain_diff" in m:
            per_seed, pairs = _gain_diff(run, m["gain_diff"], m["split"])
        elif "value" in m:
            per_seed = values(run, *m["value"])
            # a value's CI resamples its problems pooled over seeds (the "paired" CI of value - 0); a
            # shared stage (one result for every seed, same hash) counts its problems once
            pooled, seen = [], set()
            for seed in sorted(run["results"], key=int):
                res = run["results"][seed].get(m["value"][0])
                if res is None or (res.get("hash") is not None and res["hash"] in seen):
                    continue
                seen.add(res.get("hash"))
                pooled += [x for x in (_final_metric(res, m["value"][1])[1] or []) if x is not None]
            pairs = (pooled, [0.0] * len(pooled))
        else:
            raise ValueError(f"report.findings: metric needs 'delta', 'diff', 'gain_diff' or 'value': {m}")
        mean, sd = _mean_std(per_seed)
        expect = f.get("expect", "positive")
        ci = None
        if pairs[0]:
            c = paired_difference_ci(*pairs)
            ci = (c["ci_low"], c["ci_high"])
        matched = _kl_matches(run, m) if m.get("match_kl") else None
        if not per_seed:
            verdict, agree = "not run", 0
            if matched:
                verdict = (f"not comparable: no point of {m['diff'][1][0]} within {KL_MATCH_FACTOR:g}x of "
                           f"{m['diff'][0][0]}'s KL")
        else:
            agree = sum(map(_expected(expect), per_seed))
            verdict = _verdict(mean, ci, expect, agree, len(per_seed))
        signed = "value" not in m
        measured = _fmt(mean, sd, len(per_seed), signed=signed)
        if matched:  # which points were compared: KL of a's final point, and b's nearest point
            measured += " (KL " + "; ".join(
                f"{x['a_kl']:.2f} vs {x['b_kl']:.2f} at step {x['b_step']}" if x["b_kl"] is not None else "n/a"
                for x in matched) + ")"
        out.append({"claim": f["claim"], "paper": str(f.get("paper", "")), "expect": expect,
                    "measured": measured, "mean": mean, "seeds": len(per_seed),
                    "ci": ci, "seeds_agree": agree, "reproduced": verdict, "matched_kl": matched})
    return out


def _kl_matches(run: dict, m: dict) -> list[dict]:
    """Per seed of a `match_kl` finding: a's final KL, and b's nearest evaluated point (its step and KL,
    whether or not it lies within KL_MATCH_FACTOR)."""
    (a, _), (b, _) = m["diff"]
    out = []
    for seed in sorted(run["results"], key=int):
        kl = _final_metric(run["results"][seed].get(a), "drift:kl")[0]
        p = _nearest_kl_point(run["results"][seed].get(b), kl)
        if p is not None:
            out.append({"seed": seed, "a_kl": kl, "b_kl": p["drift"]["kl"], "b_step": p.get("step"),
                        "within": _within_kl_factor(kl, p)})
    return out


def compute_table(run: dict) -> dict:
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


# ----------------------------------------------------------------------------- plots


def curve_data(run: dict, spec: dict, split: str) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """label -> (FLOPs, mean success, std) along training, averaged over seeds by point index."""
    out = {}
    base_vals = values(run, spec["baseline"], split) if spec.get("baseline") else []
    for label, stage in (spec.get("series") or {}).items():
        per_seed = [r[stage]["points"] for r in run["results"].values() if r.get(stage)]
        if not per_seed:
            continue
        n = min(len(p) for p in per_seed)
        xs, ms, sds = [], [], []
        if base_vals:
            m, sd = _mean_std(base_vals)
            xs.append(0.0), ms.append(m), sds.append(sd)
        for i in range(n):
            pts = [(p[i], v) for p in per_seed if (v := _point_metric(p[i], split)[0]) is not None]
            if not pts:
                continue
            xs.append(sum(p["flops"] for p, _ in pts) / len(pts))
            m, sd = _mean_std([v for _, v in pts])
            ms.append(m), sds.append(sd)
        out[label] = (xs, ms, sds)
    return out


def plot_curves(run: dict) -> list[tuple[str, bytes]]:
    """PNG bytes of each `curves` figure: success vs compute, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = run["study"].get("report") or {}
    figs = []
    for spec in rep.get("curves") or []:
        splits = _splits(spec.get("splits"))
        fig, axes = plt.subplots(1, max(1, len(splits)), figsize=(4.2 * max(1, len(splits)), 3.4), squeeze=False)
        any_data = False
        for ax, (title, split) in zip(axes[0], splits.items()):
            for label, (xs, ms, sds) in curve_data(run, spec, split).items():
                any_data = True
                ax.plot(xs, [100 * m for m in ms], marker="o", label=label)
                ax.fill_between(xs, [100 * (m - s) for m, s in zip(ms, sds)], [100 * (m + s) for m, s in zip(ms, sds)],
                                alpha=0.15)
            ax.set_title(title)
            ax.set_xlabel("training compute (FLOPs)")
            ax.set_ylabel("% of first answers" if ":" in split else "success (%)")
            ax.grid(alpha=0.3)
        if not any_data:  # a figure of stages the preset does not run is left out, like its tables
            plt.close(fig)
            continue
        axes[0][0].legend()
        fig.suptitle(spec.get("title", ""))
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        figs.append((spec.get("title", "curves"), buf.getvalue()))
    return figs


# ----------------------------------------------------------------------------- diagnostics


def diagnostic_values(run: dict, row: str, column: str) -> list[float]:
    """One number of a `diagnose` stage's result, one value per seed that has it. `row` is the
    stage name (the diagnosed checkpoint) or ``STAGE:base`` (the base it was compared with);
    `column` is ``drift`` (total relative parameter drift; 0 for the base) or ``SPLIT:KEY``, KEY
    a per-split summary key (postlab.studies.kinds.DIAGNOSTIC_SUMMARY_KEYS or entropy_gap_mean)."""
    stage, _, who = row.partition(":")
    out = []
    for seed in sorted(run["results"], key=int):
        diag = (run["results"][seed].get(stage) or {}).get("diagnostics")
        if not diag:
            continue
        if column == "drift":
            v = 0.0 if who == "base" else diag.get("drift")
        else:
            split, _, key = column.partition(":")
            v = (diag.get("base" if who == "base" else "per_split") or {}).get(split, {}).get(key)
        if v is not None:
            out.append(float(v))
    return out


def _fmt_number(xs: list[float]) -> str:
    """Mean (± std over seeds) with 3 significant digits: diagnostics span 1e-3 to 1e2."""
    if not xs:
        return "–"
    m, sd = _mean_std(xs)
    return f"{m:.3g}" + (f" ± {sd:.2g}" if len(xs) > 1 else "")


def _diagnostic_specs(run: dict) -> list[dict]:
    """The report's diagnostics tables, each with the rows whose stage this preset runs."""
    out = []
    for t in (run["study"].get("report") or {}).get("diagnostics") or []:
        rows = {label: row for label, row in (t.get("rows") or {}).items() if row.partition(":")[0] in run["stages"]}
        if rows:
            out.append({**t, "rows": rows, "columns": _splits(t.get("columns"))})
    return out


def diagnostics_tables(run: dict) -> list[dict]:
    """[{title, header, rows}] of diagnose stages' numbers (mean ± std over seeds)."""
    return [{"title": t.get("title", "diagnostics"), "header": ["", *t["columns"]],
             "rows": [[label, *[_fmt_number(diagnostic_values(run, row, col)) for col in t["columns"].values()]]
                      for label, row in t["rows"].items()]}
            for t in _diagnostic_specs(run)]


# ----------------------------------------------------------------------------- training dynamics

DYNAMICS_WINDOWS = ("first", "last", "all", "end")


def dynamics_values(run: dict, stage: str, column: str) -> list[float]:
    """One number per seed from a training stage's metrics.jsonl (its train rows). `column` is
    ``KEY@WINDOW``: the mean of KEY over the first or last quarter of the steps, over all of them,
    or its value at the last step (``end``, e.g. reward_slope, already a running statistic)."""
    key, _, window = column.partition("@")
    if window not in DYNAMICS_WINDOWS:
        raise ValueError(f"report.dynamics column {column!r}: the window after '@' must be one of "
                         f"{', '.join(DYNAMICS_WINDOWS)}")
    out = []
    for seed in sorted(run["results"], key=int):
        rel = run["dirs"].get(seed, {}).get(stage)
        path = Path(run["root"]) / rel / "run" / "metrics.jsonl" if rel else None
        if stage not in run["results"][seed] or path is None or not path.exists():
            continue
        rows = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "train" and key in r]
        if not rows:
            continue
        q = max(1, len(rows) // 4)
        picked = {"first": rows[:q], "last": rows[-q:], "all": rows, "end": rows[-1:]}[window]
        out.append(sum(float(r[key]) for r in picked) / len(picked))
    return out


def dynamics_tables(run: dict) -> list[dict]:
    """[{title, header, rows}] of `report.dynamics`: training-time metrics of trainer stages (mean ± std over seeds)."""
    out = []
    for t in (run["study"].get("report") or {}).get("dynamics") or []:
        rows = {label: st for label, st in (t.get("rows") or {}).items() if st in run["stages"]}
        if rows:
            cols = t.get("columns") or {}
            out.append({"title": t.get("title", "training dynamics"), "header": ["", *cols], "paper": t.get("paper"),
                        "rows": [[label, *[_fmt_number(dynamics_values(run, st, c)) for c in cols.values()]]
                                 for label, st in rows.items()]})
    return out


def plot_diagnostics(run: dict) -> list[tuple[str, bytes]]:
    """PNG bytes of each diagnostics table with `plot: true`: one panel per column, the rows
    (e.g. SFT amounts) along the x axis, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    for t in _diagnostic_specs(run):
        if not t.get("plot"):
            continue
        cols = t["columns"]
        fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.2), squeeze=False)
        for ax, (title, col) in zip(axes[0], cols.items()):
            stats = [_mean_std(diagnostic_values(run, row, col)) for row in t["rows"].values()]
            ax.errorbar(range(len(stats)), [m for m, _ in stats], yerr=[sd for _, sd in stats], marker="o", capsize=3)
            ax.set_xticks(range(len(stats)), list(t["rows"]), rotation=30, ha="right", fontsize=7)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
        fig.suptitle(t.get("title", ""))
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        figs.append((t.get("title", "diagnostics"), buf.getvalue()))
    return figs


# ----------------------------------------------------------------------------- rendering


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
        return f"[{f['ci'][0] * 100:+.1f}, {f['ci'][1] * 100:+.1f}]" if f.get("ci") else "–"

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


# How each recorded environment key (postlab.runinfo.environment) is labelled; others keep their key.
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
.verdict-direction{color:#8a5a00}.verdict-none{color:#777}"""


def _figure_section(md: list, h: list, fig_dir: Path, title: str, stem: str, pngs: list) -> None:
    """A section of figures: PNG files beside report.md, embedded (base64) in report.html."""
    if not pngs:
        return
    md += [f"## {title}", ""]
    h.append(f"<h2>{html.escape(title)}</h2>")
    for i, (name, png) in enumerate(pngs):
        f = fig_dir / f"{stem}_{i}.png"
        f.write_bytes(png)
        md.append(f"![{name}](report_files/{f.name})\n")
        h.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,"
                 f"{base64.b64encode(png).decode()}'><figcaption>{html.escape(name)}</figcaption></figure>")


def probe_tables(run: dict) -> list[dict]:
    """One table per `rl-probe` stage and seed: every probed setting, its training success against the
    frozen checkpoint on the same problems, the gain with its CI, and which setting was chosen (or skip)."""
    out = []
    for stage, info in run.get("stages", {}).items():
        if info.get("kind") != "rl-probe":
            continue
        for seed in sorted(run["results"], key=int):
            res = run["results"][seed].get(stage)
            if not res or not res.get("probes"):
                continue
            rows = []
            for p in res["probes"]:
                setting = ", ".join(f"{k}={v}" for k, v in p["setting"].items())
                lo, hi = p["gain_ci"]
                rows.append([setting, p["sequences_per_step"], f"{100 * p['on_policy_success']:.1f}%",
                             f"{100 * p['frozen_success']:.1f}%", f"{100 * p['gain']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                             f"{100 * p['frozen_groups_solved']:.0f}%", "chosen" if p["setting"] == res.get("chosen") else ""])
            choice = "skip RL" if res.get("skip") else "chosen"
            out.append({"title": f"RL budget probe {stage}, seed {seed}: {res['steps']} steps per setting, last "
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


def build_report(root: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md (+ PNGs in report_files/) into the run dir."""
    run = load_run(root)
    out = Path(out_dir or root)
    out.mkdir(parents=True, exist_ok=True)
    tables, deltas, fs = final_tables(run), delta_tables(run), findings(run)
    diags = diagnostics_tables(run) + dynamics_tables(run) + probe_tables(run)
    comp = compute_table(run)
    figs, diag_figs = plot_curves(run), plot_diagnostics(run)
    study = run["study"]
    title = f"postlab study {run['name']} — preset {run['preset']}, seeds {run['seeds']}"
    fig_dir = out / "report_files"
    fig_dir.mkdir(exist_ok=True)
    md = [f"# {title}", "", study.get("description", "").strip(), "", f"Paper: {study.get('paper', '')}", "",
          f"Command: `postlab study {run['name']} --preset {run['preset']} --seeds {len(run['seeds'])}`", ""]
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style>"
         f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(study.get('description', ''))}</p>"
         f"<p>Paper: {html.escape(str(study.get('paper', '')))}</p>"]
    if fs:
        ft = _findings_table(fs)
        md += ["## Findings", "", _md_table(ft)]
        h.append(_findings_html(fs))
    md += ["## Results", ""]
    h.append("<h2>Results</h2>")
    for t in tables + deltas + diags:
        md.append(_md_table(t))
        h.append(_html_table(t))
        if t.get("paper"):
            md.append(f"Paper: {t['paper']}\n")
            h.append(f"<p>Paper: {html.escape(str(t['paper']))}</p>")
    for title, stem, pngs in (("Success vs compute", "curves", figs), ("Diagnostics", "diagnostics", diag_figs)):
        _figure_section(md, h, fig_dir, title, stem, pngs)
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
    """The final and delta tables as rich Tables (what `postlab study` prints)."""
    from rich.table import Table

    run = load_run(root)
    out = []
    measured = [f for f in findings(run) if f["reproduced"] != "not run"]  # the report lists the others
    for t in final_tables(run) + delta_tables(run) + diagnostics_tables(run) + \
            ([_findings_table(measured)] if measured else []):
        table = Table(title=t["title"])
        for i, col in enumerate(t["header"]):
            table.add_column(str(col), justify="left" if i == 0 else "right")
        for row in t["rows"]:
            table.add_row(*[str(c) for c in row])
        out.append(table)
    return out
