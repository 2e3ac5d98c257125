"""Real data in: Parquet records (datasets, else pyarrow, else a clear error), the checkpoint's own
chat template (model.chat_template), and RL on math from a local JSONL/Parquet via `math-jsonl`.
Every file is written by the test; nothing is downloaded."""

import json
import sys

import pytest

from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.data.records import DataError, encode_all, load_records

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

RECORDS = [
    {"messages": [{"role": "user", "content": "2+3="}, {"role": "assistant", "content": "5"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1="},
                  {"role": "assistant", "content": "3", "train": False}, {"role": "user", "content": "Again."},
                  {"role": "assistant", "content": "2"}], "weight": 0.5},
]
PAIRS = [{"prompt": "7*6=", "completion": "42"}, {"prompt": "9-4=", "completion": "5"}]


def _parquet(rows, path):
    # pa.array infers the schema from every row (Table.from_pylist only from the first)
    pq.write_table(pa.Table.from_struct_array(pa.array(rows)), str(path))
    return path


@pytest.mark.parametrize("reader", ["datasets", "pyarrow"])
def test_parquet_records_read_like_their_json(tmp_path, monkeypatch, reader):
    if reader == "datasets":
        pytest.importorskip("datasets")
    else:
        monkeypatch.setitem(sys.modules, "datasets", None)  # not installed: pyarrow reads it
    assert load_records(_parquet(RECORDS, tmp_path / "chat.parquet")) == RECORDS  # nulls Arrow filled in dropped
    assert load_records(str(_parquet(PAIRS, tmp_path / "pairs.parquet"))) == PAIRS


def test_parquet_without_readers_names_the_extra(tmp_path, monkeypatch):
    path = _parquet(PAIRS, tmp_path / "pairs.parquet")
    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"pip install 'postlab\[datasets\]'"):
        load_records(path)


def test_bad_parquet_is_a_data_error_naming_the_row(tmp_path):
    with pytest.raises(DataError, match=r"bad.parquet\[row 1\]: record has none of the keys"):
        load_records(_parquet([{"text": "ok"}, {"other": "x"}], tmp_path / "bad.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read it as Parquet"):
        load_records(tmp_path / "junk.parquet")


def test_sft_trains_from_a_parquet_file(tmp_path):
    from postlab.trainers.sft import BatchConfig, SFTConfig, SFTDataConfig, train_sft

    data = _parquet(PAIRS * 4, tmp_path / "train.parquet")
    cfg = SFTConfig(model=ModelConfig(preset="nano"), data=SFTDataConfig(train=str(data)), batch=BatchConfig(4, 4),
                    run=RunConfig(out_dir=str(tmp_path / "run"), max_steps=1, progress=False, tensorboard=False))
    assert (train_sft(cfg) / "model.safetensors").exists()


def test_the_checkpoints_own_chat_template_renders_messages(tmp_path):
    from benchmarks.gpu_check import CHATML_SPECIALS, CHATML_TEMPLATE
    from postlab.models.tokenizer import PLAIN_CHAT_TEMPLATE
    from postlab.trainers.common import setup_model
    from harness import tiny_checkpoint

    chatml = tiny_checkpoint(tmp_path / "chatml", chat_template=CHATML_TEMPLATE, extra_special=CHATML_SPECIALS,
                             eos="<|im_end|>")
    for choice in ("auto", "tokenizer"):
        _, tok = setup_model(ModelConfig(path=str(chatml), chat_template=choice), "cpu")
        enc = encode_all(tok, RECORDS[1:])[0]
        assert tok.decode(enc.input_ids) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1=<|im_end|>\n"
                                             "<|im_start|>assistant\n3<|im_end|>\n<|im_start|>user\nAgain.<|im_end|>\n"
                                             "<|im_start|>assistant\n2<|im_end|>\n")
        trained = tok.decode([t for t, m in zip(enc.input_ids, enc.loss_mask) if m])
        assert trained == "2<|im_end|>\n"  # the trained turn and its end; never the prompt or the untrained turn
    _, tok = setup_model(ModelConfig(path=str(chatml), chat_template="postlab"), "cpu")
    enc = encode_all(tok, RECORDS[:1])[0]
    assert tok.decode(enc.input_ids) == "<|user|>2+3=<|im_end|><|assistant|>5<|im_end|>"  # turns end with EOS

    base = tiny_checkpoint(tmp_path / "no-template", chat_template="")  # a base checkpoint without a template
    with pytest.raises(ConfigError, match="model.chat_template: 'tokenizer'.*no chat template"):
        setup_model(ModelConfig(path=str(base), chat_template="tokenizer"), "cpu")
    _, tok = setup_model(ModelConfig(path=str(base)), "cpu")  # auto falls back to postlab's plain template
    assert tok.chat_template == PLAIN_CHAT_TEMPLATE
    _, own = setup_model(ModelConfig(preset="nano"), "cpu")  # lab scale: postlab's tokenizer, unchanged
    assert encode_all(own, RECORDS)[0].input_ids == encode_all(tok, RECORDS)[0].input_ids


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_math_jsonl_env_reads_local_files_with_numeric_answers(tmp_path, fmt):
    from postlab.envs import make

    rows = [{"question": "What is 6*7?", "answer": 42}, {"question": "Half of 5?", "answer": 2.5},
            {"problem": "1+1?", "solution": "1+1 = \\boxed{2}"}]
    path = tmp_path / f"math.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        _parquet(rows, path)
    env = make("math-jsonl", split="all", path=str(path))
    assert [env.reset(seed=i).info["answer"] for i in range(3)] == ["42", "2.5", "2"]
    env.reset(seed=0)
    assert env.step("so \\boxed{42}").reward == 1.0
    env.reset(seed=1)
    assert env.step("\\boxed{3}").reward == 0.0


def test_grpo_on_math_from_a_local_parquet(nano_checkpoint, tmp_path):
    from postlab.trainers.rl import RLBatchConfig, RLConfig, RLEnvConfig, RLSamplingConfig, train_rl

    path = _parquet([{"question": f"What is {a}+{a}?", "answer": 2 * a} for a in range(6)], tmp_path / "m.parquet")
    cfg = RLConfig(model=ModelConfig(path=str(nano_checkpoint)),
                   env=RLEnvConfig(name="math-jsonl", split="all", style="compact", kwargs={"path": str(path)},
                                   eval_splits=("all",), eval_episodes=4),
                   batch=RLBatchConfig(2, 2, 4, 1), sampling=RLSamplingConfig(max_new_tokens=4),
                   optim=OptimConfig(lr=1e-3, schedule="constant"),
                   run=RunConfig(out_dir=str(tmp_path / "rl"), max_steps=2, progress=False, tensorboard=False,
                                 log_every=1))
    train_rl(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "rl" / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert [r["eval_all_success"] for r in rows if r["kind"] == "eval"] == [0.0]  # random model, verified by the env
