"""`postlab study NAME [--preset demo|tiny|paper] [--seeds N] [--only-seed N] [--out DIR]`, `postlab report RUN_DIR`,
and `postlab archive RUN_DIR` / `postlab unarchive FILE` (a run's results without weights, to merge across machines)."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("study", help="run a study (a pipeline of stages, cached per stage) and print its table",
                       description="Run a study declared in configs/studies/NAME.yaml (or a YAML path): every stage "
                                   "over every seed, each cached by the hash of its config and inputs, so an "
                                   "interrupted or changed study reruns only what is needed. Prints the final ID/OOD "
                                   "table and writes report.html / report.md.")
    p.add_argument("name", help="study name (configs/studies/NAME.yaml) or a path to a study YAML")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the study, e.g. stages.rl.config.optim.lr=1e-5")
    p.add_argument("-s", "--set", dest="set_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a dotted override (repeatable; use this form after other options)")
    p.add_argument("--preset", default=None, help="override layer defined by the study (demo | tiny | paper)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the study's / preset's)")
    p.add_argument("--only-seed", dest="only_seeds", type=int, action="append", default=None, metavar="N",
                   help="run only this seed's stages (repeatable). Processes sharing --out split a study's stages "
                        "(with or without --only-seed): each passes over a stage another is running and takes the "
                        "next one whose inputs are done; shared stages run once, with the first seed, and the "
                        "process that completes the study writes the report")
    p.add_argument("--independent", action="store_true",
                   help="share no stage across seeds: every seed trains its own base and warm-up, so the seeds vary "
                        "the starting point too (costs the shared stages once per seed)")
    p.add_argument("--out", default="runs/studies", help="root directory of study runs (default runs/studies)")
    p.add_argument("--plan", action="store_true", help="only validate every stage and show whether each is cached")
    p.add_argument("--no-report", action="store_true", help="do not write report.html / report.md")
    p.set_defaults(func=_run_study)

    r = sub.add_parser("report", help="write a study run's HTML and Markdown report",
                       description="Build report.html (self-contained: plots embedded) and report.md for a study run "
                                   "directory (runs/studies/NAME/PRESET).")
    r.add_argument("run_dir")
    r.add_argument("--out", default=None, help="directory for the report files (default: the run dir)")
    r.set_defaults(func=_run_report)

    a = sub.add_parser("archive", help="pack a study run's results without model weights (to merge runs of other machines)",
                       description="Write a study run directory's study.json, report and every completed stage's "
                                   "results (evaluations, metrics, plots) as a .tar.gz, leaving out every directory "
                                   "that holds model weights. `postlab unarchive` adds it to another run directory; "
                                   "a later stage that needs a left-out checkpoint rebuilds it.")
    a.add_argument("run_dir", help="runs/studies/NAME/PRESET")
    a.add_argument("-o", "--out", default=None, help="archive file (default: NAME-PRESET.tar.gz here)")
    a.add_argument("--keep-models", default="", metavar="STAGE[:steps],...",
                   help="stages whose final model goes in too (e.g. a long shared warm-up, so that a run elsewhere "
                        "continues from it instead of training it again); STAGE:steps carries its saved steps' "
                        "models as well, without optimizer state (what an evaluation of every point reads)")
    a.set_defaults(func=_run_archive)

    u = sub.add_parser("unarchive", help="add a `postlab archive` file's stages to a study run directory",
                       description="Unpack an archive under --out, adding the stages the run directory there has not "
                                   "completed (a stage done here keeps its files). Then `postlab report` pools every "
                                   "seed, and `postlab study ... --only-seed N` runs the seeds still missing.")
    u.add_argument("archive")
    u.add_argument("--out", default="runs/studies", help="root directory of study runs (default runs/studies)")
    u.set_defaults(func=_run_unarchive)


def _run_study(args) -> int:
    from rich.table import Table

    from postlab.progress import console
    from postlab.studies.report import build_report, rich_tables
    from postlab.studies.runner import StudyRunner, missing_checkpoint
    from postlab.studies.spec import load_study

    study = load_study(args.name, preset=args.preset, overrides=[*args.overrides, *args.set_overrides],
                       seeds=args.seeds, independent=args.independent)
    runner = StudyRunner(study, args.out, only_seeds=args.only_seeds)
    # the stages this command disabled (-s stages.X.enabled=false) and what they took along; a preset's own
    # disabled stages are its design and go unmentioned
    from postlab.config import parse_override

    disabled_here = {key[1] for key, value in map(parse_override, [*args.overrides, *args.set_overrides])
                     if len(key) == 3 and key[0] == "stages" and key[2] == "enabled" and value is False}
    for root, along in study.dropped_with().items():
        if root not in disabled_here:
            continue
        names = (", ".join(along) if len(along) <= 6 else
                 f"{len(along)} stages ({', '.join(along[:3])}, ..., {along[-1]})")
        console.print(f"not planned: {names} (after {root}, which is disabled; "
                      f"-s stages.NAME.after=[...] gives a stage other inputs)", highlight=False)
    if args.plan:
        runner.validate()  # the same checks `run` does before its first stage
        table = Table(title=f"study {study.name} ({study.preset or 'default'}): {runner.root}")
        for col in ("seed", "stage", "kind", "after", "status", "directory"):
            table.add_column(col)
        plan, status = runner.plan(), runner.status()
        for seed, dirs in plan.items():
            for name, d in dirs.items():
                st = study.stages[name]
                state = status[seed][name]
                if state == "done":  # a missing model is rebuilt when a stage that runs reads it
                    result = json.loads((d / "result.json").read_text())
                    state = ("done (results only)" if missing_checkpoint(result, d, steps=False) else
                             "done (final model only)" if missing_checkpoint(result, d) else state)
                table.add_row(str(seed), name, st.kind, ",".join(st.after), state, d.name)
        console.print(table)
        return 0
    only = f" (this process: seeds {runner.only_seeds})" if args.only_seeds else ""
    console.print(f"study {study.name} preset={study.preset or 'default'} seeds={study.seeds}{only} "
                  f"stages={len(study.stages)} -> {runner.root}", highlight=False)
    runner.run()
    if not runner.complete():  # other seeds are still running elsewhere: a report now would be a partial one
        todo = sorted(seed for seed, stages in runner.status().items() if any(s != "done" for s in stages.values()))
        console.print(f"seeds {runner.only_seeds} done; seeds {todo} still have stages to run. The study's tables and "
                      f"report come from the run that completes it, or `postlab report {runner.root}` after it.",
                      highlight=False)
        return 0
    for t in rich_tables(runner.root):
        console.print(t)
    if not args.no_report:
        from postlab import locks

        # two --only-seed processes may complete the study at once
        with locks.waiting_for(runner.root / ".report.lock"):
            html_path, md_path = build_report(runner.root)
        console.print(f"report: {html_path} and {md_path}")
    return 0


def _run_report(args) -> int:
    from postlab.config import ConfigError
    from postlab.progress import console
    from postlab.studies.report import build_report

    if not (Path(args.run_dir) / "study.json").exists():
        raise ConfigError(f"{args.run_dir}: not a study run directory (no study.json); pass runs/studies/NAME/PRESET")
    html_path, md_path = build_report(args.run_dir, args.out)
    console.print(f"wrote {html_path} and {md_path}")
    return 0


def _run_archive(args) -> int:
    from postlab.progress import console
    from postlab.studies.archive import archive

    root = Path(args.run_dir).resolve()
    keep = [n.strip() for n in args.keep_models.split(",") if n.strip()]
    info = archive(args.run_dir, args.out or f"{root.parent.name}-{root.name}.tar.gz", keep_models=keep)
    console.print(f"wrote {info['archive']}: {info['files']} files, {info['bytes'] / 1e6:.1f} MB before compression, "
                  f"{'the models of ' + ', '.join(keep) if keep else 'no model weights'}", highlight=False)
    if info["unfinished_stages_left_out"]:
        console.print(f"left out {len(info['unfinished_stages_left_out'])} unfinished stage(s): "
                      f"{', '.join(info['unfinished_stages_left_out'])}", highlight=False)
    return 0


def _run_unarchive(args) -> int:
    from postlab.progress import console
    from postlab.studies.archive import unarchive

    info = unarchive(args.archive, args.out)
    console.print(f"{info['run_dir']}: added {info['stages_added']} stage(s); kept {info['stages_kept']} already "
                  f"done here. `postlab report {info['run_dir']}` reports every seed it now holds.", highlight=False)
    return 0
