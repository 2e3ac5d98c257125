"""Multi-turn episodes: exact loss masks, aligned log-probs, per-turn rewards, lock-step batching, evaluation."""

import torch

import postlab.envs.toy  # noqa: F401
from postlab.data.batching import pack
from postlab.data.records import render_messages
from postlab.envs import make
from postlab.models.forward import token_outputs
from postlab.rollout.engine import SamplingParams
from postlab.eval.evaluate import evaluate
from postlab.rollout.episodes import run_episodes


def test_multiturn_episode_masks_and_logprobs(nano_model, char_tokenizer):
    envs = [make("toy", max_turns=3) for _ in range(6)]
    seeds = [0, 0, 0, 1, 1, 2]
    eps = run_episodes(nano_model, char_tokenizer, envs, seeds,
                       SamplingParams(max_new_tokens=5, temperature=1.0, seed=0))
    assert any(len(e.turns) == 3 for e in eps)  # the random model fails, so feedback turns happen
    for e in eps:
        assert len(e.input_ids) == len(e.loss_mask) == len(e.logprobs)
        model_tokens = [t for turn in e.turns for t in turn.token_ids]
        assert [i for i, m in zip(e.input_ids, e.loss_mask) if m] == model_tokens  # mask = model tokens only
        for turn in e.turns:  # each turn sits at its recorded position
            assert e.input_ids[turn.start:turn.start + len(turn.token_ids)] == turn.token_ids
        assert e.done and (e.success or len(e.turns) == 3)
        assert e.reward == sum(t.reward for t in e.turns)
        # feedback turns are rendered by the chat template: identical text to rendering the whole dialogue
        if all(t.finish_reason == "stop" for t in e.turns):
            ids, mask = render_messages(char_tokenizer, e.messages)
            assert char_tokenizer.decode(ids) == char_tokenizer.decode(e.input_ids)
    # stored sampler log-probs align with the trainer's recomputation of the packed episodes
    batch = pack([e.encoded() for e in eps])
    with torch.no_grad():
        lp = token_outputs(nano_model, batch).logp
    stored = torch.tensor([x for e in eps for x in e.target_logprobs()])
    assert (lp - stored).abs().max().item() < 1e-4


def test_evaluate_success_by_turn(nano_model, char_tokenizer):
    res = evaluate(nano_model, char_tokenizer, "toy", "id", n_episodes=10, max_turns=2, max_new_tokens=3)
    assert 0.0 <= res["success_rate"] <= 1.0 and len(res["per_problem"]) == 10
    assert len(res["success_by_turn"]) <= 2 and res["success_by_turn"][-1] == res["success_rate"]


def test_shared_prefix_packing_equals_plain_packing(nano_model, char_tokenizer):
    """Prompt computed once per group: same log-probs, values' hidden states and gradients as full packing."""
    from postlab.trainers import rl_batch as rb

    envs = [make("toy", max_turns=2) for _ in range(9)]
    eps = run_episodes(nano_model, char_tokenizer, envs, [0, 0, 0, 0, 1, 1, 1, 2, 3],
                       SamplingParams(max_new_tokens=5, seed=0))
    a = rb.pack_episodes(eps, {}, with_values=True)
    b = rb.pack_shared_prefix(eps, {}, with_values=True)
    assert b.num_tokens < a.num_tokens and torch.equal(a.targets, b.targets) and torch.equal(a.seq_idx, b.seq_idx)
    assert torch.equal(a.extras["old_logp"], b.extras["old_logp"])
    model = nano_model.train()
    oa, ob = rb.packed_outputs(model, a, want_hidden=True), rb.packed_outputs(model, b, want_hidden=True)
    assert (oa.logp - ob.logp).abs().max() < 1e-5
    assert (oa.hidden[0, a.extras["value_index"]] - ob.hidden[0, b.extras["value_index"]]).abs().max() < 1e-5
    oa.logp.sum().backward()
    ga = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ob.logp.sum().backward()
    gb = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.eval()
    assert max((x - y).abs().max().item() for x, y in zip(ga, gb)) < 1e-4


def test_pack_for_update_shares_the_prompt_only_where_it_pays(nano_model):
    """Short answers after a long prompt: one shared row per group. Long answers after a short prompt:
    one padded row per episode (a shared row attends densely over the whole group)."""
    from postlab.rollout.episodes import Episode, Turn
    from postlab.trainers import rl_batch as rb

    def episodes(prompt: int, answer: int) -> list:
        out = []
        for seed in range(2):
            for k in range(4):
                ids = [5 + seed] * prompt + [7 + k] * answer
                turn = Turn(start=prompt, token_ids=[7 + k] * answer, logprobs=[-1.0] * answer, text="",
                            finish_reason="length")
                out.append(Episode(seed=seed, messages=[], input_ids=ids, loss_mask=[0] * prompt + [1] * answer,
                                   logprobs=[0.0] * prompt + [-1.0] * answer, turns=[turn]))
        return out

    short = episodes(prompt=200, answer=4)
    long = episodes(prompt=4, answer=200)
    assert rb.shared_prefix_pays(short, nano_model) and not rb.shared_prefix_pays(long, nano_model)
    adv = lambda eps: {"advantages": [torch.ones(len(e.target_turns())) for e in eps]}  # noqa: E731
    assert "attention_mask" in rb.pack_for_update(short, adv(short), nano_model).extras
    assert "attention_mask" not in rb.pack_for_update(long, adv(long), nano_model).extras
    # by hand for nano (hidden 64, MLP 192, 4 heads of 16, 2 kv heads): 64 * (128 + 64) + 3 * 64 * 192 =
    # 49,152 per token and 256 per attended pair. Prompt 100, answers 100: a shared row of 500 tokens
    # costs 500 * 49152 + 500^2 * 256 = 88.6M per group, four rows of 200 cost 4 * (200 * 49152 +
    # 200^2 / 2 * 256) = 59.8M: fewer tokens, but the dense attention loses
    even = episodes(prompt=100, answer=100)
    assert not rb.shared_prefix_pays(even, nano_model)
    assert rb.shared_prefix_pays(episodes(prompt=150, answer=50), nano_model)  # 350: 48.6M vs 59.8M


def _episode_view(eps):
    return [(e.input_ids, e.loss_mask, [t.finish_reason for t in e.turns], e.success) for e in eps]


def test_kept_cache_across_turns_equals_reencoding_every_turn(nano_model, char_tokenizer):
    """DialogueSampler feeds only what is new each turn; episodes (tokens, masks, log-probs) equal re-encoding."""
    seeds = [0, 0, 0, 1, 1, 2, 3, 4]
    for temperature, stop, penalty in ((0.0, (), 1.0), (1.0, (), 1.0), (1.0, ("7",), 1.0), (1.0, (), 1.3)):
        params = SamplingParams(max_new_tokens=6, temperature=temperature, seed=3, stop=stop, repetition_penalty=penalty)
        kept = run_episodes(nano_model, char_tokenizer, [make("toy", max_turns=4) for _ in seeds], seeds, params)
        fresh = run_episodes(nano_model, char_tokenizer, [make("toy", max_turns=4) for _ in seeds], seeds, params,
                             prefix_cache=False)
        assert sum(len(e.turns) for e in kept) > 2 * len(seeds)  # several turns, holes of different widths
        assert _episode_view(kept) == _episode_view(fresh)
        diff = max(abs(a - b) for x, y in zip(kept, fresh) for a, b in zip(x.logprobs, y.logprobs))
        assert diff < 1e-5


def test_kept_cache_with_a_context_window_re_encodes_cut_dialogues(nano_model, char_tokenizer):
    """max_context cuts long dialogues: a cut window no longer extends the cache and is re-encoded from position 0."""
    seeds = [0, 1, 2, 3]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=1)
    kw = dict(max_context=40)
    kept = run_episodes(nano_model, char_tokenizer, [make("toy", max_turns=5) for _ in seeds], seeds, params, **kw)
    fresh = run_episodes(nano_model, char_tokenizer, [make("toy", max_turns=5) for _ in seeds], seeds, params,
                         prefix_cache=False, **kw)
    assert max(len(e.input_ids) for e in kept) > 40
    assert _episode_view(kept) == _episode_view(fresh)
    assert max(abs(a - b) for x, y in zip(kept, fresh) for a, b in zip(x.logprobs, y.logprobs)) < 1e-5


def test_dialogue_sampler_rejects_what_it_cannot_do(nano_model, char_tokenizer):
    import pytest

    from postlab.rollout.engine import DialogueSampler

    s = DialogueSampler(nano_model, char_tokenizer)
    with pytest.raises(ValueError, match="one completion per dialogue"):
        s.sample([0], [[1, 2]], SamplingParams(n=2))
    with pytest.raises(ValueError, match="non-empty"):
        s.sample([0], [[]], SamplingParams())
