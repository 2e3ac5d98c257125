"""Bad input fails early with an error that names the key / file / line / step and what to do."""

import json

import pytest
import torch

from .helpers import reverse_records

from postlab.config import ConfigError, load_config
from postlab.data.records import DataError, read_jsonl
from postlab.models import CheckpointError, load_model, save_pretrained_atomic
from postlab.trainers.common import TrainingError
from postlab.trainers.sft import SFTConfig, train_sft

QUIET = ["run.progress=false", "run.tensorboard=false"]


def sft_cfg(tmp_path, *overrides):
    return load_config(SFTConfig, None, ["model.preset=nano", f"run.out_dir={tmp_path / 'run'}",
                                         "batch.sequences_per_step=8", "batch.micro_batch_sequences=4", *QUIET,
                                         *overrides])


# ------------------------------------------------------------------------------ config


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, None, ["optim.lrr=1e-3"])
    msg = str(e.value)
    assert "optim.lrr" in msg and "Did you mean 'lr'?" in msg and "weight_decay" in msg  # lists the valid keys


def test_unknown_top_level_key_in_yaml(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text("objectiv: dft\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'objectiv'.*Did you mean 'objective'"):
        load_config(SFTConfig, p)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"run\.max_steps: expected an integer, got 'many'"):
        load_config(SFTConfig, None, ["run.max_steps=many"])
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got 'fast'"):
        load_config(SFTConfig, None, ["optim.lr=fast"])


def test_invalid_literal_lists_valid_values():
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, None, ["aggregation=token_means"])
    msg = str(e.value)
    assert "aggregation" in msg and "'token_means'" in msg
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"):
        assert repr(mode) in msg
    assert "Did you mean 'token_mean'?" in msg


def test_unknown_objective_and_objective_args():
    with pytest.raises(ConfigError, match=r"objective.*'dtf'.*Did you mean 'dft'"):
        load_config(SFTConfig, None, ["objective=dtf"])
    with pytest.raises(ConfigError, match=r"objective_args\.kl_coeff.*kl_coef"):
        load_config(SFTConfig, None, ["objective=sft_kl", "objective_args.kl_coeff=0.1"])


def test_invalid_combination_micro_larger_than_step():
    with pytest.raises(ConfigError, match=r"batch\.micro_batch_sequences \(64\) must be <= batch\.sequences_per_step \(32\)"):
        load_config(SFTConfig, None, ["batch.sequences_per_step=32", "batch.micro_batch_sequences=64"])


def test_model_needs_exactly_one_of_path_or_preset():
    with pytest.raises(ConfigError, match="exactly one of model.path"):
        load_config(SFTConfig, None, ["model.path=/x", "model.preset=tiny"])
    with pytest.raises(ConfigError, match=r"model\.preset.*'tinyy'.*Did you mean 'tiny'"):
        load_config(SFTConfig, None, ["model.preset=tinyy"])


# ------------------------------------------------------------------------------ data


def test_malformed_jsonl_gives_file_and_line(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"prompt": "ab=", "completion": "ba"}\n\n{"prompt": "abc=", "completion": \n')
    with pytest.raises(DataError, match=rf"{p}:3: malformed JSON"):
        read_jsonl(p)


def test_record_of_unknown_shape_gives_file_and_line(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"prompt": "ab=", "completion": "ba"}\n{"question": "x"}\n')
    with pytest.raises(DataError, match=rf"{p}:2: .*'prompt'\+'completion'"):
        read_jsonl(p)


def test_malformed_jsonl_fails_training_before_any_work(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"prompt": "ab=", "completion": "ba"}\nnot json\n')
    with pytest.raises(DataError, match=rf"{p}:2"):
        train_sft(sft_cfg(tmp_path, f"data.train={p}"))
    assert not (tmp_path / "run").exists()


def test_empty_dataset(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("\n\n")
    with pytest.raises(DataError, match=rf"{p}: no records \(empty dataset\)"):
        train_sft(sft_cfg(tmp_path, f"data.train={p}"))
    with pytest.raises(DataError, match="empty"):
        train_sft(sft_cfg(tmp_path), train_records=[])
    assert not (tmp_path / "run").exists()


def test_record_without_trainable_tokens(tmp_path):
    p = tmp_path / "train.jsonl"
    rec = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "train": False}]}
    p.write_text(json.dumps({"prompt": "a=", "completion": "a"}) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=rf"{p}:2: .*no trainable token"):
        read_jsonl(p)


def test_records_truncated_to_nothing_are_skipped_or_rejected(tmp_path, char_tokenizer):
    # Every record loses its completion to max_length: nothing to train, a clear error.
    recs = [{"prompt": "abcdefgh=", "completion": "x"}] * 4
    with pytest.raises(DataError, match="no record has a trainable token.*max_length"):
        train_sft(sft_cfg(tmp_path, "data.max_length=4", "run.max_steps=1"), train_records=recs)
    # Some do: they are skipped (a micro-batch of only such records must not crash the step).
    recs = [{"prompt": "abcdefgh=", "completion": "x"}] * 4 + [{"prompt": "a=", "completion": "b"}] * 4
    final = train_sft(sft_cfg(tmp_path, "data.max_length=4", "run.max_steps=2", "data.shuffle=false",
                              f"run.out_dir={tmp_path / 'run2'}"), train_records=recs)
    assert (final / "model.safetensors").exists()


# ------------------------------------------------------------------------------ checkpoints


def _damage(path, how: str) -> bytes:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "header":
        path.write_bytes(b"\xff" * 16 + data[16:])
    else:  # same size, garbage in the JSON header
        path.write_bytes(data[:8] + b"{" * 40 + data[48:])
    return path.read_bytes()


@pytest.mark.parametrize("how", ["truncated", "header", "garbled_json"])
def test_corrupted_safetensors_clear_error_nothing_overwritten(tmp_path, nano_model, char_tokenizer, how):
    ckpt = save_pretrained_atomic(nano_model, char_tokenizer, tmp_path / "m")
    st = ckpt / "model.safetensors"
    damaged = _damage(st, how)
    listing = sorted(p.name for p in ckpt.iterdir())
    with pytest.raises(CheckpointError, match=rf"{st}.*(corrupted|truncated)"):
        load_model(str(ckpt))
    assert st.read_bytes() == damaged and sorted(p.name for p in ckpt.iterdir()) == listing


def test_resume_falls_back_past_a_damaged_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path, capsys):
    """The newest checkpoint is damaged: resume says so, continues from the previous good one and
    ends bit-identical to a run that was never interrupted (constant lr: the schedule ignores max_steps)."""
    from safetensors.torch import load_file

    recs = reverse_records(40)
    common = ["run.save_every=2", "run.keep_checkpoints=5", "optim.schedule=constant"]
    train_sft(sft_cfg(tmp_path, "run.max_steps=4", *common), train_records=recs)
    run = tmp_path / "run"
    st = run / "checkpoints" / "step_000004" / "model.safetensors"
    _damage(st, "truncated")
    resumed = train_sft(sft_cfg(tmp_path, "run.max_steps=6", *common), train_records=recs, resume=run)
    out = capsys.readouterr()
    assert "step_000004" in out.err + out.out and "step_000002" in out.err + out.out
    full = train_sft(load_config(SFTConfig, None, ["model.preset=nano", f"run.out_dir={tmp_path / 'full'}",
                                                   "batch.sequences_per_step=8", "batch.micro_batch_sequences=4",
                                                   *QUIET, "run.max_steps=6", *common]), train_records=recs)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_every_checkpoint_damaged_starts_over_and_says_so(tmp_path, capsys):
    recs = reverse_records(40)
    train_sft(sft_cfg(tmp_path, "run.max_steps=2", "run.save_every=2"), train_records=recs)
    _damage(tmp_path / "run" / "checkpoints" / "step_000002" / "model.safetensors", "truncated")
    train_sft(sft_cfg(tmp_path, "run.max_steps=2", "run.save_every=2"), train_records=recs, resume=tmp_path / "run")
    out = capsys.readouterr()
    assert "no good checkpoint" in out.err + out.out


def test_fresh_run_refuses_to_overwrite_existing_run(tmp_path):
    recs = reverse_records(16)
    train_sft(sft_cfg(tmp_path, "run.max_steps=1"), train_records=recs)
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        train_sft(sft_cfg(tmp_path, "run.max_steps=1"), train_records=recs)


# ------------------------------------------------------------------------------ NaN


def test_nan_loss_stops_names_step_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from postlab.objectives import OBJECTIVES

    nll = OBJECTIVES["nll"]
    calls = {"n": 0}

    def nan_at_step_3(inp, **kw):  # 2 micro-batches per step: calls 5 and 6 are step 3
        calls["n"] += 1
        loss, m = nll.fn(inp, **kw)
        return (loss * float("nan") if calls["n"] >= 5 else loss), m

    monkeypatch.setitem(OBJECTIVES, "nll", type(nll)(**{**nll.__dict__, "fn": nan_at_step_3}))
    cfg = sft_cfg(tmp_path, "run.max_steps=6", "run.save_every=2")
    with pytest.raises(TrainingError) as e:
        train_sft(cfg, train_records=reverse_records(40))
    run = tmp_path / "run"
    assert "at step 3" in str(e.value) and "step_000002" in str(e.value)
    good = run / "checkpoints" / "step_000002"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000002"]
    assert not (run / "final").exists()
    weights = load_model(str(good)).state_dict()  # loads: the last good checkpoint is intact
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_nan_loss_from_cli_exits_with_message(tmp_path, monkeypatch, capsys):
    from postlab.cli.main import main
    from postlab.objectives import OBJECTIVES

    nll = OBJECTIVES["nll"]
    monkeypatch.setitem(OBJECTIVES, "nll", type(nll)(**{**nll.__dict__, "fn": lambda inp, **kw: (inp.logp * float("nan"), {})}))
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in reverse_records(16)))
    code = main(["train", "sft", f"data.train={p}", f"run.out_dir={tmp_path / 'run'}", "model.preset=nano",
                 "batch.sequences_per_step=8", "batch.micro_batch_sequences=8", *QUIET])
    assert code == 2
    assert "non-finite loss at step 1" in capsys.readouterr().err


def test_env_data_source_options_and_their_errors():
    from postlab.data.records import DataError, load_records

    recs = load_records("env:generalpoints/id/3?expert_choice=canonical")
    assert len(recs) == 3 and recs[0]["messages"][-1]["role"] == "assistant"
    with pytest.raises(DataError, match="unknown option.*bogus"):
        load_records("env:generalpoints/id/3?bogus=1")
    with pytest.raises(DataError, match="expected env:NAME/SPLIT/N"):
        load_records("env:generalpoints/id")


def test_a_partial_section_keeps_the_trainers_own_defaults():
    """`optim.lr=...` changes the lr only: DRIFT's constant schedule, warm-up and weight decay stay, as RFT's
    math env stays under `env.eval_splits=[]`; `model.path` replaces SFT's default preset instead of clashing."""
    from postlab.config import load_config
    from postlab.trainers.drift import DRIFTConfig
    from postlab.trainers.rft import RFTConfig
    from postlab.trainers.sft import SFTConfig

    optim = load_config(DRIFTConfig, None, ["model.path=x", "data.paths=[a]", "optim.lr=5e-4"]).optim
    assert (optim.lr, optim.schedule, optim.warmup_ratio, optim.weight_decay) == (5e-4, "constant", 0.1, 0.1)
    assert load_config(RFTConfig, None, ["model.path=x", "env.eval_splits=[]"]).env.name == "math"
    model = load_config(SFTConfig, None, ["model.path=x"]).model
    assert (model.path, model.preset) == ("x", None)
    assert load_config(SFTConfig, None, ["model.preset=micro"]).model.preset == "micro"
