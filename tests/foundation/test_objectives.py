"""Objective values against hand computation, and `aggregate` in every mode."""

import math

import pytest
import torch

from postlab.objectives import AGGREGATION_MODES, LossInputs, Normalizer, aggregate, get_objective

P = [0.5, 0.25, 0.8, 0.05]  # p_t of 4 trained tokens: 3 in sequence 0, 1 in sequence 1
SEQ = [0, 0, 0, 1]


def inputs(**kw) -> LossInputs:
    logp = torch.tensor([math.log(p) for p in P], dtype=torch.float64, requires_grad=True)
    return LossInputs(logp=logp, seq_idx=torch.tensor(SEQ), num_seqs=2, **kw)


def close(t, expected):
    assert torch.allclose(t.detach(), torch.tensor(expected, dtype=torch.float64), atol=1e-12), (t, expected)


def test_nll_is_minus_logp():
    loss, _ = get_objective("nll").fn(inputs())
    close(loss, [math.log(2), math.log(4), -math.log(0.8), math.log(20)])


def test_nll_applies_record_weights():
    loss, _ = get_objective("nll").fn(inputs(seq_weights=torch.tensor([2.0, 0.5], dtype=torch.float64)))
    close(loss, [2 * math.log(2), 2 * math.log(4), -2 * math.log(0.8), 0.5 * math.log(20)])


def test_dft_value_and_stop_gradient():
    inp = inputs()
    loss, _ = get_objective("dft").fn(inp)
    close(loss, [-p * math.log(p) for p in P])
    loss.sum().backward()
    # d/dlogp [-sg(p) log p] = -p (the weight is not differentiated)
    close(inp.logp.grad, [-p for p in P])


def test_weighted_nll_sample_and_token_weights():
    w_seq = torch.tensor([2.0, 0.5], dtype=torch.float64)
    w_tok = torch.tensor([1.0, 0.0, 3.0, 4.0], dtype=torch.float64)
    inp = inputs(seq_weights=w_seq, token_weights=w_tok)
    loss, _ = get_objective("weighted_nll").fn(inp)
    close(loss, [2 * 1 * math.log(2), 0.0, -2 * 3 * math.log(0.8), 0.5 * 4 * math.log(20)])
    loss.sum().backward()
    close(inp.logp.grad, [-2.0, 0.0, -6.0, -2.0])  # weights are constants


def test_profit_keeps_only_confident_tokens():
    loss, m = get_objective("profit").fn(inputs(), prob_threshold=0.3)
    close(loss, [math.log(2), 0.0, -math.log(0.8), 0.0])  # p = 0.25 and 0.05 are dropped
    assert m["kept_fraction"] == pytest.approx(0.5)


def test_sft_kl_adds_full_vocab_kl_to_reference():
    # 2 tokens, vocabulary of 2. Policy p = (1/4, 3/4); reference p_ref = (1/2, 1/2).
    logits = torch.tensor([[0.0, math.log(3)]] * 2, dtype=torch.float64)
    ref_logits = torch.zeros(2, 2, dtype=torch.float64)
    logp = torch.log_softmax(logits, -1)[:, 1]  # both targets are token 1: log 3/4
    inp = LossInputs(logp=logp, seq_idx=torch.tensor([0, 0]), num_seqs=1, logits=logits, ref_logits=ref_logits)
    loss, m = get_objective("sft_kl").fn(inp, kl_coef=0.5)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    close(loss, [-math.log(0.75) + 0.5 * kl] * 2)
    assert m["kl"] == pytest.approx(kl)
    assert get_objective("sft_kl").needs_ref and get_objective("sft_kl").needs_logits


def test_asft_is_dft_plus_kl():
    logits = torch.tensor([[0.0, math.log(3)]], dtype=torch.float64)
    logp = torch.log_softmax(logits, -1)[:, 1]
    inp = LossInputs(logp=logp, seq_idx=torch.tensor([0]), num_seqs=1, logits=logits,
                     ref_logits=torch.zeros(1, 2, dtype=torch.float64))
    loss, _ = get_objective("asft").fn(inp, kl_coef=0.1)
    kl = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    close(loss, [-0.75 * math.log(0.75) + 0.1 * kl])


# ------------------------------------------------------------------------------ aggregation

L = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
# The normalizer holds the counts of the whole optimizer step (here: more than this micro-batch).
NORM = Normalizer(tokens=8, seqs=4, constant=5)


@pytest.mark.parametrize("mode,expected", [
    ("token_mean", (1 + 2 + 3 + 4) / 8),  # sum / T
    ("seq_mean_token_mean", ((1 + 2 + 3) / 3 + 4 / 1) / 4),  # (1/B) sum_i mean_t
    ("seq_mean_token_sum", ((1 + 2 + 3) + 4) / 4),  # (1/B) sum_i sum_t
    ("constant", (1 + 2 + 3 + 4) / (4 * 5)),  # sum / (B * C)
])
def test_aggregate_modes(mode, expected):
    out = aggregate(L, torch.tensor(SEQ), 2, mode, NORM)
    assert out.item() == pytest.approx(expected, abs=1e-12)


def test_aggregate_covers_every_mode_and_rejects_unknown():
    assert set(AGGREGATION_MODES) == {"token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"}
    with pytest.raises(ValueError, match="token_mean"):
        aggregate(L, torch.tensor(SEQ), 2, "mean", NORM)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_micro_batches_sum_to_full_batch(mode):
    """Splitting a step in two micro-batches and summing their shares gives the full-batch value."""
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    seq = torch.tensor([0, 0, 1, 2, 2, 2])
    norm = Normalizer(tokens=6, seqs=3, constant=7)
    full = aggregate(loss, seq, 3, mode, norm)
    parts = aggregate(loss[:3], seq[:3], 2, mode, norm) + aggregate(loss[3:], seq[3:] - 2, 1, mode, norm)
    assert parts.item() == pytest.approx(full.item(), abs=1e-12)


def test_unknown_objective_suggests_nearest():
    with pytest.raises(ValueError, match="Did you mean 'dft'"):
        get_objective("dtf")


def test_registries_reject_a_duplicate_name():
    """A plugin registering an existing name must fail, not silently replace the built-in."""
    from postlab.objectives import register_objective
    from postlab.objectives.algorithms import AlgorithmSpec, get_algorithm, register_algorithm
    from postlab.studies.kinds import STAGE_KINDS
    from postlab.studies.stage_common import StageKind, register_stage_kind

    with pytest.raises(ValueError, match="objective 'nll' is already registered"):
        register_objective("nll")(lambda inp: (inp.logp, {}))
    with pytest.raises(ValueError, match="RL algorithm 'grpo' is already registered"):
        register_algorithm(AlgorithmSpec("grpo", "nll", None, needs_groups=False))
    with pytest.raises(ValueError, match="stage kind 'sft' is already registered"):
        register_stage_kind(StageKind("sft", print, print))
    assert get_algorithm("grpo").objective == "grpo" and STAGE_KINDS["sft"].run.__name__ == "run_sft"
    with pytest.raises(ValueError, match="Did you mean 'dapo'"):
        get_algorithm("dapoo")


def test_every_algorithm_spec_names_a_registered_objective():
    from postlab.objectives.algorithms import ALGORITHMS

    for spec in ALGORITHMS.values():
        # every policy-gradient loss reads the sampler's log-probs; GKD's exact divergence over the vocabulary
        # does not (it is differentiated through the student's logits at the sampled positions)
        assert get_objective(spec.objective).needs_old_logp != spec.teacher_logits
        # group baselines need groups; REINFORCE++ normalizes over the batch, on-policy distillation takes
        # its signal from the teacher (its advantage estimator ignores the rewards)
        assert spec.needs_groups == (spec.advantages is not None and spec.name != "reinforce_pp"
                                     and not spec.needs_teacher)


def test_the_probe_gate_applies_only_to_algorithms_whose_signal_is_their_rewards():
    from postlab.objectives.algorithms import ALGORITHMS

    beyond = {name for name, spec in ALGORITHMS.items() if spec.learns_beyond_reward}
    assert beyond == {"luffy", "chord", "uft", "opd", "gkd"}
