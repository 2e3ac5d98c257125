"""A battery of hostile inputs over every CLI command (issue 29): each case must end with a clear
one-line error (exit 2) before any expensive work, with no traceback, and without changing a byte of
any file that existed before (the command's documented job aside). In-process and fast: every case
fails before a model is trained or sampled. Counts: docs/bad-input.md."""

import json

import pytest

from postlab.cli.main import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A directory of things a user might point a command at by mistake."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "notes.txt").write_text("my notes, no trailing newline")
    (root / "dir").mkdir()
    (root / "dir" / "keep.txt").write_text("keep")
    (root / "bad.yaml").write_text("optim: {lr: [unclosed\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "typo.yaml").write_text("optimm: {lr: 1e-3}\n")
    (root / "nan.yaml").write_text("model: {preset: nano}\noptim: {lr: .nan}\n")
    (root / "broken.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n{"prompt": "c"}\n')
    (root / "empty.jsonl").write_text("")
    (root / "good.jsonl").write_text("".join(json.dumps({"prompt": f"{i}=", "completion": str(i)[::-1]}) + "\n"
                                             for i in range(10, 30)))
    (root / "traj.jsonl").write_text('{"not": "a trajectory"}\n')
    (root / "fake_ckpt").mkdir()
    (root / "fake_ckpt" / "config.json").write_text("{not json")
    (root / "fake_ckpt" / "model.safetensors").write_bytes(b"\x00" * 64)
    return root


def snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


R = "{root}"
NANO = "model.preset=nano"
Q = ["run.progress=false", "run.tensorboard=false"]


def train(stage, *args):
    data = [f"data.train={R}/good.jsonl"] if stage == "sft" and not any(a.startswith("data.") for a in args) else []
    return ["train", stage, *data, *args, f"run.out_dir={R}/runs/{stage}", *Q]


CASES = {
    # ---------------------------------------------------------------- train: config keys and values
    **{f"train-{s}-typo-key": train(s, NANO, "optim.lrr=1e-3") for s in ("sft", "rl", "rasft", "rft", "drift")},
    **{f"train-{s}-nan-lr": train(s, NANO, "optim.lr=nan") for s in ("sft", "rl", "rasft", "rft", "drift")},
    **{f"train-{s}-inf-lr": train(s, NANO, "optim.lr=.inf") for s in ("sft", "rl", "rasft", "rft", "drift")},
    **{f"train-{s}-nan-grad-clip": train(s, NANO, "optim.grad_clip=nan") for s in ("sft", "rl", "rasft", "rft")},
    **{f"train-{s}-nan-weight-decay": train(s, NANO, "optim.weight_decay=.nan") for s in ("sft", "rl", "rasft")},
    **{f"train-{s}-missing-yaml": ["train", s, f"{R}/nope.yaml"] for s in ("sft", "rl", "rasft", "rft", "drift")},
    **{f"train-{s}-bad-yaml": ["train", s, f"{R}/bad.yaml"] for s in ("sft", "rl", "rasft", "rft", "drift")},
    **{f"train-{s}-list-yaml": ["train", s, f"{R}/list.yaml"] for s in ("sft", "rl", "rasft")},
    **{f"train-{s}-typo-yaml": ["train", s, f"{R}/typo.yaml"] for s in ("sft", "rl", "rft")},
    **{f"train-{s}-nan-yaml": ["train", s, f"{R}/nan.yaml"] for s in ("sft", "rl", "rasft")},
    **{f"train-{s}-resume-nothing": ["train", s, NANO, "--resume", f"{R}/dir"] for s in ("sft", "rl", "rasft",
                                                                                           "rft", "drift")},
    **{f"train-{s}-resume-a-file": ["train", s, NANO, "--resume", f"{R}/notes.txt"] for s in ("sft", "rl")},
    **{f"train-{s}-max-steps-0": train(s, NANO, "run.max_steps=0") for s in ("sft", "rl", "rasft", "rft")},
    **{f"train-{s}-max-steps-word": train(s, NANO, "run.max_steps=many") for s in ("sft", "rl")},
    **{f"train-{s}-no-model": train(s, "model.path=null") for s in ("sft", "rl")},
    **{f"train-{s}-bad-preset": train(s, "model.preset=gigantic") for s in ("sft", "rl", "rasft")},
    **{f"train-{s}-override-no-equals": ["train", s, NANO, "optim.lr"] for s in ("sft", "rl")},
    **{f"train-{s}-override-empty-key": ["train", s, NANO, ".lr=1"] for s in ("sft", "rl")},
    "train-rl-bad-algorithm": train("rl", NANO, "algorithm=grpoo"),
    "train-rl-nan-temperature": train("rl", NANO, "sampling.temperature=nan"),
    "train-rl-nan-beta": train("rl", NANO, "beta=nan"),
    "train-rl-inf-value-lr": train("rl", NANO, "value_lr=.inf"),
    "train-rl-unknown-env": train("rl", NANO, "env.name=nowhere"),
    "train-rasft-nan-weight-scale": train("rasft", NANO, "routing.rollout_weight_scale=nan"),
    "train-rasft-nan-advantage-tanh": train("rasft", NANO, "routing.advantage_tanh=nan"),
    "train-rasft-nan-temperature": train("rasft", NANO, "routing.temperature=nan"),
    "train-rasft-inf-rho": train("rasft", NANO, "rho_max=.inf"),
    "train-rft-nan-temperature": train("rft", NANO, "sampling.temperature=nan"),
    "train-rft-missing-model": train("rft", f"model.path={R}/nope"),
    "train-drift-no-data": train("drift", NANO),
    "train-drift-missing-data": train("drift", NANO, f"data.paths=[{R}/nope.jsonl]"),
    "train-drift-not-trajectories": train("drift", NANO, f"data.paths=[{R}/traj.jsonl]"),
    "train-drift-notes-as-data": train("drift", NANO, f"data.paths=[{R}/notes.txt]"),
    "train-drift-nan-beta": train("drift", NANO, f"data.paths=[{R}/traj.jsonl]", "weights.beta=nan"),
    "train-drift-inf-penalty": train("drift", NANO, f"data.paths=[{R}/traj.jsonl]", "weights.format_penalty=.inf"),
    "train-drift-nan-epochs": train("drift", NANO, f"data.paths=[{R}/traj.jsonl]", "epochs=nan"),
    "train-sft-broken-jsonl": train("sft", NANO, f"data.train={R}/broken.jsonl"),
    "train-sft-empty-jsonl": train("sft", NANO, f"data.train={R}/empty.jsonl"),
    "train-sft-missing-data": train("sft", NANO, f"data.train={R}/nope.jsonl"),
    "train-sft-data-is-dir": train("sft", NANO, f"data.train={R}/dir"),
    "train-sft-corrupt-ckpt": train("sft", f"model.path={R}/fake_ckpt"),
    # ---------------------------------------------------------------- rollout
    "rollout-no-model": ["rollout", f"out={R}/o.jsonl"],
    "rollout-missing-model": ["rollout", f"model={R}/nope", f"out={R}/o.jsonl"],
    "rollout-corrupt-model": ["rollout", f"model={R}/fake_ckpt", f"out={R}/o.jsonl"],
    "rollout-out-is-dir": ["rollout", f"model={R}/fake_ckpt", f"out={R}/dir"],
    "rollout-out-under-file": ["rollout", f"model={R}/fake_ckpt", f"out={R}/notes.txt/o.jsonl"],
    "rollout-nan-temperature": ["rollout", f"model={R}/fake_ckpt", "temperature=nan"],
    "rollout-inf-temperature": ["rollout", f"model={R}/fake_ckpt", "temperature=.inf"],
    "rollout-nan-top-p": ["rollout", f"model={R}/fake_ckpt", "top_p=nan"],
    "rollout-zero-prompts": ["rollout", f"model={R}/fake_ckpt", "n_prompts=0"],
    "rollout-negative-seed": ["rollout", f"model={R}/fake_ckpt", "seed=-1"],
    "rollout-typo-key": ["rollout", f"model={R}/fake_ckpt", "samples_per_promt=4"],
    "rollout-reserved-env-kwarg": ["rollout", f"model={R}/fake_ckpt", "env.kwargs={split: ood}"],
    "rollout-old-env-key": ["rollout", f"model={R}/fake_ckpt", "env_kwargs={env: math}"],
    "rollout-env-as-name": ["rollout", f"model={R}/fake_ckpt", "env=unary-feedback"],
    "rollout-missing-yaml": ["rollout", f"{R}/nope.yaml"],
    "rollout-bad-yaml": ["rollout", f"{R}/bad.yaml"],
    "rollout-bad-dtype": ["rollout", f"model={R}/fake_ckpt", "dtype=float8"],
    # ---------------------------------------------------------------- rejuvenate / diagnose
    "rejuvenate-missing-base": ["rejuvenate", "--base", f"{R}/nope", "--sft", f"{R}/nope2", "--out", f"{R}/rj",
                                "--scorer", "drift"],
    "rejuvenate-corrupt-base": ["rejuvenate", "--base", f"{R}/fake_ckpt", "--sft", f"{R}/fake_ckpt", "--out",
                                f"{R}/rj", "--scorer", "drift"],
    "rejuvenate-out-is-sft": ["rejuvenate", "--base", f"{R}/fake_ckpt", "--sft", f"{R}/dir", "--out", f"{R}/dir",
                              "--scorer", "drift"],
    "rejuvenate-out-is-sft-force": ["rejuvenate", "--base", f"{R}/fake_ckpt", "--sft", f"{R}/dir", "--out",
                                    f"{R}/dir", "--scorer", "drift", "--force"],
    "rejuvenate-out-inside-sft": ["rejuvenate", "--base", f"{R}/fake_ckpt", "--sft", f"{R}/dir", "--out",
                                  f"{R}/dir/sub", "--scorer", "drift", "--force"],
    "rejuvenate-out-holds-base": ["rejuvenate", "--base", f"{R}/dir/b", "--sft", f"{R}/fake_ckpt", "--out",
                                  f"{R}/dir", "--scorer", "drift", "--force"],
    "rejuvenate-out-is-file": ["rejuvenate", "--base", f"{R}/fake_ckpt", "--sft", f"{R}/fake_ckpt", "--out",
                               f"{R}/notes.txt", "--scorer", "drift"],
    "rejuvenate-out-nonempty-dir": ["rejuvenate", "--base", f"{R}/fake_ckpt", "--sft", f"{R}/fake_ckpt",
                                    "--out", f"{R}/dir", "--scorer", "drift"],
    "rejuvenate-nan-alpha": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj", "--alpha", "nan"],
    "rejuvenate-alpha-2": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj", "--alpha", "2",
                           "--scorer", "drift"],
    "rejuvenate-fraction-1": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj", "--fraction", "1",
                              "--scorer", "drift"],
    "rejuvenate-fraction-negative": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj", "--fraction",
                                     "-0.1", "--scorer", "drift"],
    "rejuvenate-inf-omega": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj", "--omega", "inf"],
    "rejuvenate-dla-without-env": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj"],
    "rejuvenate-bad-scorer": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj", "--scorer", "magic"],
    "rejuvenate-bad-alpha-module": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj",
                                    "--alpha-module", "embed", "--scorer", "drift"],
    "rejuvenate-alpha-module-nan": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj",
                                    "--alpha-module", "embed=nan", "--scorer", "drift"],
    "rejuvenate-n-zero": ["rejuvenate", "--base", "b", "--sft", "s", "--out", f"{R}/rj", "--env", "math",
                          "--n", "0"],
    "diagnose-missing-ckpt": ["diagnose", f"{R}/nope", "--base", f"{R}/nope2", "--env", "math"],
    "diagnose-corrupt-ckpt": ["diagnose", f"{R}/fake_ckpt", "--base", f"{R}/fake_ckpt", "--env", "math"],
    "diagnose-nan-tau": ["diagnose", "c", "--base", "b", "--env", "math", "--tau", "nan"],
    "diagnose-inf-eps": ["diagnose", "c", "--base", "b", "--env", "math", "--perturb-eps", "inf"],
    "diagnose-no-env": ["diagnose", "c", "--base", "b"],
    "diagnose-word-n": ["diagnose", "c", "--base", "b", "--env", "math", "--n", "many"],
    # ---------------------------------------------------------------- study / report
    "study-unknown": ["study", "no-such-study", "--plan"],
    "study-typo-preset": ["study", "drift", "--preset", "dmeo", "--plan"],
    "study-typo-stage": ["study", "drift", "--preset", "demo", "--plan", "stages.math-drfit.config.epochs=2"],
    "study-nan-lr": ["study", "drift", "--preset", "demo", "--plan", "stages.math-drift.config.optim.lr=nan"],
    "study-inf-penalty": ["study", "drift", "--preset", "demo", "--plan",
                          "stages.math-drift.config.weights.format_penalty=.inf"],
    "study-nan-temperature": ["study", "rasft", "--preset", "demo", "--plan",
                              "stages.math-grpo.config.sampling.temperature=nan"],
    "study-typo-config-key": ["study", "drift", "--preset", "demo", "--plan",
                              "stages.math-drift.config.optim.lrr=1"],
    "study-bad-kind": ["study", "drift", "--preset", "demo", "--plan", "stages.math-drift.kind=drfit"],
    "study-override-no-equals": ["study", "drift", "--preset", "demo", "--plan", "stages.math-drift"],
    "study-zero-seeds": ["study", "drift", "--preset", "demo", "--plan", "--seeds", "0"],
    "study-word-seeds": ["study", "drift", "--preset", "demo", "--plan", "--seeds", "three"],
    "report-missing-dir": ["report", f"{R}/nope"],
    "report-a-file": ["report", f"{R}/notes.txt"],
    "report-empty-dir": ["report", f"{R}/dir"],
    # ---------------------------------------------------------------- eval / env / data / model / generate
    "eval-missing-ckpt": ["eval", f"{R}/nope", "--env", "math"],
    "eval-corrupt-ckpt": ["eval", f"{R}/fake_ckpt", "--env", "math"],
    "eval-nan-temperature": ["eval", "c", "--env", "math", "--temperature", "nan"],
    "eval-bad-decoding": ["eval", "c", "--env", "math", "--decoding", "beam"],
    "eval-no-env": ["eval", "c"],
    "env-show-unknown": ["env", "show", "nowhere"],
    "env-show-bad-split": ["env", "show", "generalpoints", "--split", "ood-rulez"],
    "data-export-unknown-env": ["data", "export", "nowhere", "-n", "2", "--out", f"{R}/d.jsonl"],
    "data-export-bad-split": ["data", "export", "generalpoints", "--split", "nope", "-n", "2", "--out",
                              f"{R}/d.jsonl"],
    "data-export-out-is-dir": ["data", "export", "generalpoints", "-n", "2", "--out", f"{R}/dir"],
    "model-init-bad-preset": ["model", "init", "--preset", "gigantic", "--out", f"{R}/m"],
    "generate-missing-ckpt": ["generate", f"{R}/nope", "--prompt", "hi"],
    "generate-nan-temperature": ["generate", f"{R}/fake_ckpt", "--prompt", "hi", "--temperature", "nan"],
    "unknown-command": ["fly"],
    "train-unknown-stage": ["train", "dpo"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_gives_one_clear_error_and_changes_nothing(name, world, capsys, monkeypatch):
    monkeypatch.chdir(world)
    import importlib

    def expensive(*a, **k):
        raise AssertionError(f"{name}: reached the training / sampling loop: bad input must fail before it")

    for module in ("sft", "rl", "rasft", "rft", "drift"):
        monkeypatch.setattr(importlib.import_module(f"postlab.trainers.{module}"), "run_loop", expensive)
    monkeypatch.setattr("postlab.rollout.offline.sample_chunk", expensive)
    argv = [a.replace(R, str(world)) for a in CASES[name]]
    before = snapshot(world)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a usage error
        code = e.code
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, f"{name}: exit {code}\n{err[-2000:]}"
    assert "Traceback" not in err + captured.out and "internal error" not in err, err[-2000:]
    assert "error" in err
    after = snapshot(world)
    assert {k: v for k, v in after.items() if k in before} == before  # no byte of an existing file changed
    created = sorted(set(after) - set(before))
    assert not [c for c in created if not c.startswith("runs")], created  # nothing made outside a run dir


def test_the_battery_is_large():
    assert len(CASES) >= 100
    json.dumps(CASES)
