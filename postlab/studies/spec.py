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
    report: {...}                # tables, curves and paper findings (see postlab.studies.report_schema)

Stage fields: ``kind`` (pretrain | sft | rl | rl-probe | eval | ..., or ``module:function`` for a custom kind),
``after`` (a stage name or list; the first one is the model input), ``enabled`` (false drops the
stage and every stage that depends on it), ``env``, ``env_args``, ``style``, ``split``, ``splits``,
``data``, ``config`` (the trainer's config overrides), ``eval`` (evaluation options),
``points`` (eval: ``final`` or ``all`` checkpoints along training), ``sampled`` (eval: also N samples
per problem, split ``SPLIT@sampled``), ``drift`` (eval: KL to the start's options, or false),
``probe`` (rl-probe: steps, window, grid, select), ``max_turns``, ``shared``
(true: run once with the first seed and reuse the result for every seed, as the papers start every
seed from one pre-trained model; only for stages whose inputs are shared too).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

from postlab.config import ConfigError, apply_override, deep_merge, parse_override, read_yaml, suggest
from postlab.studies.kinds import STAGE_KINDS
from postlab.studies.report_schema import check_report_envs, check_report_references

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
    # stages dropped from the plan -> the disabled stage upstream that took it along, or None for a stage disabled
    # itself (a user who disables a probe should hear that its RL stage went too, not find it missing)
    dropped: dict[str, str | None] = dataclasses.field(default_factory=dict)

    def is_shared(self, stage: str) -> bool:
        return bool(self.stages[stage].spec.get("shared"))

    @property
    def report(self) -> dict:
        return self.raw.get("report") or {}

    def dropped_with(self) -> dict[str, list[str]]:
        """Each disabled stage that took other stages out of the plan -> those stages, in plan order."""
        along: dict[str, list[str]] = {}
        for sname, root in self.dropped.items():
            if root is not None:
                along.setdefault(root, []).append(sname)
        return along


def find_study_file(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = STUDY_DIR / f"{name}.yaml"
    if cand.exists():
        return cand
    known = sorted(f.stem for f in STUDY_DIR.glob("*.yaml")) if STUDY_DIR.exists() else []
    raise ConfigError(f"unknown study {name!r}: no {cand}. Known studies: {', '.join(known) or 'none'}."
                      f"{suggest(name, known)} (or pass a path to a YAML file)")


def _preset_layers(presets: dict, preset: str, path: Path) -> list[dict]:
    """The override layers of `preset`, base first: a preset may say ``extends: OTHER`` to be
    OTHER's layer with its own merged over it (a 3-seed study preset over the 1-seed demo)."""
    chain, name = [], preset
    while name is not None:
        if name in chain:
            raise ConfigError(f"{path}: presets extend each other in a cycle: {' -> '.join(chain + [name])}")
        if name not in presets:
            raise ConfigError(f"{path}: preset {chain[-1]!r} extends {name!r}, which this study does not define; "
                              f"defined: {', '.join(presets)}.{suggest(name, list(presets))}")
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
            raise ConfigError(f"{path}: unknown top-level key {key!r}.{suggest(key, list(TOP_FIELDS))} "
                              f"Valid: {', '.join(TOP_FIELDS)}")
    presets = data.pop("presets", None) or {}
    check_report_references(data, presets, path)
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{path}: unknown preset {preset!r}; this study defines: {', '.join(presets) or 'none'}."
                              f"{suggest(preset, list(presets))}")
        for layer in _preset_layers(presets, preset, path):
            data = deep_merge(data, layer)
    for text in overrides or []:
        key, value = parse_override(text)
        check_override_stage(data, key, text)
        apply_override(data, key, value)
    study = resolve(data, preset=preset, source=str(path), seeds=seeds, independent=independent)
    check_report_envs(study.raw, path)
    return study


def check_override_stage(data: dict, key: list[str], text: str) -> None:
    """An override of `stages.NAME...` must name a stage of the study (after its preset), or add one by
    setting `stages.NAME.kind`: a typo'd stage name otherwise reads as a new stage whose kind is missing."""
    stages = data.get("stages")
    if key[0] != "stages" or len(key) < 3 or not isinstance(stages, dict) or key[1] in stages:
        return
    if key[2] == "kind":  # a new stage, on purpose
        return
    names = [str(n) for n in stages]
    raise ConfigError(f"override {text!r}: the study has no stage {key[1]!r}.{suggest(key[1], names)} "
                      f"Stages: {', '.join(names)} (to add a stage, set stages.{key[1]}.kind first)")


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
                              f"or module:function.{suggest(str(kind), list(BUILTIN_KINDS))}")
        # a probe probes the RL its rl stage will run: it takes the `rl` defaults (then its own)
        kind_defaults = [defaults.get(k) or {} for k in (("rl", "rl-probe") if kind == "rl-probe" else (kind,))]
        merged = copy.deepcopy(defaults.get("*") or {})
        for layer in kind_defaults:
            merged = deep_merge(merged, copy.deepcopy(layer))
        merged = deep_merge(merged, st)
        if "env" not in merged and data.get("env"):
            merged["env"] = data["env"]
        for key in merged:
            if key not in STAGE_FIELDS:
                raise ConfigError(f"{source}: stages.{sname}: unknown field {key!r}.{suggest(key, list(STAGE_FIELDS))} "
                                  f"Valid: {', '.join(STAGE_FIELDS)}")
        after = merged.get("after") or []
        merged["after"] = [after] if isinstance(after, str) else list(after)
        if independent and merged.get("shared"):
            merged["shared"] = False
        stages[sname] = merged
    for sname, st in stages.items():
        for dep in st["after"]:
            if dep not in stages:
                raise ConfigError(f"{source}: stages.{sname}.after: unknown stage {dep!r}.{suggest(dep, list(stages))}")
        if not isinstance(st.get("shared", False), bool):
            raise ConfigError(f"{source}: stages.{sname}.shared must be true or false, got {st['shared']!r}")
        if st.get("shared"):
            unshared = [d for d in st["after"] if not stages[d].get("shared")]
            if unshared:
                raise ConfigError(f"{source}: stages.{sname} is shared across seeds but its input(s) "
                                  f"{', '.join(unshared)} are not; mark them shared too or drop 'shared'")
    order = _toposort(stages, source)
    # a disabled stage disables every stage downstream of it
    dropped: dict[str, str | None] = {}
    for sname in order:
        if stages[sname].get("enabled", True) is False:
            dropped[sname] = None
        else:
            upstream = next((d for d in stages[sname]["after"] if d in dropped), None)
            if upstream is not None:  # name the stage the user disabled, not an intermediate one
                dropped[sname] = dropped[upstream] or upstream
    out = {}
    for sname in order:
        if sname in dropped:
            continue
        st = stages[sname]
        spec = {k: v for k, v in st.items() if k not in ("after", "enabled")}
        out[sname] = Stage(sname, st["kind"], st["after"], spec)
    if not out:
        raise ConfigError(f"{source}: every stage is disabled")
    data["stages"] = {k: stages[k] for k in order}
    if independent:  # its own run directory and report, beside the shared-base study's
        preset = f"{preset or 'default'}-independent"
    return Study(name, preset, seed_list, out, data, source, dropped)


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
