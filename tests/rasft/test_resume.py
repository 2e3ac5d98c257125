"""Kill -9 a RASFT run after a checkpoint, resume it with the CLI: bit-identical weights and the
same refreshes (router, ready queue and refresh RNG come back from the checkpoint)."""

import json
import textwrap
from pathlib import Path

from safetensors.torch import load_file

from harness import kill_after_checkpoint, run_cli, start_hanging_run
from postlab.data.records import load_records, write_jsonl

N, K = 6, 4  # train N steps; the killed run checkpoints every 2 steps and dies after checkpoint K


def _config(tmp_path, nano_checkpoint) -> str:
    write_jsonl(load_records("env:math/id/40"), tmp_path / "items.jsonl")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{path: {nano_checkpoint}}}
        data: {{train: {tmp_path / 'items.jsonl'}, max_length: 256}}
        env: {{name: math, eval_splits: []}}
        optim: {{lr: 1.0e-3, warmup_steps: 1}}
        batch: {{sequences_per_step: 8, micro_batch_sequences: 4}}
        routing: {{refresh_every: 1, route_chunk: 16, calibration_items: 32, max_new_tokens: 16}}
        run: {{max_steps: {N}, log_every: 1, progress: false, tensorboard: false, seed: 5}}
    """))
    return str(cfg)


def _rows(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_rasft_resume_after_sigkill_is_bit_identical(tmp_path, nano_checkpoint):
    cfg = _config(tmp_path, nano_checkpoint)
    full, killed = tmp_path / "full", tmp_path / "killed"
    uninterrupted = run_cli(["train", "rasft", cfg, f"run.out_dir={full}"], background=True)
    # The killed run hangs once step K+1 is logged, after checkpoint K.
    proc = start_hanging_run(["train", "rasft", cfg, f"run.out_dir={killed}", "run.save_every=2"], hang_step=K + 1)
    ckpt = killed / "checkpoints" / f"step_{K:06d}"
    kill_after_checkpoint(proc, ckpt, timeout=300)
    assert not (killed / "final").exists()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    router = state["router"]
    assert router["counts"]["refreshes"] > 0 and (router["hard_pool"] or router["pending"] or state["ready"])

    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err[-3000:]
    res = run_cli(["train", "rasft", "--resume", str(killed)], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]

    a = load_file(str(full / "final" / "model.safetensors"))
    b = load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and [k for k in a if not a[k].equal(b[k])] == []
    assert [r["step"] for r in _rows(killed, "train")] == list(range(1, N + 1))
    assert [r["loss"] for r in _rows(killed, "train")] == [r["loss"] for r in _rows(full, "train")]
    drop = ("time",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in _rows(killed, "refresh")] == \
        [{k: v for k, v in r.items() if k not in drop} for r in _rows(full, "refresh")]

