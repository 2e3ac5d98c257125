"""The entropy bonus (RLConfig.entropy_coef; LUFFY's and UFT's published 0.001): minus the coefficient times the
policy's mean token entropy over the step's trained tokens, with its gradient, UFT's hint tokens left out."""

import pytest
import torch

from postlab.data.records import Encoded
from postlab.objectives import get_objective
from postlab.trainers.common import accumulate_gradients, pack_micro_batches, step_normalizer

from harness import rl_config


def _batches(vocab: int, masks: list[list[float]] | None = None):
    g = torch.Generator().manual_seed(3)
    seqs = [Encoded(torch.randint(10, vocab, (n,), generator=g).tolist(), [0] * 3 + [1] * (n - 3)) for n in (7, 11, 5, 9)]
    batches = pack_micro_batches(seqs, 2)
    for b in batches:
        b.extras["advantages"] = torch.linspace(-1.0, 1.0, b.num_targets, dtype=torch.float64)
        b.extras["old_logp"] = torch.zeros(b.num_targets, dtype=torch.float64)
    if masks is not None:
        for b, m in zip(batches, masks):
            b.extras["entropy_mask"] = torch.tensor(m, dtype=torch.float64)
    return batches


def _model(char_tokenizer):
    from postlab.models import init_model

    return init_model("nano", char_tokenizer, seed=0).double().train()


def _run(model, batches, coef):
    model.zero_grad()
    norm = step_normalizer(batches)
    m = accumulate_gradients(model, batches, get_objective("grpo"), {}, "token_mean", norm, entropy_coef=coef)
    return m["loss"], [p.grad.clone() for p in model.parameters()]


def test_bonus_is_minus_coef_times_the_mean_token_entropy_with_its_gradient(char_tokenizer):
    from postlab.models.forward import token_outputs

    model, batches = _model(char_tokenizer), _batches(len(char_tokenizer))
    loss0, g0 = _run(model, batches, 0.0)
    loss1, g1 = _run(model, batches, 0.5)
    # by hand: every trained token's entropy H = logZ - sum softmax * logits, averaged over the step's tokens
    model.zero_grad()
    outs = [token_outputs(model, b, want_entropy="grad") for b in batches]
    ent = torch.cat([o.entropy for o in outs])
    assert ent.requires_grad and ent.numel() == sum(b.num_targets for b in batches)
    (-0.5 * ent.mean()).backward()
    g_ent = [p.grad.clone() for p in model.parameters()]
    assert max(float(c.abs().max()) for c in g_ent) > 1e-3  # a gradient the comparison below can see
    # (log-probs and entropies are computed in float32 from the float64 model's logits)
    assert loss1 == pytest.approx(loss0 - 0.5 * float(ent.detach().mean()), abs=1e-6)
    for a, b, c in zip(g1, g0, g_ent):
        torch.testing.assert_close(a, b + c, atol=1e-6, rtol=1e-5)
    # a detached entropy (the metric) has no gradient
    assert token_outputs(model, batches[0], want_entropy=True).entropy.requires_grad is False


def test_entropy_mask_averages_over_the_tokens_it_keeps(char_tokenizer):
    """Masking out tokens (UFT's hints) removes their entropy and their count from the mean."""
    from postlab.models.forward import token_outputs

    model = _model(char_tokenizer)
    plain = _batches(len(char_tokenizer))
    masks = [[0.0] * 2 + [1.0] * (b.num_targets - 2) for b in plain]  # the first two trained tokens: a "hint"
    masked = _batches(len(char_tokenizer), masks)
    assert step_normalizer(masked).entropy_tokens == sum(b.num_targets for b in plain) - 2 * len(plain)
    loss0, _ = _run(model, plain, 0.0)
    loss1, _ = _run(model, masked, 0.25)
    with torch.no_grad():
        ent = torch.cat([token_outputs(model, b, want_entropy=True).entropy[2:] for b in plain])
    assert loss1 == pytest.approx(loss0 - 0.25 * float(ent.mean()), abs=1e-6)


def test_defaults_are_the_published_runs(tmp_path):
    from postlab.config import ConfigError

    assert rl_config("x", tmp_path, algorithm="luffy").entropy_bonus == 0.001
    assert rl_config("x", tmp_path, algorithm="uft", env="math").entropy_bonus == 0.001
    assert rl_config("x", tmp_path, algorithm="grpo").entropy_bonus == 0.0
    assert rl_config("x", tmp_path, algorithm="chord").entropy_bonus == 0.0
    assert rl_config("x", tmp_path, algorithm="luffy", entropy_coef=0).entropy_bonus == 0.0
    with pytest.raises(ConfigError, match="entropy_coef must be a number >= 0 .*0.001 for 'luffy'"):
        rl_config("x", tmp_path, algorithm="luffy", entropy_coef=-0.1)
