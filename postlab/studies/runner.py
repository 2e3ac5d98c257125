"""Run a study: every seed, every stage in dependency order, each cached by its hash.

Layout::

    OUT/NAME/PRESET/
      study.json                 resolved study, seeds, and per seed: stage -> directory
      shared/base-3f2a9c1b0d4e/  a stage with `shared: true` runs once (first seed) for every seed
      seed_0/
        warmup-3f2a9c1b0d4e/     one directory per stage: NAME-HASH
          run/                   the trainer's run directory (checkpoints, metrics.jsonl, final/)
          result.json            what the stage produced (checkpoint, compute, eval results)
          DONE                   written last, atomically: the stage is complete

Several processes can run one study (the same command twice, one per core or GPU, or `--only-seed
N` per machine sharing --out): the plan and manifest are the whole study's, a stage runs under a
lock (`postlab.locks`), and a process passes over a stage another one is running and takes the next
stage whose inputs are done, so the processes split the stages between them and none runs twice.

The hash covers the stage's resolved spec, the seed and the hashes of its inputs, so changing
one value reruns that stage and exactly the stages downstream of it, and nothing else. A
stage directory without DONE is an interrupted stage: trainer stages resume from the run's
latest checkpoint (`resume=`), other stages start over.

Compute accounting per stage: tokens trained (D_train) and generated (D_gen), the parameter
count N, FLOPs ~= 6 N D_train + 2 N D_gen, wall time.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from pathlib import Path

from postlab import locks
from postlab.progress import console
from postlab.studies.archive import compare_rebuilt
from postlab.studies.compute import flops
from postlab.studies.kinds import STAGE_KINDS
from postlab.studies.spec import Stage, Study, stage_hash
from postlab.studies.stage_common import write_json_atomic

DEFAULT_OUT = "runs/studies"


def environment() -> dict:
    """Machine and library versions (postlab.runinfo): reports print them, as bit-identity needs the same."""
    try:
        from postlab.runinfo import environment as info
    except ImportError:
        return {}
    return info()


class StageContext:
    """What a stage function gets: its spec, its directory, its inputs' results, the seed."""

    def __init__(self, study: Study, stage: Stage, seed: int, path: Path, inputs: list[dict], input_dirs: list[Path]):
        self.study, self.stage, self.seed, self.path = study, stage, seed, path
        self.inputs, self.input_dirs = inputs, input_dirs
        self.spec = stage.spec

    @property
    def run_dir(self) -> Path:
        return self.path / "run"

    def input_checkpoint(self, i: int = 0) -> Path:
        if not self.inputs:
            raise ValueError(f"stage {self.stage.name!r} needs an input stage with a checkpoint (after: ...)")
        ck = self.inputs[i].get("checkpoint")
        if not ck:
            raise ValueError(f"stage {self.stage.name!r}: input {self.stage.after[i]!r} produced no checkpoint")
        return self.input_dirs[i] / ck


def missing_checkpoint(result: dict, path: Path, steps: bool = True) -> bool:
    """A done stage's result names a model (relative to its directory) that is not on disk: its final
    checkpoint, or (`steps`) a saved step, which an evaluation of `points: all` reads."""
    paths = [result.get("checkpoint")] + ([p.get("path") for p in result.get("checkpoints") or []] if steps else [])
    return any(p and not (path / p).exists() for p in paths)


def _lock_file(path: Path) -> Path:
    """The lock file of stage directory `path` (beside it: the directory itself may not exist yet)."""
    return path.with_name(f".{path.name}.lock")


def _stage_lock(path: Path, label: str):
    """The lock of stage directory `path`, waited for: a rebuild another process is doing is finished first
    (running a stage takes it without waiting, in `StudyRunner._next_stage`)."""
    return locks.waiting_for(_lock_file(path), on_wait=lambda holder: console.print(
        f"{label}: another process ({holder}) is rebuilding this stage; waiting for it", highlight=False))


def reads_start(kind: str) -> bool:
    """Does a stage of `kind` read its input's start model (`StageKind.reads_start`)? A custom kind says so with
    a `reads_start` attribute on its function; without one it is assumed to (rebuilding too much costs time,
    too little fails the stage)."""
    if kind in STAGE_KINDS:
        return STAGE_KINDS[kind].reads_start
    return bool(getattr(resolve_kind(kind), "reads_start", True))


def resolve_kind(kind: str):
    """The run function of a built-in kind, or of a custom `module:function` kind."""
    if kind in STAGE_KINDS:
        return STAGE_KINDS[kind].run
    module, _, fn = kind.partition(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        from postlab.config import ConfigError

        raise ConfigError(f"stage kind {kind!r}: cannot import it ({e}); expected 'package.module:function'") from None


class StudyRunner:
    poll_s = 5.0  # how often a process whose stages all wait for other processes looks again (seconds)

    def __init__(self, study: Study, out: str | Path = DEFAULT_OUT, only_seeds: list[int] | None = None):
        """`only_seeds`: run just these of the study's seeds (the others may run in other processes)."""
        self.study = study
        self.root = Path(out) / study.name / (study.preset or "default")
        self.calls: list[tuple[int, str]] = []  # (seed, stage) actually run in this process
        unknown = sorted(set(only_seeds or ()) - set(study.seeds))
        if unknown:
            from postlab.config import ConfigError

            raise ConfigError(f"--only-seed {', '.join(map(str, unknown))}: not a seed of this study; its seeds are "
                              f"{study.seeds} (set them with --seeds N or -s seeds=[...])")
        self.only_seeds = [s for s in study.seeds if not only_seeds or s in only_seeds]  # study order, once each

    # ------------------------------------------------------------------ planning
    def plan(self) -> dict[int, dict[str, Path]]:
        """seed -> stage -> directory (hashes only depend on configs, so the plan is known up front)."""
        plan = {}
        for seed in self.study.seeds:
            hashes: dict[str, str] = {}
            dirs = {}
            for name, st in self.study.stages.items():
                shared = self.study.is_shared(name)
                h = stage_hash(st, self.stage_seed(name, seed), [hashes[d] for d in st.after])
                hashes[name] = h
                dirs[name] = self.root / ("shared" if shared else f"seed_{seed}") / f"{name}-{h}"
            plan[seed] = dirs
        return plan

    def stage_seed(self, stage: str, seed: int) -> int:
        """The seed a stage runs with: its study seed, or the first seed for a shared stage."""
        return self.study.seeds[0] if self.study.is_shared(stage) else seed

    def complete(self) -> bool:
        """Every stage of every seed is done (what a report of the whole study needs)."""
        return all(s == "done" for stages in self.status().values() for s in stages.values())

    def status(self) -> dict[int, dict[str, str]]:
        return {seed: {n: ("done" if (d / "DONE").exists() else "partial" if d.exists() else "todo")
                       for n, d in dirs.items()} for seed, dirs in self.plan().items()}

    def write_manifest(self, plan, quiet: bool = False) -> None:
        """Write study.json: this command's study and plan, plus every stage an earlier command recorded here
        that this one does not plan (a stage it disables with ``-s stages.X.enabled=false``, a seed outside
        its ``--seeds``) and that has started (its directory exists: done, or running in another process).
        Commands that each run part of a study with different switches then leave one manifest, and
        ``postlab report`` sees all of their results, not the last one's. `run` writes it when it starts and
        again when it ends, so stages other processes finished meanwhile are in it too."""
        self.root.mkdir(parents=True, exist_ok=True)
        stages = {n: {"kind": s.kind, "after": s.after} for n, s in self.study.stages.items()}
        dirs = {str(seed): {n: str(d.relative_to(self.root)) for n, d in sd.items()} for seed, sd in plan.items()}
        # processes starting together each merge the other's manifest
        with locks.waiting_for(self.root / ".manifest.lock"):
            kept = self._earlier_started_stages(stages, dirs)
            write_json_atomic(self.root / "study.json", {
                "name": self.study.name, "preset": self.study.preset, "source": self.study.source,
                # seeds: the plan's (every study seed) and any an earlier command's kept stages have
                "seeds": sorted(int(s) for s in dirs), "study": self.study.raw,
                "environment": environment(), "stages": stages, "dirs": dirs,
            })
        if kept and not quiet:
            console.print(f"study.json keeps {len(kept)} started stage(s) of earlier commands that this one does "
                          f"not run ({', '.join(kept[:6])}{', ...' if len(kept) > 6 else ''}): the report shows them",
                          highlight=False)

    def _earlier_started_stages(self, stages: dict, dirs: dict) -> list[str]:
        """Add to `stages`/`dirs` (in place) the started stages of the existing study.json that the current
        plan lacks; return them as 'seed S NAME'. A stage both plan is left as planned now (a changed config
        points the manifest at the stage's new directory)."""
        try:
            old = json.loads((self.root / "study.json").read_text())
        except (OSError, ValueError):
            return []  # none yet, or unreadable: this command's manifest replaces it
        kept = []
        for seed, old_dirs in (old.get("dirs") or {}).items():
            for name, rel in old_dirs.items():
                if name in dirs.get(seed, {}) or not (self.root / rel).is_dir():
                    continue
                dirs.setdefault(seed, {})[name] = rel
                stages.setdefault(name, (old.get("stages") or {}).get(name, {}))
                kept.append(f"seed {seed} {name}")
        return kept

    # ------------------------------------------------------------------ validating
    def validate(self, plan=None) -> None:
        """Check every stage of every seed (configs, envs, splits, data/eval keys) before any runs."""
        plan = plan or self.plan()
        for seed, dirs in plan.items():
            if seed not in self.only_seeds:
                continue
            for name, st in self.study.stages.items():
                if st.kind not in STAGE_KINDS:
                    resolve_kind(st.kind)  # a custom kind must at least import
                    continue
                inputs = [{"checkpoint": "run/final"} for _ in st.after]
                ctx = StageContext(self.study, st, self.stage_seed(name, seed), dirs[name], inputs,
                                   [dirs[d] for d in st.after])
                STAGE_KINDS[st.kind].validate(ctx)

    # ------------------------------------------------------------------ running
    def run(self) -> dict[int, dict[str, dict]]:
        """Run every stage of this process's seeds that is not done yet. Stages go in plan order, but
        processes running the same study (same --out, any --only-seed) share the work: a stage another
        process is running is passed over, and this one takes the next stage whose inputs are done; when
        every stage left is held elsewhere or waits for one that is, it polls until one frees up. One
        process alone runs the plan's order exactly."""
        plan = self.plan()
        self.validate(plan)
        self.write_manifest(plan)
        todo = [(seed, name) for seed in self.only_seeds for name in self.study.stages]
        tags = {key: f"[{i}/{len(todo)}]" for i, key in enumerate(todo, 1)}
        results: dict[int, dict[str, dict]] = {seed: {} for seed in self.only_seeds}
        held_elsewhere: dict[tuple[int, str], str] = {}  # stage -> holder, said once per stage
        waiting = False
        while todo:
            key = self._next_stage(todo, plan, results, tags, held_elsewhere)
            if key is None:  # all that is left is held by other processes, or needs what they hold
                if not waiting:
                    held = [f"seed {s} {n}" for s, n in todo if (s, n) in held_elsewhere]
                    console.print(f"every stage left here waits for another process ({', '.join(held)}); looking "
                                  f"again every {self.poll_s:g} s", highlight=False)
                    waiting = True
                self._wait_for_others()
                continue
            waiting = False
            todo.remove(key)
        self.write_manifest(plan, quiet=True)  # with what other processes started or finished meanwhile
        # plan order, as one process running the stages in sequence returns them
        return {seed: {n: results[seed][n] for n in self.study.stages} for seed in self.only_seeds}

    def _wait_for_others(self) -> None:
        time.sleep(self.poll_s)

    def _next_stage(self, todo, plan, results, tags, held_elsewhere) -> tuple[int, str] | None:
        """Finish the first stage of `todo` this process can take (cached, or run under its lock) and return
        it, or None when every stage left is held by another process or reads one that is not done."""
        for seed, name in todo:
            st, dirs = self.study.stages[name], plan[seed]
            if any(d not in results[seed] for d in st.after):  # an input is not done yet (it runs elsewhere)
                continue
            path, stage_seed = dirs[name], self.stage_seed(name, seed)
            label = f"{tags[(seed, name)]} seed {stage_seed} {name} ({st.kind})"
            if not (path / "DONE").exists():  # it runs here, unless another process is running it
                lock = _lock_file(path)
                try:
                    locks.acquire(lock)  # no waiting: a stage held elsewhere is passed over
                except locks.DirectoryInUse as held:
                    if (seed, name) not in held_elsewhere:
                        held_elsewhere[(seed, name)] = str(held)
                        console.print(f"{label}: another process ({held}) is running it; going on with stages "
                                      f"that do not read it", highlight=False)
                    continue
                try:
                    if not (path / "DONE").exists():  # not finished by another process while this one looked
                        steps = st.spec.get("points") == "all"  # an evaluation of every saved step (any kind)
                        for d in st.after:  # what it reads must be on disk
                            self._materialize(seed, d, results[seed], dirs, tags[(seed, name)], steps,
                                              with_start=reads_start(st.kind))
                        results[seed][name] = self._run_stage_locked(
                            st, stage_seed, path, [results[seed][d] for d in st.after], [dirs[d] for d in st.after],
                            label)
                        return seed, name
                finally:
                    locks.release(lock)
            results[seed][name] = json.loads((path / "result.json").read_text())
            console.print(f"{label}: cached {path.name}", highlight=False)
            return seed, name
        return None

    def _materialize(self, seed: int, name: str, results: dict[str, dict], dirs: dict[str, Path], tag: str,
                     steps: bool = False, with_start: bool = False) -> None:
        """Done stage `name`, read by a stage about to run: its checkpoint (and its saved `steps`, for an
        evaluation of every point), and `with_start` the start it records (which evaluation reads for drift),
        must be on disk. A stage whose checkpoint is gone (pruned to save disk, or a results-only copy from
        `postlab archive`) is rebuilt after its own inputs: same spec, seed and inputs, so it trains the same
        model again. Only what a running stage reads is rebuilt: a trainer reading an archive's carried
        warm-up does not rebuild the base that warm-up started from."""
        st, path = self.study.stages[name], dirs[name]
        start = results[name].get("start")
        if with_start and start and st.after and not (path / start).exists():
            self._materialize(seed, st.after[0], results, dirs, tag)
        if not missing_checkpoint(results[name], path, steps):
            return
        for d in st.after:
            self._materialize(seed, d, results, dirs, tag, with_start=reads_start(st.kind))
        results[name] = self.rebuild_stage(st, self.stage_seed(name, seed), path, [results[d] for d in st.after],
                                           [dirs[d] for d in st.after], f"{tag} seed {seed} {name} ({st.kind})", steps)

    def rebuild_stage(self, st: Stage, seed: int, path: Path, inputs: list[dict], input_dirs: list[Path],
                      label: str, steps: bool = False) -> dict:
        """Run a done stage whose checkpoint is gone once more, under its lock (a process that waited finds
        it rebuilt). What is left of its trainer run is removed first: resuming a run whose final model
        was deleted is not what the cache recorded."""
        with _stage_lock(path, label):
            if (path / "DONE").exists():
                result = json.loads((path / "result.json").read_text())
                if not missing_checkpoint(result, path, steps):  # another process rebuilt it while we waited
                    return result
                console.print(f"{label}: its checkpoints are gone (pruned, or a results-only archive); rebuilding it",
                              highlight=False)
                (path / "DONE").unlink()
            shutil.rmtree(path / "run", ignore_errors=True)
            result = self._run_stage_locked(st, seed, path, inputs, input_dirs, label, rebuilding=True)
            check = compare_rebuilt(self.root, path)
            if check["different"]:  # another machine or thread count: the results cached downstream of it
                console.print(f"[yellow]{label}: the rebuilt model differs from the one the archive left out "
                              f"({', '.join(check['different'])}): stages cached downstream of it were measured on "
                              f"the original; results of stages run now start from the rebuilt one[/yellow]")
            elif check["same"]:
                console.print(f"{label}: rebuilt the same model as the archived one (sha256)", highlight=False)
            write_json_atomic(path / "rebuilt.json", check)
            return result

    def _run_stage_locked(self, st: Stage, seed: int, path: Path, inputs: list[dict], input_dirs: list[Path],
                          label: str, rebuilding: bool = False) -> dict:
        resumed = path.exists() and not rebuilding
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / "stage.json", {"name": st.name, "kind": st.kind, "after": st.after, "seed": seed,
                                                "spec": st.spec, "inputs": [str(d) for d in input_dirs]})
        console.print(f"{label}: {'rebuilding' if rebuilding else 'resuming' if resumed else 'running'} -> {path}",
                      highlight=False)
        start = time.time()
        ctx = StageContext(self.study, st, seed, path, inputs, input_dirs)
        self.calls.append((seed, st.name))
        result = resolve_kind(st.kind)(ctx) or {}
        compute = dict(result.get("compute") or {})
        for key in ("tokens_trained", "tokens_generated", "params"):  # integer counts, whatever a custom kind gave
            compute[key] = int(compute.get(key) or 0)
        compute["flops"] = flops(compute["params"], compute["tokens_trained"], compute["tokens_generated"])
        compute["wall_time_s"] = round(time.time() - start, 2)
        compute["resumed"] = resumed
        result.update({"stage": st.name, "kind": st.kind, "seed": seed, "hash": path.name.rsplit("-", 1)[-1],
                       "compute": compute})
        write_json_atomic(path / "result.json", result)
        write_json_atomic(path / "DONE", {"finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        console.print(f"{label}: done in {compute['wall_time_s']:.1f}s, {compute['flops']:.3g} FLOPs "
                      f"(trained {compute['tokens_trained']:,} / generated {compute['tokens_generated']:,} tokens)",
                      highlight=False)
        return result
