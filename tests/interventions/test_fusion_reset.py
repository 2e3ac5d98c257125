"""Fusion ends are the input models bit for bit; anchored and ReDo resets touch exactly their units."""

import copy

import pytest
import torch

from postlab.interventions.common import InterventionError, projection
from postlab.interventions.fusion import check_compatible, fuse
from postlab.interventions.reset import anchor_units, redo_reset, unit_slices
from postlab.interventions.scoring import Unit, score_units, select_units

from .conftest import tiny_qwen2


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_alpha_zero_is_base_and_alpha_one_is_sft_bit_for_bit(tiny_pair):
    base, sft = tiny_pair
    assert same_weights(fuse(base, sft, alpha=0.0), base)
    assert same_weights(fuse(base, sft, alpha=1.0), sft)


def test_fusion_covers_every_parameter_and_module_overrides(tiny_pair):
    base, sft = tiny_pair
    fused = fuse(base, sft, alpha=0.25, module_alphas={"embed_tokens": 1.0, "layers.1.mlp": 0.0})
    b, s = dict(base.named_parameters()), dict(sft.named_parameters())
    for name, p in fused.named_parameters():
        if "embed_tokens" in name:
            assert torch.equal(p, s[name])
        elif "layers.1.mlp" in name:
            assert torch.equal(p, b[name])
        else:  # norms and lm_head too: the paper fuses ALL parameters
            torch.testing.assert_close(p, 0.25 * s[name] + 0.75 * b[name], rtol=0, atol=1e-7)
    assert same_weights(base, tiny_pair[0]) and not same_weights(fused, sft)


def test_mismatched_shapes_name_the_first_parameter(char_tokenizer):
    base = tiny_qwen2(len(char_tokenizer))
    other = tiny_qwen2(len(char_tokenizer), intermediate_size=48)
    with pytest.raises(InterventionError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*\(64, 32\).*\(48, 32\)"):
        check_compatible(base, other)


def test_unknown_module_alpha_is_rejected(tiny_pair):
    with pytest.raises(InterventionError, match="no parameter name contains 'mlp_proj'"):
        fuse(*tiny_pair, module_alphas={"mlp_proj": 0.3})


UNITS = [Unit(1, "k_proj", 3), Unit(0, "o_proj", 5), Unit(1, "down_proj", 7), Unit(0, "mlp", 11), Unit(1, "v_proj", 0)]


def test_anchored_omega_one_copies_base_units_and_touches_nothing_else(tiny_pair):
    base, sft = tiny_pair
    fused = fuse(base, sft, 0.5)
    before = copy.deepcopy(fused)
    anchor_units(fused, base, UNITS, omega=1.0)
    owned = {}  # (layer, module) -> [(axis, index)]
    for u in UNITS:
        for module, axis in unit_slices(u):
            owned.setdefault((u.layer, module), []).append((axis, u.index))
    for layer in range(2):
        for module in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            now, was, anchor = (projection(m, layer, module) for m in (fused, before, base))
            keep = torch.ones_like(now.weight, dtype=torch.bool)
            keep_bias = None if now.bias is None else torch.ones_like(now.bias, dtype=torch.bool)
            for axis, index in owned.get((layer, module), []):
                assert torch.equal(now.weight.select(axis, index), anchor.weight.select(axis, index))
                keep.select(axis, index).fill_(False)
                if axis == 0 and now.bias is not None:
                    assert torch.equal(now.bias[index], anchor.bias[index])
                    keep_bias[index] = False
            assert torch.equal(now.weight[keep], was.weight[keep])
            if now.bias is not None:
                assert torch.equal(now.bias[keep_bias], was.bias[keep_bias])
    others = {n: p for n, p in before.named_parameters() if "_proj" not in n}
    assert all(torch.equal(p, others[n]) for n, p in fused.named_parameters() if n in others)


def test_anchored_partial_omega_interpolates(tiny_pair):
    base, sft = tiny_pair
    fused = fuse(base, sft, 0.5)
    old = projection(fused, 1, "k_proj").weight[3].clone()
    anchor_units(fused, base, [Unit(1, "k_proj", 3)], omega=0.25)
    expected = 0.25 * projection(base, 1, "k_proj").weight[3] + 0.75 * old
    torch.testing.assert_close(projection(fused, 1, "k_proj").weight[3], expected, rtol=0, atol=1e-7)


def test_redo_reset_of_dormant_neurons_leaves_outputs_unchanged(tiny_pair, toy_calibration):
    _, model = tiny_pair
    dormant = {(0, 5), (1, 3), (1, 17)}
    with torch.no_grad():  # silence these neurons: act(gate) * up = 0 whatever the input
        for layer, i in dormant:
            projection(model, layer, "up_proj").weight[i] = 0.0
    ids = torch.randint(10, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits_before = model(input_ids=ids).logits
    scores = score_units("dormancy", "neurons", model, calibration=toy_calibration)
    chosen = select_units(scores, fraction=2 / 64, scope="global", high_first=False)
    assert {(u.layer, u.index) for u, _ in chosen[:3]} == dormant
    units = [u for u, _ in chosen[:3]]
    gate_before = projection(model, 1, "gate_proj").weight[3].clone()
    redo_reset(model, units, std=0.02, seed=0)
    with torch.no_grad():
        logits_after = model(input_ids=ids).logits
    torch.testing.assert_close(logits_after, logits_before, rtol=0, atol=1e-6)
    assert not torch.equal(projection(model, 1, "gate_proj").weight[3], gate_before)
    assert projection(model, 1, "up_proj").weight[3].abs().sum() > 0  # re-initialized, no longer silent
    assert torch.count_nonzero(projection(model, 1, "down_proj").weight[:, 3]) == 0


def test_redo_rejects_slice_units(tiny_pair):
    with pytest.raises(InterventionError, match="whole MLP neurons"):
        redo_reset(tiny_pair[1], [Unit(0, "k_proj", 1)])


def test_tied_embeddings_fuse_once_and_reject_conflicting_alphas(char_tokenizer):
    from postlab.models import init_model

    base, sft = init_model("nano", char_tokenizer, seed=0), init_model("nano", char_tokenizer, seed=1)
    assert same_weights(fuse(base, sft, alpha=1.0), sft) and same_weights(fuse(base, sft, alpha=0.0), base)
    kept = fuse(base, sft, 0.5, {"embed_tokens": 1.0, "lm_head": 1.0})
    assert kept.lm_head.weight is kept.model.embed_tokens.weight
    assert torch.equal(kept.lm_head.weight, sft.lm_head.weight)
    with pytest.raises(InterventionError, match="one tied tensor"):
        fuse(base, sft, 0.5, {"lm_head": 1.0})
