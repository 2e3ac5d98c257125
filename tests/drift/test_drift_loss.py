"""The DRIFT loss through the shared objective path (objective -> registry.aggregate -> backward).

Default: L = (1/B) sum_i w_i l_i, l_i the token-mean CE of trajectory i's last turn, which is
`weighted_nll` with aggregation seq_mean_token_mean; the weight-normalized reduction
sum_i w_i l_i / sum_i w_i is `drift_normalized` with the step's mean weight."""

import copy

import pytest
import torch

from postlab.data.records import encode_all
from postlab.data.trajectories import to_drift_records
from postlab.objectives import get_objective
from postlab.trainers.common import accumulate_gradients, pack_micro_batches, step_normalizer

from .helpers import hand_trajectories


def gradients(model, tok, records, objective, hparams=None, micro=2, aggregation="seq_mean_token_mean"):
    model = copy.deepcopy(model).train()
    model.zero_grad(set_to_none=True)
    batches = pack_micro_batches(encode_all(tok, records), micro)
    metrics = accumulate_gradients(model, batches, get_objective(objective), hparams or {}, aggregation,
                                   step_normalizer(batches))
    return metrics["loss"], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def by_hand(model, tok, records, reduce):
    """Per record: a plain forward, the mean CE over its trained tokens; then `reduce(weights, losses)`."""
    model = copy.deepcopy(model).train()
    model.zero_grad(set_to_none=True)
    losses, weights = [], []
    for enc in encode_all(tok, records):
        ids = torch.tensor([enc.input_ids])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        nll = -logp.gather(-1, ids[0, 1:, None]).squeeze(-1)
        mask = torch.tensor(enc.loss_mask[1:], dtype=torch.bool)
        losses.append(nll[mask].mean())
        weights.append(enc.weight)
    loss = reduce(torch.tensor(weights), torch.stack(losses))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, tol=1e-5):
    (la, ga), (lb, gb) = a, b
    assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)
    assert ga.keys() == gb.keys()
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=tol, rtol=1e-4), n


WEIGHTS = [1.7, 0.3, 0.25, 1.75]


def test_default_reduction_is_weighted_nll_seq_mean_token_mean(nano_model, char_tokenizer):
    records = to_drift_records(hand_trajectories(), WEIGHTS)
    want = by_hand(nano_model, char_tokenizer, records, lambda w, l: (w * l).mean())
    assert_same(gradients(nano_model, char_tokenizer, records, "weighted_nll"), want)
    # micro-batching changes nothing
    assert_same(gradients(nano_model, char_tokenizer, records, "weighted_nll", micro=1), want)


def test_equal_weights_give_the_plain_sft_gradient(nano_model, char_tokenizer):
    trajs = hand_trajectories()
    sft_records = [{k: v for k, v in r.items() if k != "weight"} for r in to_drift_records(trajs, [1.0] * 4)]
    sft = gradients(nano_model, char_tokenizer, sft_records, "nll")
    assert_same(gradients(nano_model, char_tokenizer, to_drift_records(trajs, [1.0] * 4), "weighted_nll"), sft)
    # the weight-normalized reduction is invariant to a common scale of the weights
    assert_same(gradients(nano_model, char_tokenizer, to_drift_records(trajs, [2.5] * 4), "drift_normalized",
                          {"weight_mean": 2.5}), sft)


def test_weight_normalized_reduction(nano_model, char_tokenizer):
    weights = [1.7, 0.3, 0.5, 2.5]  # mean 1.25: e.g. global normalization over more than this step
    records = to_drift_records(hand_trajectories(), weights)
    want = by_hand(nano_model, char_tokenizer, records, lambda w, l: (w * l).sum() / w.sum())
    mean_w = sum(weights) / len(weights)
    assert_same(gradients(nano_model, char_tokenizer, records, "drift_normalized", {"weight_mean": mean_w}), want)
    assert get_objective("drift_normalized").default_aggregation == "seq_mean_token_mean"
    with pytest.raises(ValueError, match="weight_mean"):
        gradients(nano_model, char_tokenizer, records, "drift_normalized", {"weight_mean": 0.0})
