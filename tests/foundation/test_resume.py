"""Kill -9 a training process after a checkpoint, resume it with the CLI: bit-identical weights."""

import json
import textwrap

from safetensors.torch import load_file

from postlab.data.records import write_jsonl

from harness import kill_after_checkpoint, run_cli, start_hanging_run
from .helpers import reverse_records

N, K = 8, 4  # train N steps; the killed run checkpoints every 2 steps and dies after checkpoint K


def _config(tmp_path) -> str:
    write_jsonl(reverse_records(200, seed=3), tmp_path / "train.jsonl")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{preset: nano}}
        data: {{train: {tmp_path / 'train.jsonl'}}}
        optim: {{lr: 3.0e-3, warmup_steps: 2}}
        batch: {{sequences_per_step: 16, micro_batch_sequences: 8}}
        run: {{max_steps: {N}, log_every: 1, progress: false, tensorboard: false, seed: 7}}
    """))
    return str(cfg)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    cfg = _config(tmp_path)
    full, killed = tmp_path / "full", tmp_path / "killed"

    # The uninterrupted run, concurrently with the killed one (2 cores).
    uninterrupted = run_cli(["train", "sft", cfg, f"run.out_dir={full}"], background=True)

    # The killed run hangs once step K+1 is logged: checkpoint K is on disk and the dead run has
    # logged metrics past it (which resume must drop).
    proc = start_hanging_run(["train", "sft", cfg, f"run.out_dir={killed}", "run.save_every=2"], hang_step=K + 1)
    kill_after_checkpoint(proc, killed / "checkpoints" / f"step_{K:06d}", timeout=120)
    assert not (killed / "final").exists()
    steps_before = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert max(steps_before) == K + 1  # the dead run logged a step past its last checkpoint

    out, err = uninterrupted.communicate(timeout=120)
    assert uninterrupted.returncode == 0, err[-3000:]
    res = run_cli(["train", "sft", "--resume", str(killed)], timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {killed / 'checkpoints' / f'step_{K:06d}'}" in res.stderr.replace("\n", "")

    a = load_file(str(full / "final" / "model.safetensors"))
    b = load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not (a[k].dtype == b[k].dtype and a[k].equal(b[k]))] == []
    # Optimizer state too: the resumed run's last checkpoint equals the uninterrupted one's.
    sa = load_file(str(full / "checkpoints" / f"step_{N:06d}" / "trainer_state.safetensors"))
    sb = load_file(str(killed / "checkpoints" / f"step_{N:06d}" / "trainer_state.safetensors"))
    assert all(sa[k].equal(sb[k]) for k in sa if k.startswith("optim."))

    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert train_steps == list(range(1, N + 1))  # no duplicates, no gaps
    full_rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows if r["kind"] == "train"] == [r["loss"] for r in full_rows if r["kind"] == "train"]

