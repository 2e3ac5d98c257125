"""SFT of a tiny preset learns a small synthetic task; the checkpoint is a plain HF model."""

import json
import subprocess
import sys
import textwrap

from .helpers import reverse_records

from postlab.config import load_config
from postlab.trainers.sft import SFTConfig, train_sft


def test_sft_learns_reverse_and_checkpoint_loads_without_postlab(tmp_path):
    train = reverse_records(2000, seed=0)
    held_out = reverse_records(64, seed=1, exclude={r["prompt"] for r in train})
    cfg = load_config(SFTConfig, None, [
        "model.preset=micro", f"run.out_dir={tmp_path / 'run'}", "run.max_steps=400", "optim.lr=5e-3",
        "optim.warmup_steps=10", "batch.sequences_per_step=32", "batch.micro_batch_sequences=32",
        "run.progress=false", "run.tensorboard=false", "run.log_every=50", "eval.max_new_tokens=8",
        "eval.max_examples=64", "run.num_samples=64"])
    final = train_sft(cfg, train, held_out)

    run = tmp_path / "run"
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert evals[-1]["step"] == 400
    assert evals[-1]["eval_exact_match"] >= 0.9, evals[-1]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 64

    # Plain transformers, no postlab import: greedy generation gives the same answers.
    script = textwrap.dedent(f"""
        import json, sys
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(final)!r})
        model = AutoModelForCausalLM.from_pretrained({str(final)!r}).eval()
        out = []
        for prompt in json.loads(sys.stdin.read()):
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            gen = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
            out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        assert not any(m == "postlab" or m.startswith("postlab.") for m in sys.modules), "postlab was imported"
        print(json.dumps(out))
    """)
    prompts = [r["prompt"] for r in held_out]
    res = subprocess.run([sys.executable, "-c", script], input=json.dumps(prompts), capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    hf = json.loads(res.stdout.strip().splitlines()[-1])
    by_prompt = {s["prompt"]: s["output"] for s in samples}
    assert hf == [by_prompt[p] for p in prompts]  # same greedy answers as postlab's evaluation
    assert sum(h == r["completion"] for h, r in zip(hf, held_out)) / len(held_out) >= 0.9
