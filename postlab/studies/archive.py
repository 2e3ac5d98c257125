"""A study run's results without its model weights, to move between machines and merge.

A study spread over machines (`postlab study ... --only-seed N` on each) or over time needs every
seed's results in one run directory for its report: its CIs pool problems over seeds. Checkpoints
are most of a run's bytes (a 0.6M-parameter lab model: 2.5 MB per model, 7.5 MB per saved step with
its optimizer state) and none of what a report reads, so an archive keeps every completed stage's
`result.json` (evaluations with their per-problem outcomes), `DONE`, `stage.json`, metrics and plots,
and leaves out every directory that holds weights. Unpacked into another run directory it adds the stages that one
lacks; a later stage that needs a checkpoint the archive left out rebuilds it (the runner's
`_materialize`: same spec, seed and inputs, so the same model).

    postlab archive runs/studies/spectrum/math -o spectrum-math-seed0.tar.gz
    postlab unarchive spectrum-math-seed0.tar.gz --out runs/studies
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from postlab.config import ConfigError
from postlab.models.io import CHECKSUMS, file_sha256

# a directory holding one of these is a model (a checkpoint, a final model, a rejuvenated model)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
LEFT_OUT = "left_out_models.json"  # in an archive's run directory: the sha256 of every model it left out
TRAINER_STATE = "trainer_state."  # a saved step's optimizer and loop state (trainer_state.json / .safetensors)


def _stage_dirs(root: Path) -> list[Path]:
    groups = [root / "shared", *sorted(root.glob("seed_*"))]
    return [d for g in groups if g.is_dir() for d in sorted(g.iterdir()) if (d / "stage.json").exists()]


def _result_files(stage: Path, models: list[Path], keep: set[Path] = frozenset()):
    """Every file of a stage directory outside its model directories (and no lock or temporary file);
    the model directories it leaves out are appended to `models`. `keep`: model directories to carry,
    without a saved step's trainer state (the optimizer: resume state of a run that is finished)."""
    for here, dirs, files in os.walk(stage):
        kept = Path(here) in keep
        if not kept and any(f.endswith(WEIGHT_SUFFIXES) for f in files):
            dirs.clear()  # a model: none of it, nor anything under it
            models.append(Path(here))
            continue
        if kept:  # a model directory is flat; what is under it (a sharded run's dcp/) is resume state
            dirs.clear()
        if Path(here) == stage:  # an evaluation's points/ is its resume state, all of it in result.json once done
            dirs[:] = [d for d in dirs if d != "points"]
        dirs.sort()
        for f in sorted(files):
            if not f.endswith((".lock", ".tmp")) and not (kept and f.startswith(TRAINER_STATE)):
                yield Path(here) / f


def _kept_models(stage: Path, what: str) -> set[Path]:
    """The model directories of a done stage that `--keep-models STAGE[:steps]` carries: its final model,
    and with `steps` every saved step its result lists (what an evaluation of `points: all` reads)."""
    result = json.loads((stage / "result.json").read_text())
    paths = [result.get("checkpoint")] + ([c.get("path") for c in result.get("checkpoints") or []]
                                          if what == "steps" else [])
    return {stage / p for p in paths if p}


def parse_keep_models(items: list[str] | tuple, stages) -> dict[str, str]:
    """`STAGE` or `STAGE:steps` items -> {stage: "final" | "steps"}, checked against the study's stages."""
    keep = {}
    for item in items:
        name, _, what = item.partition(":")
        if what not in ("", "final", "steps"):
            raise ConfigError(f"--keep-models {item}: after ':' comes 'steps' (the final model and every saved step) "
                              f"or nothing (the final model)")
        keep[name] = what or "final"
    unknown = [n for n in keep if n not in stages]
    if unknown:
        raise ConfigError(f"--keep-models: {', '.join(unknown)} is not a stage of this study; "
                          f"stages: {', '.join(stages)}")
    return keep


def archive(run_dir: str | Path, out: str | Path, keep_models: list[str] | tuple = ()) -> dict:
    """Write `run_dir` (OUT/NAME/PRESET) as a gzipped tar of NAME/PRESET/...: study.json, the report, and
    every completed stage (DONE) without its model directories. Unfinished stages are left out (their
    run would resume from checkpoints the archive does not carry). `keep_models`: stage names whose final
    model goes in too (a long shared warm-up, so that a run elsewhere continues from it instead of
    training it again); `NAME:steps` carries its saved steps' models too (an RL arm whose evaluation of every
    point runs elsewhere), without their optimizer state. Returns what went in and what not."""
    root = Path(run_dir).resolve()
    if not (root / "study.json").exists():
        raise ConfigError(f"{run_dir}: not a study run directory (no study.json); pass runs/studies/NAME/PRESET")
    keep_models = parse_keep_models(keep_models, json.loads((root / "study.json").read_text()).get("stages") or {})
    prefix = Path(root.parent.name) / root.name
    files = [root / "study.json", *sorted(root.glob("report.*"))]
    unfinished, models = [], []
    for stage in _stage_dirs(root):
        if (stage / "DONE").exists():
            what = keep_models.get(stage.name.rsplit("-", 1)[0])
            files += list(_result_files(stage, models, _kept_models(stage, what) if what else set()))
        else:
            unfinished.append(str(stage.relative_to(root)))
    # what was left out, by sha256, so that a rebuild can say whether it made the same model
    left_out = {m.relative_to(root).as_posix(): model_digests(m) for m in models}
    with tarfile.open(out, "w:gz") as tar:
        for f in files:
            tar.add(f, arcname=str(prefix / f.relative_to(root)), recursive=False)
        data = json.dumps(left_out, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo(str(prefix / LEFT_OUT))
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return {"archive": str(out), "files": len(files) + 1, "bytes": sum(f.stat().st_size for f in files),
            "model_dirs_left_out": len(models), "unfinished_stages_left_out": unfinished}


def model_digests(model_dir: Path) -> dict[str, str]:
    """sha256 of each weight file of a model directory (from its checksums.json where it has one)."""
    listed = {}
    if (model_dir / CHECKSUMS).exists():
        listed = {k: v["sha256"] for k, v in json.loads((model_dir / CHECKSUMS).read_text())["files"].items()}
    return {f.name: listed.get(f.name) or file_sha256(f) for f in sorted(model_dir.iterdir())
            if f.is_file() and f.suffix in WEIGHT_SUFFIXES}


def compare_rebuilt(root: Path, stage: Path) -> dict[str, list[str]]:
    """A rebuilt stage's models against the digests its archive recorded (`left_out_models.json` in the run
    directory): {"same": [...], "different": [...]} model directories, relative to the run directory."""
    recorded_path = root / LEFT_OUT
    out = {"same": [], "different": []}
    if not recorded_path.exists():
        return out
    prefix = stage.relative_to(root).as_posix() + "/"
    for rel, digests in json.loads(recorded_path.read_text()).items():
        if rel.startswith(prefix) and (root / rel).is_dir():
            out["same" if model_digests(root / rel) == digests else "different"].append(rel)
    return out


def unarchive(path: str | Path, out: str | Path) -> dict:
    """Unpack an archive under `out` (e.g. runs/studies), adding only the stages the run directory there
    has not completed: a stage done here keeps its own files (and its checkpoints). study.json and the
    report are written only where there are none (the next `postlab study` rewrites study.json)."""
    out = Path(out)
    try:
        tar = tarfile.open(path, "r:gz")
    except (OSError, tarfile.TarError) as e:
        raise ConfigError(f"{path}: not a postlab study archive ({e}); make one with `postlab archive RUN_DIR -o FILE`")
    with tar:
        members = [m for m in tar.getmembers() if m.isfile()]  # no links, devices or directories
        names = [Path(m.name).parts for m in members]
        unsafe = [m.name for m in members if Path(m.name).is_absolute() or ".." in Path(m.name).parts]
        if unsafe:
            raise ConfigError(f"{path}: refuses to unpack {unsafe[0]!r}: a path outside the run directory")
        if len({p[:2] for p in names}) != 1 or not any(len(p) == 3 and p[2] == "study.json" for p in names):
            raise ConfigError(f"{path}: not a postlab study archive (expected NAME/PRESET/study.json and its stages "
                              f"under one NAME/PRESET); make one with `postlab archive RUN_DIR -o FILE`")
        run_dir = out.joinpath(*names[0][:2])
        # decided before anything is written: a stage is added whole or not at all
        done_here = {p[:4] for p in names if len(p) > 4 and (out.joinpath(*p[:4]) / "DONE").exists()}
        added = set()
        for m, parts in zip(members, names):
            if parts[2:] == (LEFT_OUT,):  # merged: the digests of both archives' left-out models
                here = out / m.name
                recorded = json.loads(tar.extractfile(m).read())
                merged = {**recorded, **(json.loads(here.read_text()) if here.exists() else {})}
                here.parent.mkdir(parents=True, exist_ok=True)
                here.write_text(json.dumps(merged, indent=1, sort_keys=True))
                continue
            if len(parts) == 3 and (out / m.name).exists():
                continue
            if parts[:4] in done_here:
                continue
            # tarfile's "data" filter where this Python has it (3.10.12+, 3.11.4+); the checks above otherwise
            tar.extract(m, out, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            if len(parts) > 4:
                added.add(parts[:4])
    return {"run_dir": str(run_dir), "stages_added": len(added), "stages_kept": len(done_here)}
