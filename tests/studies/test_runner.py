import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from postlab.config import ConfigError
from postlab.studies import StudyRunner, load_study, resolve

from harness import kill_when

STUDY = {
    "name": "toy",
    "seeds": 1,
    "stages": {
        "base": {"kind": "fake_stages:train", "data": {"steps": 2, "gain": 0.2}},
        "warm": {"kind": "fake_stages:train", "after": "base", "data": {"steps": 2, "gain": 0.1}},
        "sft": {"kind": "fake_stages:train", "after": "warm", "data": {"steps": 3, "gain": -0.1}},
        "rl": {"kind": "fake_stages:train", "after": "warm", "data": {"steps": 3, "gain": 0.2}},
        "eval-warm": {"kind": "fake_stages:evaluate", "after": "warm"},
        "eval-sft": {"kind": "fake_stages:evaluate", "after": "sft"},
        "eval-rl": {"kind": "fake_stages:evaluate", "after": "rl"},
    },
    "presets": {"demo": {"stages": {"rl": {"data": {"steps": 1}}}}},
}


def _run(data, out, preset=None, seeds=None, overrides=None, tmp=None):
    path = Path(tmp or out) / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    runner = StudyRunner(load_study(str(path), preset=preset, seeds=seeds, overrides=overrides), out)
    runner.run()
    return runner


def _cli_env(log: Path | None = None) -> dict:
    """Environment for a `postlab study` subprocess that can import fake_stages (and log its stages to `log`)."""
    env = {**os.environ, "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    if log is not None:
        env["FAKE_STAGE_LOG"] = str(log)
    return env


def test_cache_reruns_nothing_then_exactly_the_dependents(tmp_path):
    out = tmp_path / "runs"
    r1 = _run(STUDY, out, tmp=tmp_path)
    assert [s for _, s in r1.calls] == ["base", "warm", "sft", "rl", "eval-warm", "eval-sft", "eval-rl"] or \
        set(s for _, s in r1.calls) == set(STUDY["stages"])
    r2 = _run(STUDY, out, tmp=tmp_path)
    assert r2.calls == []
    # change one value of the rl stage: only rl and its evaluation rerun
    r3 = _run(STUDY, out, tmp=tmp_path, overrides=["stages.rl.data.gain=0.3"])
    assert sorted(s for _, s in r3.calls) == ["eval-rl", "rl"]
    # change the warm-up: everything downstream of it, nothing upstream
    r4 = _run(STUDY, out, tmp=tmp_path, overrides=["stages.warm.data.steps=3"])
    assert sorted(s for _, s in r4.calls) == sorted(["warm", "sft", "rl", "eval-warm", "eval-sft", "eval-rl"])
    # a label is presentation only; a new seed runs everything for that seed only
    r5 = _run(STUDY, out, tmp=tmp_path, overrides=["stages.sft.label=SFT"])
    assert r5.calls == []
    r6 = _run(STUDY, out, tmp=tmp_path, seeds=2)
    assert {seed for seed, _ in r6.calls} == {1} and len(r6.calls) == len(STUDY["stages"])
    # presets are override layers: demo changes rl only
    r7 = _run(STUDY, out, tmp=tmp_path, preset="demo")
    assert r7.root.name == "demo" and len(r7.calls) == len(STUDY["stages"])
    r8 = _run(STUDY, out, tmp=tmp_path, preset="demo")
    assert r8.calls == []
    # DONE marker, result and manifest
    d = r1.plan()[0]["rl"]
    assert (d / "DONE").exists() and json.loads((d / "result.json").read_text())["compute"]["flops"] == \
        6 * 10 * 300 + 2 * 10 * 30
    manifest = json.loads((r1.root / "study.json").read_text())
    assert manifest["dirs"]["0"]["rl"].startswith("seed_0/rl-")


def test_shared_stage_runs_once_for_every_seed(tmp_path):
    from postlab.studies.report import compute_table, load_run

    data = {**STUDY, "seeds": 3, "stages": {**STUDY["stages"], "base": {**STUDY["stages"]["base"], "shared": True}}}
    r1 = _run(data, tmp_path / "runs", tmp=tmp_path)
    runs_of = lambda name: sorted(seed for seed, s in r1.calls if s == name)  # noqa: E731
    assert runs_of("base") == [0] and runs_of("warm") == [0, 1, 2]
    plan = r1.plan()
    assert plan[0]["base"] == plan[2]["base"] and plan[0]["base"].parent.name == "shared"
    assert plan[0]["warm"] != plan[1]["warm"]
    # the compute table counts the shared stage once, the per-seed stages three times
    rows = {r[0]: r for r in compute_table(load_run(r1.root))["rows"]}
    assert rows["base"][2] == "1" and rows["base"][3] == "200" and rows["warm"][2] == "3" and rows["warm"][3] == "600"
    # without `shared` (a different spec, so a different hash) every seed runs its own base
    r2 = _run(data, tmp_path / "runs", tmp=tmp_path, overrides=["stages.base.shared=false"])
    assert sorted(seed for seed, s in r2.calls if s == "base") == [0, 1, 2]
    with pytest.raises(ConfigError, match="shared across seeds but its input"):
        resolve({"stages": {"a": {"kind": "sft"}, "b": {"kind": "sft", "after": "a", "shared": True}}})


def test_validation_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        resolve({"stages": {"a": {"kind": "eval", "after": "nope"}}})
    with pytest.raises(ConfigError, match="cycle"):
        resolve({"stages": {"a": {"kind": "eval", "after": "b"}, "b": {"kind": "eval", "after": "a"}}})
    with pytest.raises(ConfigError, match="unknown kind 'trian'"):
        resolve({"stages": {"a": {"kind": "trian"}}})
    with pytest.raises(ConfigError, match="unknown field 'confg'.*config"):
        resolve({"stages": {"a": {"kind": "sft", "confg": {}}}})
    with pytest.raises(ConfigError, match="unknown preset"):
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(STUDY))
        load_study(str(tmp_path / "s.yaml"), preset="paper")
    with pytest.raises(ConfigError, match="unknown study"):
        load_study("no-such-study")


def test_disabled_stage_disables_dependents_and_defaults_merge():
    data = {"env": "x", "defaults": {"*": {"style": "compact"}, "sft": {"config": {"optim": {"lr": 0.1}}}},
            "stages": {"a": {"kind": "sft", "config": {"run": {"max_steps": 3}}},
                       "b": {"kind": "sft", "after": "a", "enabled": False},
                       "c": {"kind": "eval", "after": "b"}, "d": {"kind": "eval", "after": "a"},
                       "e": {"kind": "eval", "after": "c"}}}
    st = resolve(data)
    assert list(st.stages) == ["a", "d"]
    # what left the plan, and why: the disabled stage is named even two stages down
    assert st.dropped == {"b": None, "c": "b", "e": "b"}
    assert st.dropped_with() == {"b": ["c", "e"]}
    assert st.stages["a"].spec["config"] == {"optim": {"lr": 0.1}, "run": {"max_steps": 3}}
    assert st.stages["a"].spec["env"] == "x" and st.stages["d"].spec["style"] == "compact"


def test_killed_study_resumes(tmp_path):
    data = dict(STUDY)
    data["stages"] = {"base": {"kind": "fake_stages:train", "data": {"steps": 2}},
                      "long": {"kind": "fake_stages:train", "after": "base", "data": {"steps": 40, "sleep": 0.05}},
                      "eval": {"kind": "fake_stages:evaluate", "after": "long"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    log = tmp_path / "log.jsonl"
    env = _cli_env(log)
    cmd = [sys.executable, "-m", "postlab.cli.main", "study", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs"),
           "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = tmp_path / "runs" / "toy" / "default" / "seed_0"

    def long_stage_checkpointed_a_few_steps() -> bool:
        ck = list(runs.glob("long-*/run/ckpt.json")) if runs.exists() else []
        return bool(ck) and json.loads(ck[0].read_text())["step"] >= 5

    kill_when(proc, long_stage_checkpointed_a_few_steps, timeout=30, what="the long stage's step-5 checkpoint")
    long_dir = next(runs.glob("long-*"))
    assert not (long_dir / "DONE").exists() and (next(runs.glob("base-*")) / "DONE").exists()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    starts = [e["what"] for e in events if e["stage"] == "long"]
    assert starts[0] == "start@0" and starts[1].startswith("start@") and int(starts[1][6:]) >= 5  # resumed
    assert [e["stage"] for e in events].count("base") == 1  # the finished stage was not rerun
    assert (long_dir / "DONE").exists()
    assert json.loads((long_dir / "result.json").read_text())["compute"]["resumed"] is True
    assert "final success" in out.stderr + out.stdout


def test_preset_extends_another(tmp_path):
    data = {"seeds": 1, "env": "x",
            "stages": {"a": {"kind": "sft", "config": {"run": {"max_steps": 3}, "optim": {"lr": 0.1}}}},
            "presets": {"demo": {"stages": {"a": {"config": {"run": {"max_steps": 5}}}}},
                        "lab": {"extends": "demo", "seeds": 3, "stages": {"a": {"config": {"optim": {"lr": 0.2}}}}},
                        "loop1": {"extends": "loop2"}, "loop2": {"extends": "loop1"}, "bad": {"extends": "nope"}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    lab = load_study(str(path), preset="lab")
    assert lab.seeds == [0, 1, 2] and lab.preset == "lab"
    assert lab.raw["stages"]["a"]["config"] == {"run": {"max_steps": 5}, "optim": {"lr": 0.2}}  # demo's, then lab's
    assert "extends" not in lab.raw
    with pytest.raises(ConfigError, match="cycle: loop1 -> loop2 -> loop1"):
        load_study(str(path), preset="loop1")
    with pytest.raises(ConfigError, match="'bad' extends 'nope'"):
        load_study(str(path), preset="bad")


def test_seeds_in_separate_processes_share_the_shared_stage_and_match_one_process(tmp_path):
    """`--only-seed` per process: the shared base runs once (the other process waits on its lock),
    each process runs its own seed, and the stage results equal a one-process run's."""
    data = {**STUDY, "seeds": 2, "stages": {
        "base": {"kind": "fake_stages:train", "shared": True, "data": {"steps": 30, "sleep": 0.1, "gain": 0.2}},
        "warm": {"kind": "fake_stages:train", "after": "base", "data": {"steps": 2, "gain": 0.1}},
        "eval-warm": {"kind": "fake_stages:evaluate", "after": "warm"}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    log = tmp_path / "log.jsonl"
    env = _cli_env(log)
    cmd = [sys.executable, "-m", "postlab.cli.main", "study", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "par")]
    procs = [subprocess.Popen([*cmd, "--only-seed", str(seed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for seed in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(e["stage"] == "base" for e in events) == 1  # once, with the first seed
    assert sorted(e["seed"] for e in events if e["stage"] == "warm") == [0, 1]
    root = tmp_path / "par" / "toy" / "default"
    assert (root / "report.md").exists()  # written by the process that completed the study
    one = _run(data, tmp_path / "one", tmp=tmp_path)
    for seed, dirs in one.plan().items():
        for name, d in dirs.items():
            par = json.loads((root / d.relative_to(one.root) / "result.json").read_text())
            ref = json.loads((d / "result.json").read_text())
            assert {k: v for k, v in par.items() if k != "compute"} == {k: v for k, v in ref.items() if k != "compute"}
    with pytest.raises(ConfigError, match="--only-seed 5: not a seed of this study; its seeds are \\[0, 1\\]"):
        StudyRunner(load_study(str(tmp_path / "s.yaml")), tmp_path / "par", only_seeds=[5])


def test_a_stage_another_process_holds_is_passed_over_and_taken_when_it_frees(tmp_path, monkeypatch):
    """`sft` is held by "another process" (a second open file's flock): the runner runs every stage that does
    not read it (rl and the evaluations of warm and rl), waits only when nothing else is left, then runs sft
    and its evaluation itself (the holder let go without finishing it). The results equal a plain run's."""
    import fcntl

    from postlab.studies import runner as runner_mod

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    runner = StudyRunner(load_study(str(path)), tmp_path / "runs")
    sft_lock = runner_mod._lock_file(runner.plan()[0]["sft"])
    sft_lock.parent.mkdir(parents=True, exist_ok=True)
    holder = open(sft_lock, "a+")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    holder.write("pid 4242 since now\n")
    holder.flush()
    sleeps = []

    def other_process_lets_go():  # the runner waits only when every stage left waits for the holder
        sleeps.append(list(runner.calls))
        holder.close()

    monkeypatch.setattr(runner, "_wait_for_others", other_process_lets_go)
    results = runner.run()
    order = list(runner.study.stages)  # plan order
    free = [n for n in order if n not in ("sft", "eval-sft")]
    assert set(free) == {"base", "warm", "rl", "eval-warm", "eval-rl"}
    assert [s for _, s in runner.calls] == free + ["sft", "eval-sft"]
    assert len(sleeps) == 1 and [s for _, s in sleeps[0]] == free
    assert list(results[0]) == order  # plan order, as a one-process run returns them
    plain = _run(STUDY, tmp_path / "plain", tmp=tmp_path)
    for name, d in plain.plan()[0].items():
        ref = json.loads((d / "result.json").read_text())
        assert {k: v for k, v in results[0][name].items() if k != "compute"} == \
            {k: v for k, v in ref.items() if k != "compute"}


def test_two_processes_of_one_command_split_the_stages(tmp_path):
    """The same `postlab study` command started twice: stages a and b each finish only while the other is
    running (fake_stages.rendezvous), so the study completes only if the second process takes b while the
    first runs a, instead of waiting for a's lock. Each stage runs once; the evaluation after a runs once."""
    meet = tmp_path / "meet"
    data = {"name": "pair", "seeds": 1, "stages": {
        "a": {"kind": "fake_stages:rendezvous", "data": {"dir": str(meet), "partner": "b"}},
        "b": {"kind": "fake_stages:rendezvous", "data": {"dir": str(meet), "partner": "a"}},
        "eval-a": {"kind": "fake_stages:evaluate", "after": "a"}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    log = tmp_path / "log.jsonl"
    cmd = [sys.executable, "-m", "postlab.cli.main", "study", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs"),
           "--no-report"]
    procs = [subprocess.Popen(cmd, env=_cli_env(log), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(e["stage"] for e in events) == ["a", "b", "eval-a"]
    pids = {e["stage"]: e["what"] for e in events if e["stage"] in ("a", "b")}
    assert pids["a"] != pids["b"]  # one process each
    assert sum("is running it; going on with stages that do not read it" in out for out in outs) >= 1


def test_a_process_running_only_its_seed_leaves_the_report_to_the_one_that_completes(tmp_path):
    data = {**STUDY, "seeds": 2}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    env = _cli_env()
    cmd = [sys.executable, "-m", "postlab.cli.main", "study", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs")]
    first = subprocess.run([*cmd, "--only-seed", "1"], env=env, capture_output=True, text=True, timeout=120)
    root = tmp_path / "runs" / "toy" / "default"
    assert first.returncode == 0 and "seeds [0] still have stages to run" in first.stdout + first.stderr
    assert not (root / "report.md").exists() and not (root / "seed_0").exists()
    second = subprocess.run([*cmd, "--only-seed", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and (root / "report.md").exists()


def test_commands_that_each_disable_other_stages_leave_one_manifest_with_every_result(tmp_path, capsys):
    """Part of a study run with `-s stages.rl.enabled=false`, the rest with sft disabled: study.json (what
    `postlab report` reads) keeps the first command's stages instead of the last command's plan alone. A
    stage both plan follows the newer config; a directory no command planned is not carried."""
    from postlab.studies.report import load_run

    out = tmp_path / "runs"
    first = _run(STUDY, out, tmp=tmp_path, seeds=2, overrides=["stages.rl.enabled=false"])
    assert not any(s == "rl" for _, s in first.calls)
    abandoned = first.plan()[1]["sft"].parent / "sft-0123456789ab"  # an interrupted stage of another config
    abandoned.mkdir()
    _run(STUDY, out, tmp=tmp_path, seeds=2, overrides=["stages.sft.enabled=false"])
    assert "keeps 4 started stage(s) of earlier commands" in capsys.readouterr().err
    run = load_run(first.root)
    for seed in ("0", "1"):
        assert set(run["results"][seed]) == set(STUDY["stages"])
    assert run["stages"]["eval-sft"] == {"kind": "fake_stages:evaluate", "after": ["sft"]}
    # rl's config changes in a third command that again runs without sft: rl's entry moves to its new
    # directory, sft's stays
    third = _run(STUDY, out, tmp=tmp_path, seeds=2, overrides=["stages.sft.enabled=false", "stages.rl.data.gain=0.3"])
    manifest = json.loads((first.root / "study.json").read_text())
    assert manifest["dirs"]["0"]["rl"] == str(third.plan()[0]["rl"].relative_to(first.root))
    assert manifest["dirs"]["0"]["sft"] == str(first.plan()[0]["sft"].relative_to(first.root))
    assert abandoned.name not in json.dumps(manifest)


def test_commands_running_side_by_side_with_different_switches_leave_every_stage_in_the_manifest(tmp_path):
    """Two commands at once: A (rl off) has written its manifest and is inside seed 0's sft when B (sft off)
    starts and finishes. B's manifest keeps A's running stage (its directory exists); A, finishing last,
    writes the manifest again with B's finished stages. The report then has every stage of both seeds."""
    from postlab.studies.report import load_run

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**STUDY, "seeds": 2}))
    a = StudyRunner(load_study(str(tmp_path / "s.yaml"), overrides=["stages.rl.enabled=false"]), tmp_path / "runs")
    a.write_manifest(a.plan())  # A has started...
    a.plan()[0]["sft"].mkdir(parents=True)  # ...and is running seed 0's sft
    b = StudyRunner(load_study(str(tmp_path / "s.yaml"), overrides=["stages.sft.enabled=false"]), tmp_path / "runs")
    b.run()
    manifest = json.loads((a.root / "study.json").read_text())
    assert "sft" in manifest["dirs"]["0"] and "rl" in manifest["dirs"]["1"]
    a.run()
    run = load_run(a.root)
    for seed in ("0", "1"):
        assert set(run["results"][seed]) == set(STUDY["stages"])


def test_independent_study_trains_the_shared_stages_once_per_seed_in_its_own_directory(tmp_path):
    data = {**STUDY, "seeds": 2, "stages": {**STUDY["stages"], "base": {**STUDY["stages"]["base"], "shared": True},
                                            "warm": {**STUDY["stages"]["warm"], "shared": True}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    shared = StudyRunner(load_study(str(tmp_path / "s.yaml")), tmp_path / "runs")
    shared.run()
    assert sorted(seed for seed, s in shared.calls if s in ("base", "warm")) == [0, 0]
    study = load_study(str(tmp_path / "s.yaml"), independent=True)
    assert study.preset == "default-independent" and not any(study.is_shared(s) for s in study.stages)
    runner = StudyRunner(study, tmp_path / "runs")
    runner.run()
    assert sorted((seed, s) for seed, s in runner.calls if s in ("base", "warm")) == \
        [(0, "base"), (0, "warm"), (1, "base"), (1, "warm")]  # each seed its own, with its own seed
    plan = runner.plan()
    assert plan[1]["base"].parent.name == "seed_1" and runner.root.name == "default-independent"
    assert json.loads((plan[1]["base"] / "result.json").read_text())["seed"] == 1
    assert (shared.root / "study.json").exists() and shared.root != runner.root  # the shared study's run is kept


def test_an_archive_carries_the_results_without_weights_and_a_needed_checkpoint_is_rebuilt(tmp_path):
    """A study run on another machine (or pruned of its checkpoints): `postlab archive` packs its results
    without model directories, `postlab unarchive` adds them to a run directory, its report reads the
    same results, and a stage that runs later rebuilds exactly the checkpoints it reads (same spec and
    seed: the same model), nothing else."""
    import tarfile

    from postlab.studies.archive import archive, unarchive
    from postlab.studies.report import load_run

    from postlab.cli.main import main

    a = _run(STUDY, tmp_path / "a", tmp=tmp_path)
    assert main(["archive", str(a.root), "-o", str(tmp_path / "cli.tar.gz")]) == 0
    assert main(["unarchive", str(tmp_path / "cli.tar.gz"), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "toy" / "default" / "study.json").exists()
    info = archive(a.root, tmp_path / "toy.tar.gz")
    with tarfile.open(tmp_path / "toy.tar.gz") as tar:
        names = tar.getnames()
    assert "toy/default/study.json" in names and not any(n.endswith("model.safetensors") for n in names)
    assert info["files"] == len(names) and info["unfinished_stages_left_out"] == []
    assert unarchive(tmp_path / "toy.tar.gz", tmp_path / "b") == {
        "run_dir": str(tmp_path / "b" / "toy" / "default"), "stages_added": 7, "stages_kept": 0}
    b_root = tmp_path / "b" / "toy" / "default"
    assert load_run(b_root)["results"] == load_run(a.root)["results"]
    assert _run(STUDY, tmp_path / "b", tmp=tmp_path).calls == []  # all done: nothing needs a checkpoint
    # a changed evaluation of rl reads rl's checkpoint: rl and what it starts from are rebuilt, sft is not
    b = _run(STUDY, tmp_path / "b", tmp=tmp_path, overrides=["stages.eval-rl.data.offsets.id=0.05"])
    assert [s for _, s in b.calls] == ["base", "warm", "rl", "eval-rl"]
    rl = b.plan()[0]["rl"]
    # the archive recorded the sha256 of each model it left out: the rebuild says it made the same one
    assert json.loads((rl / "rebuilt.json").read_text()) == {"same": [f"seed_0/{rl.name}/run/final"], "different": []}
    assert (rl / "run/final/model.safetensors").read_text() == \
        (a.plan()[0]["rl"] / "run/final/model.safetensors").read_text()
    assert not (b.plan()[0]["sft"] / "run/final").exists()
    # unpacking again keeps what is done here (with its rebuilt checkpoints)
    assert unarchive(tmp_path / "toy.tar.gz", tmp_path / "b")["stages_added"] == 0
    assert (rl / "run/final/model.safetensors").exists()
    # a rebuild that trains another model (another machine, another thread count) says so
    sft = b.plan()[0]["sft"]
    left_out = json.loads((b_root / "left_out_models.json").read_text())
    left_out[f"seed_0/{sft.name}/run/final"] = {"model.safetensors": "0" * 64}
    (b_root / "left_out_models.json").write_text(json.dumps(left_out))
    b = _run(STUDY, tmp_path / "b", tmp=tmp_path, overrides=["stages.eval-sft.data.offsets.id=0.05"])
    assert [s for _, s in b.calls] == ["sft", "eval-sft"]  # base and warm are on disk since the last rebuild
    assert json.loads((sft / "rebuilt.json").read_text())["different"] == [f"seed_0/{sft.name}/run/final"]
    (tmp_path / "junk.tar.gz").write_text("not an archive")
    with pytest.raises(ConfigError, match="not a postlab study archive"):
        unarchive(tmp_path / "junk.tar.gz", tmp_path / "c")


def test_an_archive_may_carry_the_final_model_of_a_long_stage_so_that_it_is_not_rebuilt(tmp_path):
    import tarfile

    from postlab.studies.archive import archive, unarchive

    a = _run(STUDY, tmp_path / "a", tmp=tmp_path)
    archive(a.root, tmp_path / "toy.tar.gz", keep_models=["warm"])
    with tarfile.open(tmp_path / "toy.tar.gz") as tar:
        weights = [n for n in tar.getnames() if n.endswith("model.safetensors")]
    assert weights == [f"toy/default/seed_0/{a.plan()[0]['warm'].name}/run/final/model.safetensors"]
    unarchive(tmp_path / "toy.tar.gz", tmp_path / "b")
    b = _run(STUDY, tmp_path / "b", tmp=tmp_path, overrides=["stages.eval-rl.data.offsets.id=0.05"])
    # from the carried warm-up: base, where warm started, is not rebuilt (rl reads warm's model, not its start)
    assert [s for _, s in b.calls] == ["rl", "eval-rl"]
    # an evaluation reads its input's start too (drift from it): carrying rl alone, warm is rebuilt for it
    archive(a.root, tmp_path / "rl.tar.gz", keep_models=["rl"])
    unarchive(tmp_path / "rl.tar.gz", tmp_path / "c")
    c = _run(STUDY, tmp_path / "c", tmp=tmp_path, overrides=["stages.eval-rl.data.offsets.id=0.05"])
    assert [s for _, s in c.calls] == ["base", "warm", "eval-rl"]
    assert (c.plan()[0]["warm"] / "run/final/model.safetensors").exists()
    with pytest.raises(ConfigError, match="--keep-models: wram is not a stage of this study"):
        archive(a.root, tmp_path / "x.tar.gz", keep_models=["wram"])


def test_an_archive_may_carry_an_arms_saved_steps_for_an_evaluation_of_every_point(tmp_path):
    """`rl:steps` carries rl's final model and each saved step's model (not their optimizer state): an evaluation
    of every point of rl then runs where the archive is unpacked without training rl again (with warm, rl's start,
    which an evaluation reads for drift); with `rl` alone (its final model) it rebuilds rl first."""
    import tarfile

    from postlab.studies.archive import archive, unarchive

    study = {**STUDY, "stages": {**STUDY["stages"], "rl": {**STUDY["stages"]["rl"],
                                                            "data": {"steps": 3, "gain": 0.2, "step_dirs": True}}}}
    a = _run(study, tmp_path / "a", tmp=tmp_path)
    rl = a.plan()[0]["rl"].name
    archive(a.root, tmp_path / "steps.tar.gz", keep_models=["rl:steps", "warm"])
    with tarfile.open(tmp_path / "steps.tar.gz") as tar:
        carried = sorted(n.split(f"{rl}/", 1)[1] for n in tar.getnames() if rl in n and "/run/" in n and
                         n.endswith(".safetensors"))
    assert carried == ["run/checkpoints/step_000001/model.safetensors", "run/checkpoints/step_000002/model.safetensors",
                       "run/checkpoints/step_000003/model.safetensors", "run/final/model.safetensors"]
    every_point = ["stages.eval-rl.points=all", "stages.eval-rl.data.offsets.id=0.05"]
    unarchive(tmp_path / "steps.tar.gz", tmp_path / "b")
    b = _run(study, tmp_path / "b", tmp=tmp_path, overrides=every_point)
    assert [s for _, s in b.calls] == ["eval-rl"]
    archive(a.root, tmp_path / "final.tar.gz", keep_models=["rl"])
    unarchive(tmp_path / "final.tar.gz", tmp_path / "c")
    c = _run(study, tmp_path / "c", tmp=tmp_path, overrides=every_point)
    assert [s for _, s in c.calls] == ["base", "warm", "rl", "eval-rl"]  # its steps were left out: rl rebuilt
    assert json.loads((b.plan()[0]["eval-rl"] / "result.json").read_text())["points"] == \
        json.loads((c.plan()[0]["eval-rl"] / "result.json").read_text())["points"]
    with pytest.raises(ConfigError, match="--keep-models rl:all: after ':' comes 'steps'"):
        archive(a.root, tmp_path / "x.tar.gz", keep_models=["rl:all"])


def test_unarchive_refuses_a_path_outside_the_run_directory(tmp_path):
    import io
    import tarfile

    from postlab.studies.archive import unarchive

    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as tar:
        for name in ("toy/default/study.json", "toy/default/../../../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ConfigError, match="outside the run directory"):
        unarchive(tmp_path / "evil.tar.gz", tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()
