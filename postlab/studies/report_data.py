"""What a study report reads: a run directory's manifest and stage results (`load_run`), and one
number of a stage's result: a split's success or another metric of it (`split_metric`, the
reference syntax of postlab.studies.report_schema), per point, per seed (`values`), of a diagnose
stage (`diagnostic_values`) or of a training stage's metrics (`dynamics_values`).
"""

from __future__ import annotations

import json
from pathlib import Path

from postlab.eval.drift import DRIFT_KEYS, DRIFT_PER_PROBLEM
from postlab.eval.metrics import pass_at_k
from postlab.studies.report_schema import DYNAMICS_WINDOWS


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
    unsolved_by = ((manifest.get("study") or {}).get("report") or {}).get("unsolved_by")
    if unsolved_by:
        mark_unsolved(manifest, unsolved_by)
    return manifest


def unfinished_seeds(run: dict) -> dict[int, tuple[int, int]]:
    """Seeds some of whose stages have no result yet: {seed: (stages done, stages declared)}. A study
    spread over processes (`--only-seed`) or interrupted is reported from what finished, and says so."""
    out = {}
    for seed, dirs in run["dirs"].items():
        done = len(run["results"].get(seed, {}))
        if done < len(dirs):
            out[int(seed)] = (done, len(dirs))
    return out


def mark_unsolved(run: dict, stage: str) -> None:
    """Give every evaluated point of each seed the mask of the problems `stage` (the reference, e.g. the
    warm-up's evaluation) solved in none of its N samples: pass@N = 0 on ``SPLIT@sampled`` of its final
    point. ``SPLIT:unsolved`` and ``SPLIT@sampled:unsolved`` then read success on those problems only, the
    problems where LUFFY and UFT claim their gains (imitation reaches answers the policy never samples).
    Every stage of a seed evaluates the same problems in the same order, so one mask fits all; a split the
    reference did not sample has no mask, and its ``:unsolved`` reads nothing."""
    for res in run["results"].values():
        points = (res.get(stage) or {}).get("points") or []
        if not points:
            continue
        masks = {key.partition("@")[0]: [f == 0 for f in r["per_problem"]]
                 for key, r in points[-1]["results"].items()
                 if key.endswith("@sampled") and r.get("per_problem") is not None}
        for result in res.values():
            for point in (result or {}).get("points") or []:
                for key, r in point["results"].items():
                    mask = masks.get(key.partition("@")[0])
                    if mask is not None and len(mask) == len(r.get("per_problem") or []):
                        r["unsolved_mask"] = mask


def split_metric(results: dict, split: str) -> tuple[float | None, list | None]:
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
    if diag in ("unsolved", "unsolved_share"):
        return _unsolved(r, diag)
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


def _unsolved(r: dict, diag: str) -> tuple[float | None, list | None]:
    """Success on the problems the reference never solved (`mark_unsolved`), or their share of the split."""
    mask, per_problem = r.get("unsolved_mask"), r.get("per_problem")
    if mask is None or per_problem is None:
        return None, None
    if diag == "unsolved_share":
        return sum(mask) / len(mask), None
    subset = [x for x, hard in zip(per_problem, mask) if hard]  # Nones kept: paired findings align by position
    seen = [x for x in subset if x is not None]
    return (sum(seen) / len(seen), subset) if seen else (None, None)


def _pass_at(r: dict, k: int) -> tuple[float | None, list | None]:
    """Unbiased pass@k per problem from a sampled result's per-problem success fractions and n."""
    n = int(r.get("n_samples") or 1)
    if r.get("decoding") != "sampled" or not 1 <= k <= n or r.get("per_problem") is None:
        return None, None
    per_problem = [pass_at_k(n, round(f * n), k) for f in r["per_problem"]]
    return sum(per_problem) / len(per_problem), per_problem


def point_metric(point: dict, split: str) -> tuple[float | None, list | None]:
    """`_metric` of one evaluated point; ``drift:KEY`` reads its drift from the start instead
    (``drift:kl``: KL(start || model) in nats per sequence, per problem; ``drift:corpus_nll_increase``: the
    held-out base corpus's NLL per token minus the start's, per item; ``drift:param_distance``...)."""
    name, _, key = split.partition(":")
    if name == "drift":
        d = point.get("drift")
        if d is None or key not in DRIFT_KEYS or d.get(key) is None:
            return None, None
        return d[key], (d.get(DRIFT_PER_PROBLEM[key]) if key in DRIFT_PER_PROBLEM else None)
    return split_metric(point["results"], split)


def final_metric(res: dict | None, split: str) -> tuple[float | None, list | None]:
    """`_metric` of a stage's last evaluated point (None, None when it has none)."""
    pts = (res or {}).get("points") or []
    return point_metric(pts[-1], split) if pts else (None, None)


def final_value(res: dict, split: str) -> float | None:
    """`final_metric`'s value alone."""
    return final_metric(res, split)[0]


def values(run: dict, stage: str, split: str) -> list[float]:
    """Final success of `stage` on `split`, one value per seed that has it."""
    out = []
    for seed in sorted(run["results"], key=int):
        r = run["results"][seed].get(stage)
        v = final_value(r, split) if r else None
        if v is not None:
            out.append(v)
    return out


def scatter_points(run: dict, spec: dict) -> dict[str, list[tuple[float, float]]]:
    """label -> one (x, y) per seed that has both of a `scatter` item: each axis is its split's final
    value for the point's stage (x from the first and y from the second of a pair [X_STAGE, Y_STAGE]),
    minus the same seed's `change_from` stage where the axis names one (e.g. y = ID gain over the
    warm-up, x = KL to the warm-up, or the change on an earlier task evaluated by another stage)."""
    from postlab.studies.report_schema import scatter_axis

    axes = [scatter_axis(spec.get(a)) for a in ("x", "y")]
    out: dict[str, list[tuple[float, float]]] = {}
    for label, point in column_map(spec.get("points")).items():
        stages = scatter_stages(point)
        pts = []
        for seed in sorted(run["results"], key=int):
            res = run["results"][seed]
            xy = []
            for ax, stage in zip(axes, stages):
                v = final_value(res.get(stage), ax["split"]) if res.get(stage) else None
                if v is not None and ax.get("change_from"):
                    base = res.get(ax["change_from"])
                    v0 = final_value(base, ax["split"]) if base else None
                    v = None if v0 is None else v - v0
                xy.append(v)
            if None not in xy:
                pts.append((xy[0], xy[1]))
        if pts:
            out[label] = pts
    return out


def scatter_stages(point) -> tuple[str, str]:
    """(x stage, y stage) of a scatter point: one stage for both axes, or a pair [X_STAGE, Y_STAGE]."""
    return (point, point) if isinstance(point, str) else (point[0], point[1])


def scatter_not_run(run: dict, spec: dict) -> list[tuple[str, str]]:
    """(label, stage) of every stage a `scatter` item's points read that this preset does not run."""
    return [(label, st) for label, p in column_map(spec.get("points")).items()
            for st in dict.fromkeys(scatter_stages(p)) if st not in run["stages"]]


def column_map(spec) -> dict[str, str]:
    """label -> reference of a rows/columns/splits entry: a mapping as it is, a list labelled by its values."""
    if isinstance(spec, dict):
        return dict(spec)
    return {s: s for s in (spec or [])}


def diagnostic_values(run: dict, row: str, column: str) -> list[float]:
    """One number of a `diagnose` stage's result, one value per seed that has it. `row` is the
    stage name (the diagnosed checkpoint) or ``STAGE:base`` (the base it was compared with);
    `column` is ``drift`` (total relative parameter drift; 0 for the base) or ``SPLIT:KEY``, KEY
    a per-split summary key (postlab.studies.report_schema.DIAGNOSTIC_KEYS)."""
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
