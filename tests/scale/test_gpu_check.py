"""scripts/gpu_check.sh's CPU-side parts: argument parsing, the Qwen2-0.5B-shaped model and the
local tokenizer, and the clear exit without CUDA. The GPU runs themselves never run here."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_arguments_parse_with_defaults_and_reject_bad_values():
    args = gpu_check.parse_args([])
    assert (args.sft_steps, args.rl_steps, args.precision, args.lora, args.tiny) == (5, 4, "autocast", 0, False)
    args = gpu_check.parse_args(["--tiny", "--lora", "8", "--precision", "bf16", "--backends", "local",
                                 "--gradient-checkpointing", "--no-trl"])
    assert args.tiny and args.lora == 8 and args.gradient_checkpointing and args.no_trl
    cfg = gpu_check.model_config(Path("/x"), args)
    assert cfg.lora.r == 8 and cfg.dtype == "bfloat16" and cfg.autocast is None and cfg.gradient_checkpointing
    assert gpu_check.model_config(Path("/x"), gpu_check.parse_args([])).autocast == "bfloat16"
    for bad in (["--samples", "1"], ["--backends", "local,sglang"], ["--micro", "99"], ["--precision", "fp8"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_full_size_config_has_qwen2_0_5b_parameter_count():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = Qwen2ForCausalLM(Qwen2Config(**gpu_check.QWEN2_0_5B))
    assert sum(p.numel() for p in model.parameters()) == 494_032_768  # Qwen2-0.5B's published count (tied)


def test_tiny_model_and_local_tokenizer_build_and_run_on_cpu(tmp_path):
    from postlab.config import ModelConfig
    from postlab.data.records import encode_all
    from postlab.trainers.common import setup_model

    path = gpu_check.write_checkpoint(tmp_path / "model", tiny=True)
    model, tok = setup_model(ModelConfig(path=str(path)), "cpu")
    cfg = model.config
    assert (cfg.vocab_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (151936, 14, 2)
    assert tok.eos_token == "<|im_end|>" and len(tok) < cfg.vocab_size
    (rec,) = gpu_check.sft_records(1)
    (enc,) = encode_all(tok, [rec])
    text = tok.decode(enc.input_ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([enc.input_ids[:32]])).logits
    assert logits.shape == (1, 32, 151936) and torch.isfinite(logits).all()


def test_exits_with_a_clear_message_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny"], capture_output=True, text=True,
                         timeout=120, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert "no CUDA GPU" in out.stderr and "--allow-cpu" in out.stderr
