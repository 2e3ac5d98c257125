"""scripts/distill_signal.py: OPD's per-token signal on a student's own samples, before any training
(docs/results.md, the reason line's distillation). Its numbers are only worth quoting if each answer's
return is exactly what `opd` trains on: the teacher's minus the student's log-prob of every sampled token."""

import importlib.util

import pytest
import torch

import postlab.envs.toy  # noqa: F401
from postlab.envs import make
from postlab.models.io import load_model, load_tokenizer

from harness import REPO, tiny_checkpoint


def _script():
    spec = importlib.util.spec_from_file_location("distill_signal", REPO / "scripts" / "distill_signal.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sampled_logprob_sum(model, episode) -> float:
    """Independent of the trainer's packing: one plain forward over the episode, summed log-probs of the
    tokens the policy generated (loss_mask)."""
    ids = torch.tensor(episode.input_ids)[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    picked = logp.gather(-1, ids[0, 1:, None])[:, 0]
    mask = torch.tensor(episode.loss_mask[1:], dtype=torch.bool)
    return float(picked[mask].sum())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("signal")
    student_dir = tiny_checkpoint(root / "student", preset="nano", seed=0)
    teacher_dir = tiny_checkpoint(root / "teacher", preset="nano", seed=1)
    return load_model(student_dir).eval(), load_model(teacher_dir).eval(), load_tokenizer(student_dir)


def test_each_answers_return_is_the_teachers_minus_the_students_log_prob(models):
    student, teacher, tok = models
    r = _script().distill_signal(student, teacher, tok, lambda: make("toy"), problems=3, samples=2, max_new_tokens=4)
    assert len(r["episodes"]) == 6 and r["tokens"] > 0
    for episode, ret in zip(r["episodes"], r["returns"]):
        expected = _sampled_logprob_sum(teacher, episode) - _sampled_logprob_sum(student, episode)
        assert ret == pytest.approx(expected, abs=1e-4)
    assert r["positive_mass"] >= 0 >= r["negative_mass"]
    assert r["positive_mass"] + r["negative_mass"] == pytest.approx(sum(r["returns"]), abs=1e-3)
    assert r["right"] + r["wrong"] == 6


def test_a_teacher_equal_to_the_student_says_nothing(models):
    student, _, tok = models
    r = _script().distill_signal(student, student, tok, lambda: make("toy"), problems=2, samples=2, max_new_tokens=4)
    assert all(ret == 0.0 for ret in r["returns"])
    assert r["positive_mass"] == 0.0 and r["negative_mass"] == 0.0


def test_teacher_return_as_a_reward_is_the_same_return(models, tmp_path, monkeypatch):
    """`reward_fn=distill_signal:teacher_return` (GRPO on OPD's sequence return) scores an episode as the
    script does: the teacher's log-prob of the sampled tokens minus the sampler's."""
    student, teacher, tok = models
    teacher.save_pretrained(tmp_path / "teacher")
    monkeypatch.setenv("POSTLAB_TEACHER", str(tmp_path / "teacher"))
    script = _script()
    r = script.distill_signal(student, teacher, tok, lambda: make("toy"), problems=2, samples=2, max_new_tokens=4)
    for episode, ret in zip(r["episodes"], r["returns"]):
        assert script.teacher_return(episode) == pytest.approx(ret, abs=1e-4)
