"""A failed start leaves no trap (issue 29): a run that failed before its first step (a bad
model.path, a hyperparameter that fails at set-up) is replaced by the corrected command, and
`--resume` of it says so, instead of both refusing until the directory is deleted by hand."""

import json

import pytest

from harness import run_cli
from .helpers import reverse_records

from postlab.config import ConfigError, load_config
from postlab.models import CheckpointError
from postlab.trainers.sft import SFTConfig, train_sft

COMMON = ["batch.sequences_per_step=8", "batch.micro_batch_sequences=4", "run.progress=false",
          "run.tensorboard=false", "run.max_steps=2"]


def cfg(tmp_path, *overrides):
    return load_config(SFTConfig, None, [f"run.out_dir={tmp_path / 'run'}", *COMMON, *overrides])


def test_corrected_command_replaces_a_run_that_failed_to_start(tmp_path, capsys):
    recs = reverse_records(16)
    with pytest.raises((CheckpointError, ConfigError)):
        train_sft(cfg(tmp_path, f"model.path={tmp_path / 'missing'}"), train_records=recs)
    assert (tmp_path / "run" / "config.yaml").exists()  # the failed start wrote its run directory
    final = train_sft(cfg(tmp_path, "model.preset=nano"), train_records=recs)
    captured = capsys.readouterr()
    assert final.exists() and "failed before its first step" in " ".join((captured.out + captured.err).split())
    run = tmp_path / "run"
    assert "preset: nano" in (run / "config.yaml").read_text()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 2


def test_resume_of_a_failed_start_with_another_config_says_what_to_do(tmp_path):
    recs = reverse_records(16)
    with pytest.raises((CheckpointError, ConfigError)):
        train_sft(cfg(tmp_path, f"model.path={tmp_path / 'missing'}"), train_records=recs)
    with pytest.raises(ConfigError, match="failed before its first step.*drop --resume"):
        train_sft(cfg(tmp_path, "model.preset=nano"), train_records=recs, resume=tmp_path / "run")


def test_a_run_that_trained_is_still_never_replaced(tmp_path):
    recs = reverse_records(16)
    train_sft(cfg(tmp_path, "model.preset=nano", "run.max_steps=1"), train_records=recs)
    before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="already holds a run"):
        train_sft(cfg(tmp_path, "model.preset=nano", "optim.lr=1e-4"), train_records=recs)
    assert (tmp_path / "run" / "config.yaml").read_text() == before


def test_a_run_killed_after_logging_steps_is_not_replaced(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {preset: nano}\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "kind": "train", "loss": 1.0}) + "\n")
    with pytest.raises(ConfigError, match="already holds a run"):
        train_sft(cfg(tmp_path, "model.preset=nano"), train_records=reverse_records(16))


def test_cli_failed_start_then_corrected_command(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in reverse_records(16)))
    out = tmp_path / "run"
    base = ["train", "sft", f"data.train={data}", f"run.out_dir={out}", *COMMON]
    bad = run_cli([*base, f"model.path={tmp_path / 'missing'}"])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    good = run_cli([*base, "model.preset=nano"])
    assert good.returncode == 0, good.stderr
    assert (out / "final").exists()
