"""The schema of a study YAML's ``report`` section, checked when the study loads
(`check_report_references`) and again, against what the run produced, when the report is built
(`check_split`, `check_diagnostic`).

The ``report`` section says what to show::

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
      scatter:                     # one point per label and seed, with a table of the numbers beside it
        - title: ID gain against KL to the warm-up
          points: {SFT: eval-sft, RL: eval-rl}          # label -> eval stage, or [X_STAGE, Y_STAGE]
          x: drift:kl                                   # a split reference, or {split, change_from, label}
          y: {split: id@sampled, change_from: eval-warmup}   # the value minus change_from's, per seed
      unsolved_by: eval-warmup     # SPLIT[@sampled]:unsolved = success on the problems this stage's
                                   # samples never solved (pass@N = 0); SPLIT:unsolved_share, their share
      diagnostics:                 # numbers of `diagnose` stages (postlab.studies.stages_interventions), mean ± std over seeds
        - title: Plasticity diagnostics vs SFT amount
          rows: {base: "diag-1x:base", SFT 1x: diag-1x, SFT 16x: diag-16x}   # STAGE, or STAGE:base (its base model)
          columns: {entropy (ID): "id:entropy_mean", drift: drift}   # drift or SPLIT:KEY (a summary key)
          plot: true               # also one panel per column, rows along the x axis
      dynamics:                    # training-time metrics of trainer stages (their run/metrics.jsonl train rows)
        - title: RL training dynamics
          rows: {RL after SFT 1x: rl-1x}                           # label -> trainer stage
          columns: {entropy early: entropy@first, entropy late: entropy@last}   # KEY@first|last|all|end
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

What the checks guarantee: every stage a row names exists in the study (in some preset) and is of
a kind the section reads (tables, deltas, curves and findings read eval stages; diagnostics,
diagnose stages; dynamics, training stages); every split is one of the environment's. A row whose
stage this preset does not run, and a column this preset evaluated no value for (e.g. a demo that
evaluates ID only), are left out of the report with a note naming them, never silently.
"""

from __future__ import annotations

from postlab.config import ConfigError, suggest
from postlab.eval.drift import DRIFT_KEYS
from postlab.studies.stages_interventions import DIAGNOSTIC_SUMMARY_KEYS
from postlab.trainers.registry import TRAINERS

# ----------------------------------------------------------------------------- the schema

# The keys an item of each section may have: a misspelt key (`splts`) would otherwise be a table
# with no columns.
REPORT_SECTIONS = {
    "tables": ("title", "rows", "splits", "percent"),
    "deltas": ("title", "baseline", "columns", "rows", "paper"),
    "curves": ("title", "baseline", "series", "splits"),
    "findings": ("claim", "paper", "metric", "expect"),
    "diagnostics": ("title", "rows", "columns", "plot"),
    "dynamics": ("title", "rows", "columns", "paper"),
    "scatter": ("title", "points", "x", "y"),
}
# report.unsolved_by: STAGE (an eval stage with a sampled evaluation, e.g. the warm-up's): the problems
# it solved in none of its samples (pass@N = 0) are what ``SPLIT[@sampled]:unsolved`` reads, per seed
UNSOLVED_KEYS = ("unsolved", "unsolved_share")
SCATTER_AXIS_KEYS = ("split", "change_from", "label")
# The built-in stage kinds whose results each section reads (a custom `module:function` kind may
# stand for any of them): eval points, a diagnose stage's summary, a trainer's run/metrics.jsonl.
SECTION_KINDS = {"tables": ("eval",), "deltas": ("eval",), "curves": ("eval",), "findings": ("eval",),
                 "scatter": ("eval",), "diagnostics": ("diagnose",), "dynamics": ("pretrain", *TRAINERS)}
FINDING_METRICS = ("delta", "diff", "gain_diff", "value")  # a finding's metric is exactly one of these
FINDING_METRIC_OPTIONS = ("split", "match_compute", "match_kl")
FINDING_EXPECT = ("positive", "negative")  # or a number: the value must be >= it
DIAGNOSTIC_KEYS = (*DIAGNOSTIC_SUMMARY_KEYS, "entropy_gap_mean")  # SPLIT:KEY of a diagnostics column
DYNAMICS_WINDOWS = ("first", "last", "all", "end")  # KEY@WINDOW of a dynamics column


# ----------------------------------------------------------------------------- checks when the study loads


def _strings_at(tree, key: str) -> set[str]:
    """Every string value stored under `key` anywhere in a nested YAML tree."""
    if isinstance(tree, dict):
        return set().union(*([{v} if k == key and isinstance(v, str) else _strings_at(v, key) for k, v in tree.items()]
                             or [set()]))
    if isinstance(tree, list):
        return set().union(*[_strings_at(v, key) for v in tree] or [set()])
    return set()


def item_where(section: str, index: int, item: dict) -> str:
    """How errors name a report item: ``report.tables[0] (its title)``."""
    name = item.get("title") or item.get("claim")
    return f"report.{section}[{index}]" + (f" ({name})" if name else "")


def as_list(x) -> list:
    """The values of a rows/columns/splits entry: a mapping's values, a string alone, or the list."""
    return [] if x is None else list(x.values()) if isinstance(x, dict) else [x] if isinstance(x, str) else list(x)


def _check_items(report, source) -> None:
    """The section's shape: known sections, items that are mappings of known keys, findings with
    exactly one metric of the right shape, diagnostics and dynamics columns of the right form."""
    if report is None:
        return
    if not isinstance(report, dict):
        raise ConfigError(f"{source}: report must be a mapping of section -> list of items, got {report!r}")
    for section, items in report.items():
        if section == "unsolved_by":
            if items is not None and not isinstance(items, str):  # null: a preset drops its base study's subset
                raise ConfigError(f"{source}: report.unsolved_by must be the name of an eval stage with a sampled "
                                  f"evaluation (e.g. eval-warmup), or null for none, got {items!r}")
            continue
        if section not in REPORT_SECTIONS:
            raise ConfigError(f"{source}: report.{section}: unknown section.{suggest(str(section), list(REPORT_SECTIONS))} "
                              f"Valid: {', '.join(REPORT_SECTIONS)}")
        if not isinstance(items, list):
            raise ConfigError(f"{source}: report.{section} must be a list of items, got {items!r}")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ConfigError(f"{source}: report.{section}[{i}] must be a mapping, got {item!r}")
            where = item_where(section, i, item)
            for key in item:
                if key not in REPORT_SECTIONS[section]:
                    raise ConfigError(f"{source}: {where}: unknown key {key!r}."
                                      f"{suggest(str(key), list(REPORT_SECTIONS[section]))} "
                                      f"Valid in report.{section}: {', '.join(REPORT_SECTIONS[section])}")
            if section == "findings":
                _check_finding(item, where, source)
            if section == "scatter":
                _check_scatter(item, where, source)
            for column in as_list(item.get("columns")) if section == "dynamics" else []:
                key, at, window = str(column).partition("@")
                if not key or not at or window not in DYNAMICS_WINDOWS:
                    raise ConfigError(f"{source}: {where}: column {column!r} must be KEY@WINDOW, a training metric "
                                      f"and a window: one of {', '.join(DYNAMICS_WINDOWS)} (e.g. entropy@last)")
            for column in as_list(item.get("columns")) if section == "diagnostics" else []:
                split, colon, key = str(column).partition(":")
                if column != "drift" and not (colon and split and key in DIAGNOSTIC_KEYS):
                    raise ConfigError(f"{source}: {where}: column {column!r} must be drift or SPLIT:KEY, KEY one of "
                                      f"{', '.join(DIAGNOSTIC_KEYS)}.{suggest(key or split, list(DIAGNOSTIC_KEYS))}")


def _check_finding(item: dict, where: str, source) -> None:
    """A finding's metric: one of delta [A, B] + split, diff [[A, SPLIT], [B, SPLIT]],
    gain_diff [[A, A0], [B, B0]] + split, or value [STAGE, SPLIT]; its expect: positive, negative or a number."""
    shapes = {"delta": "[STAGE, BASELINE] with split: SPLIT", "diff": "[[STAGE, SPLIT], [STAGE, SPLIT]]",
              "gain_diff": "[[STAGE, BASELINE], [STAGE, BASELINE]] with split: SPLIT", "value": "[STAGE, SPLIT]"}
    m = item.get("metric")
    if not isinstance(m, dict):
        raise ConfigError(f"{source}: {where}: metric must be a mapping with one of {', '.join(FINDING_METRICS)}; "
                          f"got {m!r}")
    valid = FINDING_METRICS + FINDING_METRIC_OPTIONS
    for key in m:
        if key not in valid:
            raise ConfigError(f"{source}: {where}: metric.{key}: unknown key.{suggest(str(key), list(valid))} "
                              f"Valid: {', '.join(valid)}")
    kinds = [k for k in FINDING_METRICS if k in m]
    if len(kinds) != 1:
        raise ConfigError(f"{source}: {where}: metric needs exactly one of {', '.join(FINDING_METRICS)}; got "
                          f"{', '.join(kinds) or 'none'}")
    kind, value = kinds[0], m[kinds[0]]

    def pair(x) -> bool:
        return isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(s, str) for s in x)

    ok = pair(value) if kind in ("delta", "value") else (isinstance(value, (list, tuple)) and len(value) == 2
                                                         and all(pair(x) for x in value))
    if ok and kind in ("delta", "gain_diff"):
        ok = isinstance(m.get("split"), str)
    if not ok:
        raise ConfigError(f"{source}: {where}: metric.{kind} must be {shapes[kind]}; got {m!r}")
    expect = item.get("expect", "positive")
    if expect not in FINDING_EXPECT and (isinstance(expect, bool) or not isinstance(expect, (int, float))):
        raise ConfigError(f"{source}: {where}: expect: {expect!r}; valid: positive, negative or a number (the value "
                          "must be at least it)")


def _labelled(x) -> list[tuple[str, object]]:
    """(label, value) of a rows/columns/series entry: a mapping's items, or each value as its own label."""
    return [(str(k), v) for k, v in x.items()] if isinstance(x, dict) else [(str(v), v) for v in as_list(x)]


def scatter_axis(axis) -> dict:
    """A scatter axis as {split, change_from, label}: a bare reference is {split: REF}."""
    return {"split": axis} if isinstance(axis, str) else dict(axis or {})


def axis_label(axis: dict) -> str:
    """A scatter axis's label: its own, else the split, "change in" it where it has a change_from."""
    if axis.get("label"):
        return axis["label"]
    return f"change in {axis['split']} from {axis['change_from']}" if axis.get("change_from") else axis["split"]


def _check_scatter(item: dict, where: str, source) -> None:
    """points: label -> eval stage (or [X_STAGE, Y_STAGE]); x and y: a split reference, or {split, change_from:
    STAGE, label}."""
    points = item.get("points")
    if not isinstance(points, dict) or not points or not all(
            isinstance(p, str) or (isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p))
            for p in points.values()):
        raise ConfigError(f"{source}: {where}: points must be a mapping of label -> eval stage, or label -> "
                          f"[X_STAGE, Y_STAGE] where the axes read different stages (one point per seed)")
    for name in ("x", "y"):
        axis = item.get(name)
        if not isinstance(axis, (str, dict)) or not scatter_axis(axis).get("split"):
            raise ConfigError(f"{source}: {where}: {name} must be a split reference (e.g. drift:kl) or a mapping "
                              f"with keys {', '.join(SCATTER_AXIS_KEYS)} (split required), got {axis!r}")
        for key in scatter_axis(axis):
            if key not in SCATTER_AXIS_KEYS:
                raise ConfigError(f"{source}: {where}: {name}.{key}: unknown key."
                                  f"{suggest(str(key), list(SCATTER_AXIS_KEYS))} Valid: {', '.join(SCATTER_AXIS_KEYS)}")


def report_reads(report: dict):
    """(section, where, stage, split reference or None) for every stage each item of a `report`
    section reads, with the split it reads it at: a table reads each row's stage at each column's
    split, a `diff` finding each stage at its own split, a diagnostics row at each column's SPLIT.
    `where` names the item and the row (or column, series, baseline) that names the stage."""
    for section in REPORT_SECTIONS:
        for i, item in enumerate((report or {}).get(section) or []):
            item_at = item_where(section, i, item)
            base = [("baseline", item["baseline"])] if item.get("baseline") is not None else []
            if section in ("tables", "curves"):
                named = [(f"{'row' if section == 'tables' else 'series'} {label!r}", s)
                         for label, s in _labelled(item.get("rows" if section == "tables" else "series"))] + base
                reads = [(label, s, ref) for label, s in named for ref in as_list(item.get("splits"))]
            elif section == "deltas":  # a column is a stage or [stage, its own baseline]; rows are splits
                named = base + [(f"column {label!r}", s) for label, c in _labelled(item.get("columns"))
                                for s in as_list(c)]
                reads = [(label, s, ref) for label, s in named for ref in as_list(item.get("rows"))]
            elif section == "diagnostics":  # rows: STAGE or STAGE:base; columns: drift or SPLIT:KEY
                splits = [str(c).partition(":")[0] for c in as_list(item.get("columns")) if c != "drift"]
                reads = [(f"row {label!r}", str(s).split(":", 1)[0], ref) for label, s in _labelled(item.get("rows"))
                         for ref in splits or [None]]
            elif section == "dynamics":  # rows: trainer stages; columns are KEY@WINDOW of their metrics
                reads = [(f"row {label!r}", s, None) for label, s in _labelled(item.get("rows"))]
            elif section == "scatter":  # every point's stage at both axes' splits, and each axis's change_from
                axes = [scatter_axis(item.get(a)) for a in ("x", "y")]
                points = (item.get("points") or {}).items() if isinstance(item.get("points"), dict) else []
                reads = [(f"point {label!r}", s, ax.get("split")) for label, p in points
                         for ax, s in zip(axes, [p, p] if isinstance(p, str) else p)]
                reads += [(f"change_from of {a}", ax["change_from"], ax.get("split"))
                          for a, ax in zip("xy", axes) if ax.get("change_from")]
            else:  # a finding: its claim names it
                m = item.get("metric") or {}
                if "value" in m:
                    pairs = [tuple(m["value"])]
                elif "diff" in m:
                    pairs = [tuple(x) for x in m["diff"]]
                elif "delta" in m:
                    pairs = [(s, m.get("split")) for s in m["delta"]]
                else:
                    pairs = [(s, m.get("split")) for pair in m.get("gain_diff") or [] for s in pair]
                reads = [(None, s, ref) for s, ref in pairs]
            for label, stage, ref in reads:
                if stage is not None:
                    where = item_at if label is None else f"{item_at}, {label}"
                    yield section, where, stage, ref


def env_class_or_none(name: str):
    """The class of env `name` (a registered name or an import path), or None where it does not
    resolve: the stage's own validation then names the problem with the stage it belongs to."""
    from postlab.envs.base import env_class

    try:
        return env_class(name)
    except ValueError:
        return None


def check_report_references(data: dict, presets: dict, source) -> None:
    """The `report` section's shape (`REPORT_SECTIONS`), and every stage, split and diagnostic it
    names exists in the study (in its stages or any preset's), every stage of a kind its section
    reads (`SECTION_KINDS`). A typo there would otherwise surface as a missing row or column after
    the whole study ran. A preset may bring its own `report` items (they replace the study's lists
    of the sections they name): those are checked the same way, named `presets.NAME.report...`."""
    layers = [data] + [layer for layer in presets.values() if isinstance(layer, dict)]
    stage_kinds: dict[str, set] = {}
    for layer in layers:
        for name, st in (layer.get("stages") or {}).items():
            stage_kinds.setdefault(name, set()).update([st["kind"]] if isinstance(st, dict) and "kind" in st else [])
    envs = _strings_at(data, "env") | _strings_at(presets, "env")
    classes = [env_class_or_none(e) for e in envs]
    base = data.get("report")
    _check_report(base, stage_kinds, classes, None, source)
    base_unsolved_by = base.get("unsolved_by") if isinstance(base, dict) else None
    for name, layer in presets.items():
        if isinstance(layer, dict) and layer.get("report") is not None:
            _check_report(layer["report"], stage_kinds, classes, base_unsolved_by, f"{source}: presets.{name}")


def _check_report(report, stage_kinds: dict[str, set], classes: list, unsolved_by, source) -> None:
    """One `report` mapping against the study's stages (name -> kinds) and env classes; `unsolved_by`:
    the reference stage of `:unsolved` reads where this mapping does not name one itself."""
    if report is None:
        return
    _check_items(report, source)
    stage_names = set(stage_kinds)
    # a wrapper (no splits of its own) or a custom env: its splits are not known here
    splits = None if any(c is None or not c.splits for c in classes) else {s for c in classes for s in c.splits}
    # an env not registered here (a custom one) may record diagnostics this check cannot know
    diagnostics = None if None in classes else {d for c in classes for d in c.diagnostics}
    reads = list(report_reads(report))
    for section, where, st, _ in reads:
        if st not in stage_names:
            raise ConfigError(f"{source}: {where}: unknown stage {st!r}.{suggest(str(st), sorted(stage_names))} "
                              f"Stages: {', '.join(sorted(stage_names))}")
        kinds = stage_kinds[st]
        if kinds and all(":" not in str(k) and k not in SECTION_KINDS[section] for k in kinds):
            raise ConfigError(f"{source}: {where}: stage {st!r} has kind {'/'.join(sorted(map(str, kinds)))}; "
                              f"report.{section} reads stages of kind {', '.join(SECTION_KINDS[section])}")
    unsolved_by = report.get("unsolved_by", unsolved_by)
    if unsolved_by is not None and unsolved_by not in stage_names:
        raise ConfigError(f"{source}: report.unsolved_by: unknown stage {unsolved_by!r}."
                          f"{suggest(str(unsolved_by), sorted(stage_names))} Stages: {', '.join(sorted(stage_names))}")
    for _, where, _, ref in reads:
        if ref is not None:
            _check_split_reference(str(ref), where, splits, diagnostics, source, unsolved_by is not None)


def check_report_envs(data: dict, source) -> None:
    """After the preset and overrides: every split a report item reads is a split of the env *its*
    stage runs. The check at load time knows only the union of the study's envs, so a preset that
    moves every stage to another env (spectrum's `math`) would otherwise keep reading the first
    env's splits (`ood-rule`) and fail only when the report is built, after the whole study ran."""
    stages = data.get("stages") or {}
    for _, where, st, ref in report_reads(data.get("report")):
        spec = stages.get(st)
        if ref is None or not isinstance(spec, dict) or not isinstance(spec.get("env"), str):
            continue
        name = str(ref).partition(":")[0].partition("@")[0]
        cls = env_class_or_none(spec["env"])
        if name == "drift" or cls is None or not cls.splits or name in cls.splits:
            continue
        raise ConfigError(f"{source}: {where}: stage {st!r} runs env {spec['env']!r}, which has no split {name!r} "
                          f"(read as {ref!r}).{suggest(name, list(cls.splits))} Its splits: {', '.join(cls.splits)}. "
                          f"A preset that changes the env gives its own report items (presets.NAME.report).")


def _check_split_reference(ref: str, where: str, splits: set | None, diagnostics: set | None, source,
                           unsolved: bool = False) -> None:
    """One split reference (``SPLIT[@sampled][:pass@K | :KEY | :KEY=CATEGORY | :unsolved]`` or ``drift:KEY``)."""
    name, _, diag = ref.partition(":")
    if diag in UNSOLVED_KEYS and not unsolved:
        raise ConfigError(f"{source}: {where}: {ref!r} reads the problems a reference stage never solved; name that "
                          f"stage in report.unsolved_by (an eval stage with a sampled evaluation, e.g. eval-warmup)")
    if name == "drift":  # a point's drift from its start (postlab.eval.drift.DRIFT_KEYS)
        if diag not in DRIFT_KEYS:
            raise ConfigError(f"{source}: {where}: {ref!r}: unknown drift key {diag!r}.{suggest(diag, list(DRIFT_KEYS))}"
                              f" Valid: {', '.join('drift:' + k for k in DRIFT_KEYS)}")
        return
    name, at, mode = name.partition("@")
    if at and mode != "sampled":
        raise ConfigError(f"{source}: {where}: {ref!r}: unknown decoding {mode!r}; valid: SPLIT or SPLIT@sampled")
    if diag.startswith("pass@") and not (at and diag[len("pass@"):].isdigit()):
        raise ConfigError(f"{source}: {where}: {ref!r}: pass@K needs a sampled split and an integer K, "
                          f"e.g. {name}@sampled:pass@8")
    if splits is not None and name not in splits:
        raise ConfigError(f"{source}: {where}: unknown split {name!r} in {ref!r}.{suggest(name, sorted(splits))} "
                          f"Splits: {', '.join(sorted(splits))}")
    key = diag.partition("=")[0]
    if "=" in diag and diagnostics is not None and key not in diagnostics:
        raise ConfigError(f"{source}: {where}: {ref!r} names diagnostic {key!r}, which no env of this study "
                          f"records.{suggest(key, sorted(diagnostics))} Diagnostics: "
                          f"{', '.join(sorted(diagnostics)) or 'none'} (SPLIT:KEY=CATEGORY)")


# ----------------------------------------------------------------------------- checks against what a run produced
# A study built from a mapping (`resolve`) or with a custom env skips some of the checks above;
# these catch the same mistakes in the results, before a row would show nothing.


def _results_of(run: dict, stage: str) -> list[dict]:
    return [res[stage] for res in run["results"].values() if res.get(stage) is not None]


def _kind_of(run: dict, stage: str) -> str:
    info = (run.get("stages") or {})
    return info[stage].get("kind", "?") if isinstance(info, dict) and isinstance(info.get(stage), dict) else "?"


def check_split(run: dict, where: str, stage: str, ref: str) -> None:
    """A report row reads split reference `ref` of `stage`. Where the stage has results, they must
    be evaluated points, on an environment that has the split; otherwise a ConfigError names the
    row, the stage and what it has. (A split of the env that this preset did not evaluate is no
    error: its cells show '–' and an empty column is left out with a note.)"""
    results = _results_of(run, stage)
    if not results:  # not run (yet): the row shows '–'
        return
    if not any(r.get("points") for r in results):
        raise ConfigError(f"{where}: stage {stage!r} has no evaluated points (a {_kind_of(run, stage)} stage); "
                          "this row needs an eval stage")
    name = str(ref).partition(":")[0]
    if name == "drift":
        return
    split = name.partition("@")[0]
    for env in {r["env"] for r in results if isinstance(r.get("env"), str)}:
        cls = env_class_or_none(env)
        if cls is not None and cls.splits and split not in cls.splits:
            raise ConfigError(f"{where}: stage {stage!r} ({env}) has no split {split!r} (read as {ref!r})."
                              f"{suggest(split, list(cls.splits))} Its env's splits: {', '.join(cls.splits)}")


def check_diagnostic(run: dict, where: str, row: str) -> None:
    """A diagnostics row (``STAGE`` or ``STAGE:base``): where the stage has results, they must hold a
    diagnose stage's diagnostics."""
    stage = row.partition(":")[0]
    results = _results_of(run, stage)
    if results and not any(r.get("diagnostics") for r in results):
        raise ConfigError(f"{where}: stage {stage!r} recorded no diagnostics (a {_kind_of(run, stage)} stage); "
                          "diagnostics rows name diagnose stages")


def check_run_reads(run: dict, section: str) -> None:
    """`check_split` (or for diagnostics rows `check_diagnostic`) of every stage and split the
    run's `report.SECTION` reads."""
    for sec, where, stage, ref in report_reads(run["study"].get("report")):
        if sec != section or section == "dynamics":  # dynamics rows: checked as their metrics are read
            continue
        if section == "diagnostics":
            check_diagnostic(run, where, stage)
        else:
            check_split(run, where, stage, ref)


def left_out_note(what: str, left_out: list[tuple[str, str]]) -> str | None:
    """The note under a table that left rows or columns out: ``WHAT: label (reference), ...``."""
    if not left_out:
        return None
    return f"{what}: " + ", ".join(f"{label} ({ref})" for label, ref in left_out)
