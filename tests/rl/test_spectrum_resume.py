"""LUFFY, CHORD, UFT and on-policy distillation (reverse KL, GKD) resume bit-identically: a run stopped at
step 2 and resumed to step 4 ends with the weights of one uninterrupted 4-step run (CHORD's mu, LUFFY's
expert traces and UFT's hints are functions of the step, so nothing but the step index has to survive)."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

import postlab.envs.toy  # noqa: F401

from harness import rl_config, tiny_checkpoint


def _cfg(ckpt, out, algorithm, steps, save_every=0):
    from postlab.trainers.rl import ChordConfig, UFTConfig

    # GKD's gradient is exact: a teacher equal to the student gives none, so it distills from another init
    teacher = out.parent / "teacher"
    if algorithm == "gkd" and not teacher.exists():
        tiny_checkpoint(teacher, seed=1)
    extra = {"luffy": {}, "chord": {"chord": ChordConfig(decay=3)}, "opd": {"teacher": str(ckpt)},
             "gkd": {"teacher": str(teacher)}, "uft": {"uft": UFTConfig(hint_steps=3)}}[algorithm]
    return rl_config(ckpt, out, algorithm=algorithm, prompts=2, micro=4, lr=1e-2, steps=steps, save_every=save_every,
                     **extra)


@pytest.mark.parametrize("algorithm", ["luffy", "chord", "opd", "gkd", "uft"])
def test_resume_is_bit_identical(nano_checkpoint, tmp_path, algorithm):
    from postlab.trainers.rl import train_rl

    full = train_rl(_cfg(nano_checkpoint, tmp_path / "a", algorithm, 4))
    half = _cfg(nano_checkpoint, tmp_path / "b", algorithm, 2, save_every=2)
    train_rl(half)
    resumed = train_rl(dataclasses.replace(half, run=dataclasses.replace(half.run, max_steps=4)), resume=tmp_path / "b")
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(nano_checkpoint / "model.safetensors"))
    assert any(not torch.equal(a[k], start[k]) for k in a)  # the runs trained


def test_kill_9_after_a_checkpoint_then_cli_resume(nano_checkpoint, tmp_path):
    """The shared loop's crash path for a spectrum trainer (CHORD: its mu schedule and expert batch are
    functions of the step): kill -9 once step 3 is logged past checkpoint 2, `postlab train rl --resume`,
    and the weights equal an uninterrupted run's."""
    import textwrap

    from harness import kill_after_checkpoint, run_cli, start_hanging_run

    cfg = tmp_path / "chord.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{path: {nano_checkpoint}}}
        algorithm: chord
        chord: {{decay: 3}}
        env: {{name: toy, eval_splits: []}}
        batch: {{prompts_per_step: 2, samples_per_prompt: 4, micro_batch_sequences: 4}}
        sampling: {{max_new_tokens: 4}}
        optim: {{lr: 1.0e-2, schedule: constant}}
        run: {{max_steps: 4, log_every: 1, progress: false, tensorboard: false}}
    """))
    full, killed = tmp_path / "full", tmp_path / "killed"
    uninterrupted = run_cli(["train", "rl", str(cfg), f"run.out_dir={full}"], background=True)
    proc = start_hanging_run(["train", "rl", str(cfg), f"run.out_dir={killed}", "run.save_every=2"], hang_step=3)
    kill_after_checkpoint(proc, killed / "checkpoints" / "step_000002", timeout=120)
    _, err = uninterrupted.communicate(timeout=180)
    assert uninterrupted.returncode == 0, err[-3000:]
    res = run_cli(["train", "rl", "--resume", str(killed)], timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_file(str(full / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
