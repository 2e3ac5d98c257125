"""Repetition penalty in the rollout engine (HF/CTRL convention; RASFT's rollouts use 1.1)."""

import dataclasses
import math

import pytest
import torch

from postlab.rollout import fastdecode
from postlab.rollout.engine import (SamplingParams, apply_repetition_penalty, generate, hf_generate, process_logits,
                                    sample_next)


@pytest.fixture(scope="module")
def prompts(char_tokenizer):
    texts = ["<|user|>Ann has 12 pens. How many?<|end|><|assistant|>", "<|user|>Hi<|end|><|assistant|>"]
    return [char_tokenizer.encode(t, add_special_tokens=False) for t in texts]


def test_hand_made_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0, 3.0]])
    seen = torch.tensor([[True, True, False, True, False]])
    # seen and positive: divided; seen and negative: multiplied; zero stays zero; unseen untouched
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -2.0, 0.5, 0.0, 3.0]]
    # a penalty below 1 favours seen tokens instead
    assert apply_repetition_penalty(logits, seen, 0.5).tolist() == [[4.0, -0.5, 0.5, 0.0, 3.0]]


def test_penalty_flips_the_greedy_choice_and_logprobs_are_of_the_penalized_distribution():
    logits = torch.tensor([[2.0, 1.5, -1.0]])
    seen = torch.tensor([[True, False, False]])
    gen = torch.Generator().manual_seed(0)
    nxt, lp = sample_next(logits, SamplingParams(temperature=0.0, repetition_penalty=1.5), gen, seen)
    assert nxt.tolist() == [1]  # 2.0 / 1.5 = 1.333 < 1.5
    want = 1.5 - math.log(math.exp(2.0 / 1.5) + math.exp(1.5) + math.exp(-1.0))  # -1.0 is unseen: untouched
    assert lp.item() == pytest.approx(want, abs=1e-6)
    # without the penalty the seen token wins and its log-prob is the unpenalized one
    nxt, lp = sample_next(logits, SamplingParams(temperature=0.0), gen)
    assert nxt.tolist() == [0]
    assert lp.item() == pytest.approx(2.0 - math.log(math.exp(2) + math.exp(1.5) + math.exp(-1)))


def _sample_next_before_the_penalty(logits, params, gen):
    """`sample_next` as it was before repetition_penalty existed (the reference for bit-identity)."""
    logp = torch.log_softmax(logits, dim=-1)
    if params.temperature == 0:
        nxt = logits.argmax(-1)
    else:
        probs = torch.softmax(process_logits(logits, params), dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    return nxt, logp.gather(-1, nxt[:, None]).squeeze(-1)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.9, 0.95), (0.0, 1.0)])
def test_penalty_one_is_bit_identical(temperature, top_p):
    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    seen = torch.rand(6, 50) < 0.5
    params = SamplingParams(temperature=temperature, top_p=top_p, repetition_penalty=1.0)
    a = sample_next(logits, params, torch.Generator().manual_seed(7), seen)
    b = _sample_next_before_the_penalty(logits, params, torch.Generator().manual_seed(7))
    assert a[0].equal(b[0]) and a[1].equal(b[1])


def test_generate_with_penalty_one_equals_generate_without_it(nano_model, char_tokenizer, prompts):
    base = SamplingParams(max_new_tokens=12, n=3, temperature=0.9, top_p=0.95, seed=4)
    a = generate(nano_model, char_tokenizer, prompts, base)
    b = generate(nano_model, char_tokenizer, prompts, dataclasses.replace(base, repetition_penalty=1.0))
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [c.logprobs for c in a] == [c.logprobs for c in b]


def test_greedy_with_penalty_matches_transformers(nano_model, char_tokenizer, prompts):
    """HF's RepetitionPenaltyLogitsProcessor, one prompt at a time (HF would also count left padding as seen)."""
    params = SamplingParams(max_new_tokens=16, temperature=0.0, repetition_penalty=1.3)
    for p in prompts:
        ours = generate(nano_model, char_tokenizer, [p], params)
        hf = hf_generate(nano_model, char_tokenizer, [p], params)
        assert [c.token_ids for c in ours] == [c.token_ids for c in hf]
    plain = generate(nano_model, char_tokenizer, prompts, SamplingParams(max_new_tokens=16, temperature=0.0))
    assert [c.token_ids for c in generate(nano_model, char_tokenizer, prompts, params)] != [c.token_ids for c in plain]


def test_sampled_logprobs_are_of_the_penalized_distribution(nano_model, char_tokenizer, prompts):
    """Recompute each sampled token's log-prob with the full model forward and the penalty applied to
    the tokens of the prompt and of the output so far: the engine stores exactly those."""
    params = SamplingParams(max_new_tokens=10, n=2, temperature=0.9, top_p=0.95, repetition_penalty=1.1, seed=2)
    outs = generate(nano_model, char_tokenizer, prompts, params)
    for c in outs:
        seq = prompts[c.prompt_index] + c.token_ids
        with torch.no_grad():
            logits = nano_model(torch.tensor([seq])).logits[0].float()
        P = len(prompts[c.prompt_index])
        for t, (token, stored) in enumerate(zip(c.token_ids, c.logprobs)):
            seen = torch.zeros(1, logits.shape[-1], dtype=torch.bool)
            seen[0, seq[:P + t]] = True
            want = torch.log_softmax(apply_repetition_penalty(logits[P + t - 1][None], seen, 1.1), -1)[0, token]
            assert stored == pytest.approx(want.item(), abs=1e-4)


def test_both_decoders_apply_it_alike(nano_model, char_tokenizer, prompts, monkeypatch):
    params = SamplingParams(max_new_tokens=10, n=2, temperature=1.0, repetition_penalty=1.5, seed=5)
    fast = generate(nano_model, char_tokenizer, prompts, params)
    monkeypatch.setattr(fastdecode, "_FAST_TYPES", ())  # the generic transformers decoder
    slow = generate(nano_model, char_tokenizer, prompts, params)
    assert [c.token_ids for c in fast] == [c.token_ids for c in slow]
    assert max(abs(a - b) for x, y in zip(fast, slow) for a, b in zip(x.logprobs, y.logprobs)) < 1e-4


@pytest.mark.parametrize("bad", [0.0, -1.1])
def test_invalid_penalty_is_rejected(bad):
    with pytest.raises(ValueError, match="repetition_penalty must be > 0"):
        SamplingParams(repetition_penalty=bad)
