"""Kill -9 a RASFT run after a checkpoint, resume it with the CLI: bit-identical weights and the
same refreshes (router, ready queue and refresh RNG come back from the checkpoint)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from safetensors.torch import load_file

from foundation.helpers import printed_so_far
from postlab.data.records import load_records, write_jsonl

REPO = Path(__file__).resolve().parents[2]
N, K = 6, 4  # train N steps; the killed run checkpoints every 2 steps and dies after checkpoint K

# The killed run: the real CLI, with RunDir.log patched to hang once step K+1 is logged.
KILLED = textwrap.dedent("""
    import sys, time
    from postlab import runs
    orig = runs.RunDir.log
    def log(self, step, metrics, kind="train"):
        orig(self, step, metrics, kind)
        if step == {hang} and kind == "train":
            print("HANGING", flush=True)
            time.sleep(600)
    runs.RunDir.log = log
    from postlab.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def _config(tmp_path, checkpoint) -> str:
    write_jsonl(load_records("env:math/id/40"), tmp_path / "items.jsonl")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{path: {checkpoint}}}
        data: {{train: {tmp_path / 'items.jsonl'}, max_length: 256}}
        env: {{name: math, eval_splits: []}}
        optim: {{lr: 1.0e-3, warmup_steps: 1}}
        batch: {{sequences_per_step: 8, micro_batch_sequences: 4}}
        routing: {{refresh_every: 1, route_chunk: 16, calibration_items: 32, max_new_tokens: 16}}
        run: {{max_steps: {N}, log_every: 1, progress: false, tensorboard: false, seed: 5}}
    """))
    return str(cfg)


def _env() -> dict:
    import torch

    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "postlab.cli.main", *args], env=_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _rows(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_rasft_resume_after_sigkill_is_bit_identical(tmp_path, checkpoint):
    cfg = _config(tmp_path, checkpoint)
    full, killed = tmp_path / "full", tmp_path / "killed"
    uninterrupted = _cli(["train", "rasft", cfg, f"run.out_dir={full}"])
    proc = subprocess.Popen([sys.executable, "-c", KILLED.format(hang=K + 1), "train", "rasft", cfg,
                             f"run.out_dir={killed}", "run.save_every=2"], env=_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        ckpt = killed / "checkpoints" / f"step_{K:06d}"
        while not (ckpt / "trainer_state.json").exists() or "HANGING" not in printed_so_far(proc):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "checkpoint never appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and not (killed / "final").exists()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    router = state["router"]
    assert router["counts"]["refreshes"] > 0 and (router["hard_pool"] or router["pending"] or state["ready"])

    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err[-3000:]
    res = subprocess.run([sys.executable, "-m", "postlab.cli.main", "train", "rasft", "--resume", str(killed)],
                         env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]

    a = load_file(str(full / "final" / "model.safetensors"))
    b = load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and [k for k in a if not a[k].equal(b[k])] == []
    assert [r["step"] for r in _rows(killed, "train")] == list(range(1, N + 1))
    assert [r["loss"] for r in _rows(killed, "train")] == [r["loss"] for r in _rows(full, "train")]
    drop = ("time",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in _rows(killed, "refresh")] == \
        [{k: v for k, v in r.items() if k not in drop} for r in _rows(full, "refresh")]

