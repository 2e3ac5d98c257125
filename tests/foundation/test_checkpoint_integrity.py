"""Damaged checkpoints are caught by checksums, resume falls back past them, and missing model paths say so."""

import json
import os

import pytest
import torch

from postlab.models.io import (CHECKSUMS, CheckpointError, load_model, load_tokenizer, save_pretrained_atomic,
                               verify_checkpoint)
from postlab.runs import RunDir, load_trainer_state


def _corrupt_middle(path, n: int = 64 * 1024) -> None:
    """Overwrite `n` random bytes in the middle of `path`, size unchanged: headers stay valid."""
    size = path.stat().st_size
    assert size > 2 * n, "the file must be larger than the damage"
    with open(path, "r+b") as fh:
        fh.seek(size // 2 - n // 2)
        fh.write(os.urandom(n))


def _run_with_checkpoints(tmp_path, model, tok, steps=(2, 4), keep=5) -> RunDir:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()  # so the optimizer has state tensors to save
    run = RunDir(tmp_path / "run", tensorboard=False)
    for step in steps:
        run.save_checkpoint(step, model, tok, optimizer, {}, keep=keep)
    return run


# ------------------------------------------------------------------------------ checksums


def test_checksums_written_and_plain_transformers_still_loads(tmp_path, nano_model, char_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = save_pretrained_atomic(nano_model, char_tokenizer, tmp_path / "m")
    listed = json.loads((ckpt / CHECKSUMS).read_text())["files"]
    assert set(listed) == {p.name for p in ckpt.iterdir()} - {CHECKSUMS}
    assert listed["model.safetensors"]["size"] == (ckpt / "model.safetensors").stat().st_size
    verify_checkpoint(ckpt)
    AutoModelForCausalLM.from_pretrained(str(ckpt))  # checksums.json is invisible to transformers
    AutoTokenizer.from_pretrained(str(ckpt))


def test_corrupted_weights_rejected_with_file_and_hashes(tmp_path, nano_model, char_tokenizer):
    ckpt = save_pretrained_atomic(nano_model, char_tokenizer, tmp_path / "m")
    st = ckpt / "model.safetensors"
    _corrupt_middle(st)
    with pytest.raises(CheckpointError, match=rf"{st}: corrupted: sha256 [0-9a-f]{{64}} found, [0-9a-f]{{64}} "
                                              r"expected.*--resume RUN_DIR"):
        load_model(str(ckpt))
    load_tokenizer(str(ckpt))  # the tokenizer files are intact: only the weights are refused


def test_plain_transformers_dir_without_checksums_loads(tmp_path, nano_model, char_tokenizer):
    model, tok = nano_model, char_tokenizer
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf" / CHECKSUMS).exists()
    loaded = load_model(str(tmp_path / "hf"))
    load_tokenizer(str(tmp_path / "hf"))
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)


# ------------------------------------------------------------------------------ resume fallback


def test_latest_good_checkpoint_skips_damaged_newest(tmp_path, nano_model, char_tokenizer, capsys):
    run = _run_with_checkpoints(tmp_path, nano_model, char_tokenizer)
    step2, step4 = run.checkpoint_dirs()
    assert run.latest_good_checkpoint() == step4
    _corrupt_middle(step4 / "model.safetensors")
    assert run.latest_checkpoint() == step4  # unchanged: the lead switches resume to latest_good_checkpoint
    assert run.latest_good_checkpoint() == step2
    err = capsys.readouterr().err
    assert f"checkpoint {step4} is damaged (file model.safetensors: corrupted: sha256" in err
    assert "falling back to step_000002" in err


def test_damaged_trainer_state_and_no_fallback_left(tmp_path, nano_model, char_tokenizer, capsys):
    run = _run_with_checkpoints(tmp_path, nano_model, char_tokenizer)
    step2, step4 = run.checkpoint_dirs()
    state = step4 / "trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[:-10])  # truncated
    (step2 / "trainer_state.json").unlink()  # an unfinished save
    assert run.latest_good_checkpoint() is None
    err = capsys.readouterr().err
    assert "step_000004 is damaged (file trainer_state.safetensors: truncated" in err
    assert "step_000002 is damaged (file trainer_state.json: missing" in err
    assert err.count("no good checkpoint remains") == 2


def test_load_trainer_state_error_says_what_resume_does(tmp_path, nano_model, char_tokenizer):
    run = _run_with_checkpoints(tmp_path, nano_model, char_tokenizer, steps=(2,))
    ckpt = run.checkpoint_dirs()[0]
    (ckpt / "trainer_state.safetensors").write_bytes(b"garbage")
    opt = torch.optim.AdamW(nano_model.parameters())
    with pytest.raises(CheckpointError, match="--resume RUN_DIR` falls back to the previous good checkpoint") as e:
        load_trainer_state(ckpt, opt)
    assert "older checkpoint" not in str(e.value) and str(ckpt) in str(e.value)


# ------------------------------------------------------------------------------ model paths


@pytest.mark.parametrize("path", ["/nonexistent", "./missing", "runs/x/final", "step_000010"])
def test_missing_local_path_clear_error(path):
    for load in (load_model, load_tokenizer):
        with pytest.raises(CheckpointError, match=rf"^{path}: no such model directory; pass a directory holding "
                                                  r"config.json and \*.safetensors \(e.g. RUN/final\), or a Hugging"):
            load(path)


def test_hub_ids_still_go_to_transformers(monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = []

    def fake(name, **kw):
        seen.append(name)
        raise OSError("offline")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    with pytest.raises(CheckpointError, match=r"Qwen/Qwen2.5-0.5B: cannot load the model \(no such local "
                                              r"directory, and as a Hugging Face hub id: offline\)"):
        load_model("Qwen/Qwen2.5-0.5B")
    assert seen == ["Qwen/Qwen2.5-0.5B"]


def test_eval_missing_checkpoint_exits_2_without_traceback(capsys):
    from postlab.cli.main import main

    assert main(["eval", "/nonexistent", "--env", "toy"]) == 2
    err = capsys.readouterr().err
    assert "postlab: error: /nonexistent: no such model directory" in err and "Traceback" not in err
