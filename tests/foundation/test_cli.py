"""CLI smoke tests through `postlab.cli.main.main([...])`, and the shipped SFT configs."""

import json

import pytest

from postlab.cli.main import main

from harness import REPO
from .helpers import reverse_records

QUIET = ["run.progress=false", "run.tensorboard=false"]


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "model" in out and "generate" in out


@pytest.mark.parametrize("argv", [["train", "--help"], ["train", "sft", "--help"], ["model", "init", "--help"],
                                  ["generate", "--help"]])
def test_subcommand_help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: postlab" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: postlab" in capsys.readouterr().out


def test_model_init_then_generate(tmp_path, capsys):
    out = tmp_path / "nano"
    assert main(["model", "init", "--preset", "nano", "--out", str(out)]) == 0
    assert "nano" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        assert (out / name).exists(), name
    assert main(["generate", str(out), "--prompt", "abc=", "--prompt", "ab=", "--max-new-tokens", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[0] 'abc='") and lines[1].startswith("[1] 'ab='")


def test_model_init_unknown_preset(capsys):
    assert main(["model", "init", "--preset", "huge", "--out", "/nonexistent/x"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_generate_from_directory_without_model(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["generate", str(tmp_path / "empty"), "--prompt", "x"]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_train_sft_bad_override_exits_2(capsys):
    assert main(["train", "sft", "optim.lrr=1"]) == 2
    assert "Did you mean 'lr'?" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["addition", "reverse"])
def test_shipped_configs_train(tmp_path, capsys, name):
    """configs/sft/*.yaml + the data from configs/sft/make_data.py run under `postlab train sft`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_data", REPO / "configs" / "sft" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    make_data.main(["--out", str(tmp_path / "data")])
    run = tmp_path / "run"
    code = main(["train", "sft", str(REPO / "configs" / "sft" / f"{name}.yaml"),
                 f"data.train={tmp_path / 'data' / name / 'train.jsonl'}",
                 f"data.eval={tmp_path / 'data' / name / 'eval.jsonl'}", f"run.out_dir={run}", "run.max_steps=2",
                 "model.preset=nano", "eval.max_examples=4", *QUIET])
    assert code == 0, capsys.readouterr().err
    assert (run / "final" / "model.safetensors").exists() and (run / "config.yaml").exists()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" and "eval_exact_match" in r for r in rows)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["seed"] == 0 and "git_revision" in meta


def test_readme_mentions_addition_config():
    assert "configs/sft/addition.yaml" in (REPO / "README.md").read_text()
    assert (REPO / "configs" / "sft" / "addition.yaml").exists()


def test_cli_resume_of_finished_run_is_a_no_op(tmp_path, capsys):
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in reverse_records(16)))
    args = ["train", "sft", f"data.train={p}", f"run.out_dir={tmp_path / 'run'}", "model.preset=nano",
            "run.max_steps=2", "run.log_every=1", "batch.sequences_per_step=8", "batch.micro_batch_sequences=8",
            *QUIET]
    assert main(args) == 0
    assert main(["train", "sft", "--resume", str(tmp_path / "run")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]


def test_overrides_after_resume_are_applied(tmp_path, capsys):
    """`postlab train sft --resume RUN run.max_steps=3`: the override after --resume is not rejected."""
    run = tmp_path / "run"
    args = ["model.preset=nano", "data.train=synthetic:reverse/train", f"run.out_dir={run}", "run.max_steps=2",
            "run.save_every=2", "run.log_every=1", "batch.sequences_per_step=8", "batch.micro_batch_sequences=8", *QUIET]
    assert main(["train", "sft", *args]) == 0
    assert main(["train", "sft", "--resume", str(run), "run.max_steps=3"]) == 0
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl") if '"train"' in line]
    assert steps == [1, 2, 3]
    assert json.loads((run / "resumes.jsonl").read_text())["changes"] == [
        {"key": "run.max_steps", "old": 2, "new": 3}]


def test_every_shipped_trainer_config_loads_and_its_data_exist():
    """The README's `postlab train sft|rl configs/...` commands work on a fresh clone: no data file to make."""
    from postlab.config import load_config
    from postlab.data.records import load_records
    from postlab.trainers.rl import RLConfig, validate_env
    from postlab.trainers.sft import SFTConfig

    sft = sorted((REPO / "configs" / "sft").glob("*.yaml"))
    rl = sorted((REPO / "configs" / "rl").glob("*.yaml"))
    assert sft and rl
    for path in sft:
        cfg = load_config(SFTConfig, path)
        assert load_records(cfg.data.train), path
    for path in rl:
        cfg = load_config(RLConfig, path)
        validate_env(cfg.env)
        produced_by = [p for p in sft if load_config(SFTConfig, p).run.out_dir + "/final" == cfg.model.path]
        assert produced_by, f"{path}: model.path {cfg.model.path} is made by no shipped SFT config"
