"""On-policy distillation in the RL trainer (`algorithm: opd`): the student samples, a frozen teacher
of another size scores every sampled token, the per-token reverse KL is the advantage."""

import json

import pytest
import torch

import postlab.envs.toy  # noqa: F401
from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.envs import make

from harness import rl_config, tiny_checkpoint


def _cfg(student, teacher, out, **kw):
    kw.setdefault("optim", OptimConfig(lr=1e-3, schedule="constant", weight_decay=0.0))
    kw.setdefault("algorithm", "opd")
    return rl_config(student, out, teacher=teacher, prompts=4, micro=16, steps=1, **kw)


def _train_rows(run):
    return [r for r in map(json.loads, open(run / "metrics.jsonl")) if "reward_mean" in r]


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory):
    """A `tiny` model (3.4M parameters, 5x the nano student) SFT-trained on the toy env's expert: it
    answers in format (a single digit), ~40% of them large enough."""
    from postlab.trainers.sft import BatchConfig, SFTConfig, train_sft

    records = []
    for s in range(2000):
        env = make("toy")
        obs = env.reset(seed=10_000 + s)
        records.append({"messages": obs.messages + [{"role": "assistant", "content": env.expert()}]})
    start = tiny_checkpoint(tmp_path_factory.mktemp("teacher") / "start", preset="tiny", seed=1)
    cfg = SFTConfig(model=ModelConfig(path=str(start)), optim=OptimConfig(lr=2e-3, schedule="constant"),
                    batch=BatchConfig(32, 32), run=RunConfig(out_dir=str(tmp_path_factory.mktemp("t")), max_steps=40,
                                                             progress=False, tensorboard=False))
    return train_sft(cfg, train_records=records)


def test_a_teacher_equal_to_the_student_gives_no_signal(nano_checkpoint, tmp_path):
    from postlab.trainers.rl import train_rl

    train_rl(_cfg(nano_checkpoint, str(nano_checkpoint), tmp_path / "self"))
    (row,) = _train_rows(tmp_path / "self")
    # the sampler's and the teacher's log-probs of the same tokens agree to float noise: reverse KL ~ 0
    assert abs(row["reverse_kl"]) < 1e-4


def test_the_students_reverse_kl_to_the_teacher_falls(nano_checkpoint, toy_teacher, tmp_path):
    """What distillation minimizes, measured on the student's own samples: the per-token reverse KL to
    the SFT teacher falls (measured: 6.3 -> 4.8 nats in 20 steps at 8 x 4, lr 1e-2; at lr 1e-1 the
    student reached reward 0.6 by step 27 in one run and stayed at -1 in another, so the test checks
    the objective, not the reward)."""
    first, last = _distill(nano_checkpoint, toy_teacher, tmp_path, "opd", "reverse_kl")
    assert last < 0.9 * first


def _distill(student, teacher, tmp_path, algorithm: str, metric: str) -> tuple[float, float]:
    """20 steps at 8 x 4, lr 1e-2, from `student` towards `teacher`: `metric`'s mean over the first and
    the last 5 steps."""
    from postlab.trainers.rl import RLBatchConfig, train_rl

    run = tmp_path / algorithm
    train_rl(_cfg(student, str(teacher), run, algorithm=algorithm, batch=RLBatchConfig(8, 4, 32, 1),
                  optim=OptimConfig(lr=1e-2, schedule="constant", weight_decay=0.0),
                  run=RunConfig(out_dir=str(run), max_steps=20, progress=False, tensorboard=False, log_every=1)))
    values = [r[metric] for r in _train_rows(run)]
    first, last = sum(values[:5]) / 5, sum(values[-5:]) / 5
    print(f"\n{algorithm}: {metric} to the teacher per token, first / last 5 steps: {first:.4f} -> {last:.4f}")
    return first, last


def test_distillation_config_errors(nano_checkpoint, tmp_path):
    from postlab.trainers.rl import train_rl

    with pytest.raises(ConfigError, match="teacher: 'opd' distills from a teacher"):
        _cfg(nano_checkpoint, None, tmp_path / "a")
    with pytest.raises(ConfigError, match="teacher: 'grpo' does not read a teacher"):
        _cfg(nano_checkpoint, str(nano_checkpoint), tmp_path / "a", algorithm="grpo")
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        train_rl(_cfg(nano_checkpoint, str(tmp_path / "missing"), tmp_path / "b"))
    other = tiny_checkpoint(tmp_path / "other", extra_special=["<extra>"])
    with pytest.raises(ConfigError, match="another tokenizer"):
        train_rl(_cfg(nano_checkpoint, str(other), tmp_path / "c"))


# ----------------------------------------------------------------------------- GKD: the full-vocabulary form


def test_gkd_from_itself_leaves_the_student_unchanged(nano_checkpoint, tmp_path):
    """GKD's gradient is exact (not sampled): a teacher equal to the student gives JSD 0 at every position,
    so a step with AdamW and no weight decay leaves every weight as it was."""
    from safetensors.torch import load_file

    from postlab.trainers.rl import train_rl

    final = train_rl(_cfg(nano_checkpoint, str(nano_checkpoint), tmp_path / "self", algorithm="gkd"))
    (row,) = _train_rows(tmp_path / "self")
    assert row["jsd"] == 0.0 and row["grad_norm"] == 0.0
    a, b = load_file(str(final / "model.safetensors")), load_file(str(nano_checkpoint / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gkd_step_equals_the_jsd_by_hand(nano_checkpoint, tmp_path):
    """The trainer's logged JSD of step 1 (the student is still the start) equals GKD's JSD_0.5 computed
    with plain transformers forwards of the student and a teacher of another size over the episodes of
    that step (replayed: the step's problems and sampling seed are fixed)."""
    from postlab.models.io import load_model, load_tokenizer
    from postlab.objectives.spectrum import generalized_jsd
    from postlab.trainers.rl import train_rl
    from postlab.trainers.rl_rollouts import play_step

    teacher = tiny_checkpoint(tmp_path / "teacher", preset="micro", seed=1)
    cfg = _cfg(nano_checkpoint, str(teacher), tmp_path / "gkd", algorithm="gkd")
    train_rl(cfg)
    (row,) = _train_rows(tmp_path / "gkd")
    student, teach = load_model(str(nano_checkpoint)).eval(), load_model(str(teacher)).eval()
    divs = []
    with torch.no_grad():
        for ep in play_step(cfg, student, load_tokenizer(str(nano_checkpoint)), 0):
            ids = torch.tensor([ep.input_ids])
            s, t = student(ids).logits[0], teach(ids).logits[0]
            for turn in ep.turns:  # the logits that predict each sampled token
                at = slice(turn.start - 1, turn.start - 1 + len(turn.token_ids))
                divs.append(generalized_jsd(s[at], t[at], 0.5))
    assert row["jsd"] == pytest.approx(torch.cat(divs).mean().item(), rel=1e-4)


def test_the_students_jsd_to_the_teacher_falls(nano_checkpoint, toy_teacher, tmp_path):
    """GKD (JSD_0.5 over the vocabulary, on the student's own samples) brings the student to the SFT teacher."""
    first, last = _distill(nano_checkpoint, toy_teacher, tmp_path, "gkd", "jsd")  # measured: 0.505 -> 0.013
    assert last < 0.7 * first
