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
