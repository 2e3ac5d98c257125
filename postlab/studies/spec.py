"""A study: a declarative pipeline of stages, read from one YAML file.

Schema (configs/studies/NAME.yaml)::

    name: sft-vs-rl
    description: ...
    paper: "Chu et al. 2025, arXiv 2501.17161 (seed 004)"
    seeds: 1                     # default number of seeds (seed values 0..seeds-1)
    env: generalpoints           # default env of every stage (a stage may set its own)
    defaults:                    # merged under every stage: '*' first, then the stage's kind
      '*':  {style: compact}
      sft:  {config: {optim: {lr: 1e-3}}}
    stages:                      # a mapping: name -> stage; order does not matter
      base:    {kind: pretrain, data: {n: 20000}, config: {run: {max_steps: 300}}}
      warmup:  {kind: sft, after: base, split: id, data: {n: 2000}}
      rl:      {kind: rl, after: warmup, config: {algorithm: ppo}}
      eval-rl: {kind: eval, after: rl, splits: [id, ood-rule], points: all, eval: {n_episodes: 64}}
    presets:                     # override layers, deep-merged over everything above
      demo:  {stages: {base: {config: {run: {max_steps: 100}}}}}
      tiny:  {seeds: 3}
      demo3: {extends: demo, seeds: 3}   # demo's layer, then this one
    report: {...}                # tables, curves and paper findings (see postlab.studies.report)

Stage fields: ``kind`` (pretrain | sft | rl | rl-probe | eval | ..., or ``module:function`` for a custom kind),
``after`` (a stage name or list; the first one is the model input), ``enabled`` (false drops the
stage and every stage that depends on it), ``env``, ``env_args``, ``style``, ``split``, ``splits``,
``data``, ``config`` (the trainer's config overrides), ``eval`` (evaluation options),
``points`` (eval: ``final`` or ``all`` checkpoints along training), ``sampled`` (eval: also N samples
per problem, split ``SPLIT@sampled``), ``drift`` (eval: KL to the start's options, or false),
``probe`` (rl-probe: steps, window, grid), ``max_turns``, ``shared``
(true: run once with the first seed and reuse the result for every seed, as the papers start every
seed from one pre-trained model; only for stages whose inputs are shared too).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

from postlab.config import ConfigError, _deep_merge, _suggest, apply_override, parse_override, read_yaml
from postlab.eval.drift import DRIFT_KEYS

from postlab.studies.kinds import STAGE_KINDS

BUILTIN_KINDS = tuple(STAGE_KINDS)
STAGE_FIELDS = ("kind", "after", "enabled", "env", "env_args", "style", "split", "splits", "data", "config", "eval",
                "points", "max_turns", "label", "shared", "sampled", "drift", "probe")
TOP_FIELDS = ("name", "description", "paper", "seeds", "env", "defaults", "stages", "presets", "report")
STUDY_DIR = Path(__file__).resolve().parents[2] / "configs" / "studies"


@dataclasses.dataclass
class Stage:
    name: str
    kind: str
    after: list[str]
    spec: dict  # every resolved field except name/after/enabled


@dataclasses.dataclass
class Study:
    name: str
    preset: str | None
    seeds: list[int]
    stages: dict[str, Stage]  # topological order
    raw: dict  # the resolved study mapping (after presets and overrides)
    source: str

    def is_shared(self, stage: str) -> bool:
        return bool(self.stages[stage].spec.get("shared"))

    @property
    def report(self) -> dict:
        return self.raw.get("report") or {}


def find_study_file(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = STUDY_DIR / f"{name}.yaml"
    if cand.exists():
        return cand
    known = sorted(f.stem for f in STUDY_DIR.glob("*.yaml")) if STUDY_DIR.exists() else []
    raise ConfigError(f"unknown study {name!r}: no {cand}. Known studies: {', '.join(known) or 'none'}."
                      f"{_suggest(name, known)} (or pass a path to a YAML file)")


def _preset_layers(presets: dict, preset: str, path: Path) -> list[dict]:
    """The override layers of `preset`, base first: a preset may say ``extends: OTHER`` to be
    OTHER's layer with its own merged over it (a 3-seed study preset over the 1-seed demo)."""
    chain, name = [], preset
    while name is not None:
        if name in chain:
            raise ConfigError(f"{path}: presets extend each other in a cycle: {' -> '.join(chain + [name])}")
        if name not in presets:
            raise ConfigError(f"{path}: preset {chain[-1]!r} extends {name!r}, which this study does not define; "
                              f"defined: {', '.join(presets)}.{_suggest(name, list(presets))}")
        layer = presets[name] or {}
        if not isinstance(layer, dict):
            raise ConfigError(f"{path}: preset {name!r} must be a mapping of overrides, got {type(layer).__name__}")
        chain.append(name)
        name = layer.get("extends")
    return [{k: v for k, v in (presets[n] or {}).items() if k != "extends"} for n in reversed(chain)]


def load_study(name: str, preset: str | None = None, overrides: list[str] | None = None, seeds: int | None = None,
               enable_only: list[str] | None = None, independent: bool = False) -> Study:
    path = find_study_file(name)
    data = read_yaml(path)
    for key in data:
        if key not in TOP_FIELDS:
            raise ConfigError(f"{path}: unknown top-level key {key!r}.{_suggest(key, list(TOP_FIELDS))} "
                              f"Valid: {', '.join(TOP_FIELDS)}")
    presets = data.pop("presets", None) or {}
    check_report_references(data, presets, path)
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{path}: unknown preset {preset!r}; this study defines: {', '.join(presets) or 'none'}."
                              f"{_suggest(preset, list(presets))}")
        for layer in _preset_layers(presets, preset, path):
            data = _deep_merge(data, layer)
    for text in overrides or []:
        key, value = parse_override(text)
        check_override_stage(data, key, text)
        apply_override(data, key, value)
    return resolve(data, preset=preset, source=str(path), seeds=seeds, independent=independent)


def check_override_stage(data: dict, key: list[str], text: str) -> None:
    """An override of `stages.NAME...` must name a stage of the study (after its preset), or add one by
    setting `stages.NAME.kind`: a typo'd stage name otherwise reads as a new stage whose kind is missing."""
    stages = data.get("stages")
    if key[0] != "stages" or len(key) < 3 or not isinstance(stages, dict) or key[1] in stages:
        return
    if key[2] == "kind":  # a new stage, on purpose
        return
    names = [str(n) for n in stages]
    raise ConfigError(f"override {text!r}: the study has no stage {key[1]!r}.{_suggest(key[1], names)} "
                      f"Stages: {', '.join(names)} (to add a stage, set stages.{key[1]}.kind first)")


def _strings_at(tree, key: str) -> set[str]:
    """Every string value stored under `key` anywhere in a nested YAML tree."""
    if isinstance(tree, dict):
        return set().union(*([{v} if k == key and isinstance(v, str) else _strings_at(v, key) for k, v in tree.items()]
                             or [set()]))
    if isinstance(tree, list):
        return set().union(*[_strings_at(v, key) for v in tree] or [set()])
    return set()


def _report_references(report: dict):
    """(where, stage names, split references) of every item in a study's `report` section."""
    def as_list(x):
        return [] if x is None else list(x.values()) if isinstance(x, dict) else [x] if isinstance(x, str) else list(x)

    for section in ("tables", "deltas", "curves", "findings", "diagnostics"):
        for i, item in enumerate((report or {}).get(section) or []):
            if not isinstance(item, dict):
                continue
            where = f"report.{section}[{i}]" + (f" ({item.get('title') or item.get('claim')})"
                                                if item.get("title") or item.get("claim") else "")
            stages, splits = [], []
            if section == "tables":
                stages, splits = as_list(item.get("rows")), as_list(item.get("splits"))
            elif section == "deltas":
                stages = [item.get("baseline")] + [s for c in as_list(item.get("columns")) for s in as_list(c)]
                splits = as_list(item.get("rows"))
            elif section == "curves":
                stages, splits = [item.get("baseline")] + as_list(item.get("series")), as_list(item.get("splits"))
            elif section == "diagnostics":  # rows: STAGE or STAGE:base; columns are summary keys
                stages = [str(s).split(":", 1)[0] for s in as_list(item.get("rows"))]
            else:
                m = item.get("metric") or {}
                if "value" in m:
                    stages, splits = [m["value"][0]], [m["value"][1]]
                elif "diff" in m:
                    stages, splits = [a for a, _ in m["diff"]], [b for _, b in m["diff"]]
                elif "delta" in m:
                    stages, splits = list(m["delta"]), [m.get("split")]
                elif "gain_diff" in m:
                    stages, splits = [s for pair in m["gain_diff"] for s in pair], [m.get("split")]
            yield where, [s for s in stages if s is not None], [s for s in splits if s is not None]


def _env_class_or_none(name: str):
    """The class of env `name` (a registered name or an import path), or None where it does not
    resolve: the stage's own validation then names the problem with the stage it belongs to."""
    from postlab.envs.base import env_class

    try:
        return env_class(name)
    except ValueError:
        return None


def check_report_references(data: dict, presets: dict, source) -> None:
    """Every stage, split and diagnostic the `report` section names exists in the study (in its
    stages or any preset's). The report drops what no run produced, so a typo there would
    otherwise surface as a silently missing column after the whole study ran."""
    stage_names = set(data.get("stages") or {}) | {n for layer in presets.values() if isinstance(layer, dict)
                                                   for n in (layer.get("stages") or {})}
    envs = _strings_at(data, "env") | _strings_at(presets, "env")
    classes = [_env_class_or_none(e) for e in envs]
    # a wrapper (no splits of its own) or a custom env: its splits are not known here
    splits = None if any(c is None or not c.splits for c in classes) else {s for c in classes for s in c.splits}
    # an env not registered here (a custom one) may record diagnostics this check cannot know
    diagnostics = None if None in classes else {d for c in classes for d in c.diagnostics}
    for where, stages, refs in _report_references(data.get("report")):
        for st in stages:
            if st not in stage_names:
                raise ConfigError(f"{source}: {where}: unknown stage {st!r}.{_suggest(str(st), sorted(stage_names))} "
                                  f"Stages: {', '.join(sorted(stage_names))}")
        for ref in refs:
            name, _, diag = str(ref).partition(":")
            if name == "drift":  # a point's drift from its start (postlab.eval.drift.DRIFT_KEYS)
                if diag not in DRIFT_KEYS:
                    raise ConfigError(f"{source}: {where}: {ref!r}: unknown drift key {diag!r}.{_suggest(diag, list(DRIFT_KEYS))}"
                                      f" Valid: {', '.join('drift:' + k for k in DRIFT_KEYS)}")
                continue
            name, at, mode = name.partition("@")
            if at and mode != "sampled":
                raise ConfigError(f"{source}: {where}: {ref!r}: unknown decoding {mode!r}; valid: SPLIT or SPLIT@sampled")
            if diag.startswith("pass@") and not (at and diag[len("pass@"):].isdigit()):
                raise ConfigError(f"{source}: {where}: {ref!r}: pass@K needs a sampled split and an integer K, "
                                  f"e.g. {name}@sampled:pass@8")
            if splits is not None and name not in splits:
                raise ConfigError(f"{source}: {where}: unknown split {name!r} in {ref!r}.{_suggest(name, sorted(splits))} "
                                  f"Splits: {', '.join(sorted(splits))}")
            key = diag.partition("=")[0]
            if "=" in diag and diagnostics is not None and key not in diagnostics:
                raise ConfigError(f"{source}: {where}: {ref!r} names diagnostic {key!r}, which no env of this study "
                                  f"records.{_suggest(key, sorted(diagnostics))} Diagnostics: "
                                  f"{', '.join(sorted(diagnostics)) or 'none'} (SPLIT:KEY=CATEGORY)")


def resolve(data: dict, preset: str | None = None, source: str = "<dict>", seeds: int | None = None,
            independent: bool = False) -> Study:
    """The study `data` (with `preset` merged by the caller) as stages in dependency order. `independent`: no
    stage is shared, so every seed trains its own base and warm-up and the seeds vary the starting point too."""
    data = copy.deepcopy(data)
    name = data.get("name") or Path(source).stem
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, dict) or not raw_stages:
        raise ConfigError(f"{source}: 'stages' must be a non-empty mapping of stage name -> stage")
    defaults = data.get("defaults") or {}
    n_seeds = seeds if seeds is not None else data.get("seeds", 1)
    if isinstance(n_seeds, list):
        seed_list = [int(s) for s in n_seeds]
    elif isinstance(n_seeds, int) and n_seeds > 0:
        seed_list = list(range(n_seeds))
    else:
        raise ConfigError(f"{source}: seeds must be a positive integer or a list of integers, got {n_seeds!r}")
    stages: dict[str, dict] = {}
    for sname, st in raw_stages.items():
        if st is None:
            continue
        if not isinstance(st, dict):
            raise ConfigError(f"{source}: stages.{sname} must be a mapping, got {st!r}")
        kind = st.get("kind")
        if kind is None:
            raise ConfigError(f"{source}: stages.{sname}.kind is missing; valid: {', '.join(BUILTIN_KINDS)} or module:function")
        if kind not in BUILTIN_KINDS and ":" not in str(kind):
            raise ConfigError(f"{source}: stages.{sname}.kind: unknown kind {kind!r}; valid: {', '.join(BUILTIN_KINDS)} "
                              f"or module:function.{_suggest(str(kind), list(BUILTIN_KINDS))}")
        # a probe probes the RL its rl stage will run: it takes the `rl` defaults (then its own)
        kind_defaults = [defaults.get(k) or {} for k in (("rl", "rl-probe") if kind == "rl-probe" else (kind,))]
        merged = copy.deepcopy(defaults.get("*") or {})
        for layer in kind_defaults:
            merged = _deep_merge(merged, copy.deepcopy(layer))
        merged = _deep_merge(merged, st)
        if "env" not in merged and data.get("env"):
            merged["env"] = data["env"]
        for key in merged:
            if key not in STAGE_FIELDS:
                raise ConfigError(f"{source}: stages.{sname}: unknown field {key!r}.{_suggest(key, list(STAGE_FIELDS))} "
                                  f"Valid: {', '.join(STAGE_FIELDS)}")
        after = merged.get("after") or []
        merged["after"] = [after] if isinstance(after, str) else list(after)
        if independent and merged.get("shared"):
            merged["shared"] = False
        stages[sname] = merged
    for sname, st in stages.items():
        for dep in st["after"]:
            if dep not in stages:
                raise ConfigError(f"{source}: stages.{sname}.after: unknown stage {dep!r}.{_suggest(dep, list(stages))}")
        if not isinstance(st.get("shared", False), bool):
            raise ConfigError(f"{source}: stages.{sname}.shared must be true or false, got {st['shared']!r}")
        if st.get("shared"):
            unshared = [d for d in st["after"] if not stages[d].get("shared")]
            if unshared:
                raise ConfigError(f"{source}: stages.{sname} is shared across seeds but its input(s) "
                                  f"{', '.join(unshared)} are not; mark them shared too or drop 'shared'")
    order = _toposort(stages, source)
    # a disabled stage disables every stage downstream of it
    disabled: set[str] = set()
    for sname in order:
        if stages[sname].get("enabled", True) is False or any(d in disabled for d in stages[sname]["after"]):
            disabled.add(sname)
    out = {}
    for sname in order:
        if sname in disabled:
            continue
        st = stages[sname]
        spec = {k: v for k, v in st.items() if k not in ("after", "enabled")}
        out[sname] = Stage(sname, st["kind"], st["after"], spec)
    if not out:
        raise ConfigError(f"{source}: every stage is disabled")
    data["stages"] = {k: stages[k] for k in order}
    if independent:  # its own run directory and report, beside the shared-base study's
        preset = f"{preset or 'default'}-independent"
    return Study(name, preset, seed_list, out, data, source)


def _toposort(stages: dict[str, dict], source: str) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]):
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ConfigError(f"{source}: stages form a cycle: {' -> '.join(path + [n])}")
        state[n] = 1
        for d in stages[n]["after"]:
            visit(d, path + [n])
        state[n] = 2
        order.append(n)

    for n in stages:
        visit(n, [])
    return order


def stage_hash(stage: Stage, seed: int, input_hashes: list[str]) -> str:
    """Hash of the stage's resolved spec, the seed and its inputs' hashes (12 hex chars)."""
    spec = {k: v for k, v in stage.spec.items() if k != "label"}  # presentation only
    blob = json.dumps({"kind": stage.kind, "spec": spec, "seed": seed, "inputs": input_hashes},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
