"""Rollout engine: reproducibility, log-probs equal to the trainer's, greedy, stops, fallback paths."""

import dataclasses

import pytest
import torch

from postlab.data.batching import pack
from postlab.data.records import Encoded
from postlab.models.forward import token_outputs
from postlab.rollout import fastdecode
from postlab.rollout.engine import SamplingParams, generate, hf_generate, process_logits


def _recomputed(model, prompts, outs):
    seqs = [Encoded(prompts[c.prompt_index] + c.token_ids, [0] * len(prompts[c.prompt_index]) + [1] * len(c.token_ids))
            for c in outs]
    with torch.no_grad():
        return token_outputs(model, pack(seqs)).logp


def test_sampling_is_reproducible_from_seed(nano_model, char_tokenizer, prompts):
    p = SamplingParams(max_new_tokens=12, n=4, temperature=1.0, seed=3)
    a, b = generate(nano_model, char_tokenizer, prompts, p), generate(nano_model, char_tokenizer, prompts, p)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert [c.logprobs for c in a] == [c.logprobs for c in b]
    c = generate(nano_model, char_tokenizer, prompts, dataclasses.replace(p, seed=4))
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len(a) == 12 and [x.prompt_index for x in a] == [0] * 4 + [1] * 4 + [2] * 4


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, 0), (0.7, 0.9, 20), (0.0, 1.0, 0)])
def test_sampler_logprobs_match_trainer(nano_model, char_tokenizer, prompts, temperature, top_p, top_k):
    """The engine's log-probs are log pi_theta (temperature 1) of the sampled tokens, as the trainer recomputes them."""
    p = SamplingParams(max_new_tokens=16, n=3, temperature=temperature, top_p=top_p, top_k=top_k, seed=1)
    outs = generate(nano_model, char_tokenizer, prompts, p)
    sampled = torch.tensor([x for c in outs for x in c.logprobs])
    diff = (_recomputed(nano_model, prompts, outs) - sampled).abs().max().item()
    print(f"max |sampler logp - trainer logp| = {diff:.2e}")
    assert diff < 1e-4


def test_fast_path_equals_hf_forward_path(nano_model, char_tokenizer, prompts, monkeypatch):
    p = SamplingParams(max_new_tokens=10, n=2, temperature=1.0, seed=5)
    fast = generate(nano_model, char_tokenizer, prompts, p)
    monkeypatch.setattr(fastdecode, "_FAST_TYPES", ())
    slow = generate(nano_model, char_tokenizer, prompts, p)
    assert [c.token_ids for c in fast] == [c.token_ids for c in slow]
    assert max(abs(a - b) for x, y in zip(fast, slow) for a, b in zip(x.logprobs, y.logprobs)) < 1e-4


def test_greedy_matches_model_generate(nano_model, char_tokenizer, prompts):
    p = SamplingParams(max_new_tokens=10, temperature=0.0)
    ours, hf = generate(nano_model, char_tokenizer, prompts, p), hf_generate(nano_model, char_tokenizer, prompts, p)
    assert [c.token_ids for c in ours] == [c.token_ids for c in hf]
    topk1 = generate(nano_model, char_tokenizer, prompts,
                     SamplingParams(max_new_tokens=10, temperature=1.0, top_k=1, seed=9))
    assert [c.token_ids for c in topk1] == [c.token_ids for c in ours]


def test_stop_tokens_and_strings(nano_model, char_tokenizer, prompts, monkeypatch):
    import postlab.rollout.engine as engine

    eos, real = char_tokenizer.eos_token_id, engine.sample_next
    calls = {"n": 0}

    def eos_on_third_step_for_row_0(logits, params, gen):
        nxt, lp = real(logits, params, gen)
        calls["n"] += 1
        if calls["n"] == 3:
            nxt = nxt.clone()
            nxt[0] = eos
        return nxt, lp

    monkeypatch.setattr(engine, "sample_next", eos_on_third_step_for_row_0)
    outs = generate(nano_model, char_tokenizer, prompts, SamplingParams(max_new_tokens=8, temperature=0.0))
    assert outs[0].token_ids[-1] == eos and len(outs[0].token_ids) == 3 and outs[0].finish_reason == "stop"
    assert char_tokenizer.eos_token not in outs[0].text and len(outs[0].logprobs) == 3
    assert all(c.finish_reason == "length" and len(c.token_ids) == 8 for c in outs[1:])
    monkeypatch.setattr(engine, "sample_next", real)
    # stop string: the text of the first greedy token, so generation stops right after it
    first = char_tokenizer.decode(outs[1].token_ids[:1])
    s = generate(nano_model, char_tokenizer, prompts[1:2],
                 SamplingParams(max_new_tokens=8, temperature=0.0, stop=(first,)))[0]
    assert s.finish_reason == "stop" and s.text == first and len(s.token_ids) == 1


def test_process_logits_top_p_top_k():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = SamplingParams(temperature=1.0, top_p=0.7)
    kept = torch.isfinite(process_logits(logits, p))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 covers it
    kept = torch.isfinite(process_logits(logits, SamplingParams(temperature=1.0, top_k=3)))
    assert kept.tolist() == [[True, True, True, False]]


def test_invalid_params_are_rejected():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)


def test_vllm_backend_with_fake_engine(char_tokenizer, prompts):
    from types import SimpleNamespace as NS

    from postlab.rollout.vllm_backend import VLLMBackend

    class FakeLLM:
        def generate(self, reqs, sp, use_tqdm=False):
            self.sp = sp
            return [NS(outputs=[NS(token_ids=[7, 8], text="ab", finish_reason="stop",
                                   logprobs=[{7: NS(logprob=-0.5)}, {8: NS(logprob=-0.25)}])
                                for _ in range(sp["n"])]) for _ in reqs]

    llm = FakeLLM()
    backend = VLLMBackend(llm, sampling_params_cls=lambda **kw: kw, tokens_prompt_cls=lambda **kw: kw)
    outs = generate(None, char_tokenizer, prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=5, stop=("x",)),
                    backend=backend)
    assert len(outs) == 6 and outs[3].prompt_index == 1
    assert outs[0].token_ids == [7, 8] and outs[0].logprobs == [-0.5, -0.25] and outs[0].finish_reason == "stop"
    assert llm.sp["top_k"] == -1 and llm.sp["max_tokens"] == 5 and llm.sp["stop"] == ["x"]
