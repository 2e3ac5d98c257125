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


def test_multiturn_episode_masks_and_logprobs(nano, tok):
    envs = [make("toy", max_turns=3) for _ in range(6)]
    seeds = [0, 0, 0, 1, 1, 2]
    eps = run_episodes(nano, tok, envs, seeds, SamplingParams(max_new_tokens=5, temperature=1.0, seed=0))
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
            ids, mask = render_messages(tok, e.messages)
            assert tok.decode(ids) == tok.decode(e.input_ids)
    # stored sampler log-probs align with the trainer's recomputation of the packed episodes
    batch = pack([e.encoded() for e in eps])
    with torch.no_grad():
        lp = token_outputs(nano, batch).logp
    stored = torch.tensor([x for e in eps for x in e.target_logprobs()])
    assert (lp - stored).abs().max().item() < 1e-4


def test_evaluate_success_by_turn(nano, tok):
    res = evaluate(nano, tok, "toy", "id", n_episodes=10, max_turns=2, max_new_tokens=3)
    assert 0.0 <= res["success_rate"] <= 1.0 and len(res["per_problem"]) == 10
    assert len(res["success_by_turn"]) <= 2 and res["success_by_turn"][-1] == res["success_rate"]


def test_shared_prefix_packing_equals_plain_packing(nano, tok):
    """Prompt computed once per group: same log-probs, values' hidden states and gradients as full packing."""
    from postlab.trainers import rl_batch as rb

    envs = [make("toy", max_turns=2) for _ in range(9)]
    eps = run_episodes(nano, tok, envs, [0, 0, 0, 0, 1, 1, 1, 2, 3], SamplingParams(max_new_tokens=5, seed=0))
    a = rb.pack_episodes(eps, {}, with_values=True)
    b = rb.pack_shared_prefix(eps, {}, with_values=True)
    assert b.num_tokens < a.num_tokens and torch.equal(a.targets, b.targets) and torch.equal(a.seq_idx, b.seq_idx)
    assert torch.equal(a.extras["old_logp"], b.extras["old_logp"])
    model = nano.train()
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
