"""The numbers of a study report's findings: per-seed differences between stages (at their final
points, or at matched training compute or matched KL to a shared start), paired bootstrap CIs over
problems x seeds, and the verdict whether the paper's direction reproduced. Also the mean ± std
formatting the tables share.
"""

from __future__ import annotations

import math

from postlab.eval.metrics import paired_difference_ci
from postlab.studies.report_data import final_metric, final_value, point_metric, values
from postlab.studies.report_schema import check_run_reads

# "matched KL" needs a point that moved about as far: within this factor of the other model's KL; "matched
# compute" one that trained about as much: within this factor of its FLOPs
MATCH_FACTOR = 2.0


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for one seed, NaN for none)."""
    if not xs:
        return (math.nan, math.nan)
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def format_mean_std(m: float, sd: float, n: int, pct: bool = True, signed: bool = False) -> str:
    """``12.3 ± 1.2%`` (percent points of a fraction; ``pct=False`` for other numbers); '–' for no value."""
    if math.isnan(m):
        return "–"
    scale = 100 if pct else 1
    s = f"{m * scale:+.1f}" if signed else f"{m * scale:.1f}"
    if n > 1:
        s += f" ± {sd * scale:.1f}"
    return s + ("%" if pct else "")


def format_number(xs: list[float]) -> str:
    """Mean (± std over seeds) with 3 significant digits: diagnostics span 1e-3 to 1e2."""
    if not xs:
        return "–"
    m, sd = mean_std(xs)
    return f"{m:.3g}" + (f" ± {sd:.2g}" if len(xs) > 1 else "")


# what a point is matched on ("at matched KL" / "at matched compute"), and how it is named in a report
MATCHES = {"kl": "KL", "compute": "training compute"}


def _match_value(point: dict, match: str) -> float | None:
    """The point's KL to the start ("kl") or its training FLOPs ("compute"); None where it has none."""
    if match == "kl":
        return (point.get("drift") or {}).get("kl")
    return point.get("flops")


def _final_match_value(res: dict | None, match: str) -> float | None:
    pts = (res or {}).get("points") or []
    return _match_value(pts[-1], match) if pts else None


def _nearest_point(res: dict | None, target: float | None, match: str) -> dict | None:
    """The evaluated point of `res` whose KL (or training compute) is nearest `target`; the later on a tie."""
    pts = [p for p in (res or {}).get("points") or [] if _match_value(p, match) is not None]
    if target is None or not pts:
        return None
    return min(pts, key=lambda p: (abs(_match_value(p, match) - target), -p.get("step", 0)))


def _within_factor(target: float, point: dict, match: str) -> bool:
    """Whether `point` moved (or trained) about as much as `target`: within MATCH_FACTOR (both near 0
    count as matched)."""
    lo, hi = sorted((max(target, 0.0), max(_match_value(point, match), 0.0)))
    return hi <= MATCH_FACTOR * lo or hi < (1e-3 if match == "kl" else 1.0)


def _matched_point(res: dict | None, target: float | None, match: str) -> dict | None:
    """`_nearest_point`, if it lies within MATCH_FACTOR of `target`; None otherwise: a comparison "at
    matched KL" with a point that moved 8x as far (or "at matched compute" with one that trained 8x less)
    would be the confound it exists to remove."""
    p = _nearest_point(res, target, match)
    return p if p is not None and _within_factor(target, p, match) else None


def _side_b(run: dict, seed: str, a: str, b: str, split: str, match: str | None) -> tuple[float | None, list | None]:
    """`b`'s metric for a comparison with `a`: its final point; with match "compute" its point
    within MATCH_FACTOR of `a`'s final training compute (nearest), with "kl" its point whose KL to
    the start is nearest `a`'s final KL (both continuations from the same checkpoint); (None, None) where
    `b` has no such point."""
    res_b = run["results"][seed].get(b)
    if match is None:
        return final_metric(res_b, split)
    point = _matched_point(res_b, _final_match_value(run["results"][seed].get(a), match), match)
    return point_metric(point, split) if point is not None else (None, None)


def paired_differences(run: dict, a: str, b: str, split: str, split_b: str | None = None, match: str | None = None) -> list[float]:
    """Per seed: final(a, split) - final(b, split_b) (b at a's compute or KL with `match`)."""
    out = []
    for seed in sorted(run["results"], key=int):
        va = final_metric(run["results"][seed].get(a), split)[0]
        vb = _side_b(run, seed, a, b, split_b or split, match)[0]
        if va is not None and vb is not None:
            out.append(va - vb)
    return out


def paired_problem_outcomes(run: dict, a: str, b: str, split: str, split_b: str | None = None,
                            match: str | None = None) -> tuple[list, list]:
    """Per-problem values of final(a) and final(b), aligned and pooled over seeds, where both
    sides were evaluated on the same problems (eval results with per-problem values); ([], [])
    otherwise. Problems where either side has no value (a diagnostic with no verdict) are left out,
    and so are seeds where either side has not run (a study still running: the CI is over the seeds
    its per-seed values come from). With `match` ("compute" or "kl"), b's values are those of its point
    nearest a's final compute or KL."""
    xs: list[float] = []
    ys: list[float] = []
    for seed in sorted(run["results"], key=int):
        pa = final_metric(run["results"][seed].get(a), split)[1]
        pb = _side_b(run, seed, a, b, split_b or split, match)[1]
        if pa is None or pb is None:
            continue
        if len(pa) != len(pb):  # not the same problems: no paired CI
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
        vals = [final_value(run["results"][seed].get(s), split) for s in (a, a0, b, b0)]
        if None not in vals:
            per_seed.append((vals[0] - vals[1]) - (vals[2] - vals[3]))
    xa, ya = paired_problem_outcomes(run, a, a0, split)
    xb, yb = paired_problem_outcomes(run, b, b0, split)
    if not xa or len(xa) != len(xb):
        return per_seed, ([], [])
    return per_seed, ([x - y for x, y in zip(xa, ya)], [x - y for x, y in zip(xb, yb)])


def findings(run: dict) -> list[dict]:
    """Each `report.findings` item measured on the run: per-seed values, their mean, a paired
    bootstrap CI over problems x seeds, and whether the paper's direction reproduced."""
    rep = run["study"].get("report") or {}
    check_run_reads(run, "findings")
    out = []
    for f in rep.get("findings") or []:
        m = f.get("metric") or {}
        pairs: tuple[list, list] = ([], [])
        if "delta" in m:
            per_seed = paired_differences(run, m["delta"][0], m["delta"][1], m["split"])
            pairs = paired_problem_outcomes(run, m["delta"][0], m["delta"][1], m["split"])
        elif "diff" in m:
            (a, sa), (b, sb) = m["diff"]
            match = "kl" if m.get("match_kl") else "compute" if m.get("match_compute") else None
            per_seed = paired_differences(run, a, b, sa, sb, match)
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
                pooled += [x for x in (final_metric(res, m["value"][1])[1] or []) if x is not None]
            pairs = (pooled, [0.0] * len(pooled))
        else:
            raise ValueError(f"report.findings: metric needs 'delta', 'diff', 'gain_diff' or 'value': {m}")
        mean, sd = mean_std(per_seed)
        expect = f.get("expect", "positive")
        ci = None
        if pairs[0]:
            c = paired_difference_ci(*pairs)
            ci = (c["ci_low"], c["ci_high"])
        by = "kl" if m.get("match_kl") else "compute" if m.get("match_compute") else None
        matched = _matches(run, m, by) if by and "diff" in m else None
        if not per_seed:
            verdict, agree = "not run", 0
            if matched:
                verdict = (f"not comparable: no point of {m['diff'][1][0]} within {MATCH_FACTOR:g}x of "
                           f"{m['diff'][0][0]}'s {MATCHES[by]}")
        else:
            agree = sum(map(_expected(expect), per_seed))
            verdict = _verdict(mean, ci, expect, agree, len(per_seed))
        signed = "value" not in m
        # success rates and fractions in percent points; drift (KL, NLL, distances) in its own units
        splits = [m.get("split")] + [s for _, s in m.get("diff") or []] + ([m["value"][1]] if "value" in m else [])
        percent = not any(str(s).startswith("drift:") for s in splits if s)
        if percent or not per_seed:
            measured = format_mean_std(mean, sd, len(per_seed), signed=signed)
        else:
            measured = f"{mean:+.3g}" + (f" ± {sd:.2g}" if len(per_seed) > 1 else "")
        if matched:  # which points were compared: a's final KL (or FLOPs), and b's nearest point
            fmt = "{:.2f}" if by == "kl" else "{:.2g}"
            measured += (" (KL " if by == "kl" else " (FLOPs ") + "; ".join(
                f"{fmt.format(x['a'])} vs {fmt.format(x['b'])} at step {x['b_step']}" for x in matched) + ")"
        out.append({"claim": f["claim"], "paper": str(f.get("paper", "")), "expect": expect, "percent": percent,
                    "measured": measured, "mean": mean, "seeds": len(per_seed),
                    "ci": ci, "seeds_agree": agree, "reproduced": verdict, "matched": matched, "matched_on": by})
    return out


def _matches(run: dict, m: dict, match: str) -> list[dict]:
    """Per seed of a `match_kl` / `match_compute` finding: a's final KL (or FLOPs), and b's nearest evaluated
    point (its step and value, whether or not it lies within MATCH_FACTOR)."""
    (a, _), (b, _) = m["diff"]
    out = []
    for seed in sorted(run["results"], key=int):
        target = _final_match_value(run["results"][seed].get(a), match)
        p = _nearest_point(run["results"][seed].get(b), target, match)
        if p is not None:
            out.append({"seed": seed, "a": target, "b": _match_value(p, match), "b_step": p.get("step"),
                        "within": _within_factor(target, p, match)})
    return out
