import json

import pytest

import toy_env  # noqa: F401 - registers toy-copy
from postlab.eval.evaluate import evaluate, results_table


def test_multiturn_bookkeeping(nano_model, char_tokenizer):
    model, tok = nano_model, char_tokenizer
    r = evaluate(model, tok, "toy-copy", "id", n_episodes=10, max_turns=3, max_new_tokens=4,
                 env_args={"scripted": True})
    assert r["success_rate"] == 0.5  # even seeds succeed at attempt 2
    assert r["success_by_turn"] == [0.0, 0.5, 0.5]
    assert r["failure_reasons"] == {"wrong number": 5}  # final attempt of the 5 failed episodes
    assert r["attempt_failure_reasons"] == {"wrong number": 5 * 1 + 5 * 3}
    assert r["ci"][0] <= 0.5 <= r["ci"][1] and r["n_episodes"] == 10
    assert r["generated_tokens"] > 0
    json.dumps(r)  # JSON-ready
    results_table([r])


def test_step_cap_is_a_failure_reason(nano_model, char_tokenizer):
    model, tok = nano_model, char_tokenizer
    # one model call allowed, the env would give three: every episode is cut by the cap after a wrong first try
    r = evaluate(model, tok, "toy-copy", "id", n_episodes=10, max_turns=3, max_steps=1, max_new_tokens=4,
                 env_args={"scripted": True})
    assert r["success_rate"] == 0.0 and r["mean_turns"] == 1.0
    assert r["failure_reasons"] == {"step cap": 10}
    assert r["attempt_failure_reasons"] == {"wrong number": 10, "step cap": 10}


def test_sampled_pass_at_k(nano_model, char_tokenizer):
    model, tok = nano_model, char_tokenizer
    r = evaluate(model, tok, "toy-copy", "ood", n_episodes=4, decoding="sampled", k=2, n_samples=3, max_turns=2,
                 max_new_tokens=4, env_args={"scripted": True})
    # per problem all samples succeed (even seed) or none (odd): pass@2 == pass@1 == 0.5
    assert r["n_samples"] == 3 and r["success_rate"] == 0.5 and r["pass_at_k"] == 0.5
    with pytest.raises(ValueError, match="sampled"):
        evaluate(model, tok, "toy-copy", "id", n_episodes=2, k=4)


def test_gp_rule_probe_counts_the_face_rule_diagnostic(nano_model, char_tokenizer):
    from postlab.eval.gp_rules import probe

    counts = probe(nano_model, char_tokenizer, n=8, max_new_tokens=6)
    # every rule-OOD hand has a face card, so every first answer gets exactly one verdict
    assert set(counts) == {"stated", "other", "neither"} and sum(counts.values()) == 8


def test_answers_cut_by_max_new_tokens_are_counted(nano_model, char_tokenizer):
    model, tok = nano_model, char_tokenizer
    r = evaluate(model, tok, "toy-copy", "id", n_episodes=6, max_turns=1, max_new_tokens=1)
    # an untrained model never stops after one token; every episode is cut (and fails for it)
    assert r["truncated_fraction"] == 1.0 and r["success_rate"] == 0.0
    assert r["truncated_first_turn_fraction"] == 1.0


def test_truncation_of_first_answers_and_of_retries_apart():
    from postlab.eval.evaluate import truncated_shares
    from postlab.rollout.episodes import Episode, Turn

    def episode(*reasons):
        return Episode(seed=0, messages=[], input_ids=[], loss_mask=[], logprobs=[],
                       turns=[Turn(start=0, token_ids=[1], logprobs=[0.0], text="", finish_reason=f) for f in reasons])

    eps = [episode("stop"), episode("stop", "length"), episode("length"), episode("stop", "stop", "length")]
    assert truncated_shares(eps) == (0.75, 0.25)


def test_nav_decision_probe_groups_and_scores_decisions(monkeypatch, char_tokenizer):
    """Teacher-forced navigation decisions: totals follow the routes' rails; a model that always
    says "forward" is right on every forward decision and on nothing else."""
    import postlab.rollout.engine as engine
    from postlab.envs.navigation import Navigation
    from postlab.eval.nav_decisions import probe
    from postlab.rollout.engine import Completion

    env, expected = Navigation(split="id"), {"opening turn": 0, "later turn": 0, "forward": 0, "stop": 0}
    for i in range(3):
        env.reset(1_000_000 + i)
        for pos, step in enumerate(env.rail):
            kind = step.action[0] if step.action[0] != "turn" else ("opening turn" if pos == 0 else "later turn")
            expected[kind] += 1
    calls = []

    def always_forward(model, tokenizer, prompts, params, backend=None):
        calls.append(len(prompts))
        return [Completion(i, [], "forward", [], "stop") for i in range(len(prompts))]

    monkeypatch.setattr(engine, "generate", always_forward)
    counts = probe(None, char_tokenizer, "id", routes=3)
    assert {k: total for k, (_, total) in counts.items()} == expected and sum(calls) == sum(expected.values())
    assert counts["forward"][0] == expected["forward"] > 0
    assert counts["opening turn"][0] == counts["later turn"][0] == counts["stop"][0] == 0
    # restated answers are scored on their action (the part after "=>")
    monkeypatch.setattr(engine, "generate", lambda model, tok, prompts, params: [
        Completion(i, [], "9. anything => stop", [], "stop") for i in range(len(prompts))])
    assert probe(None, char_tokenizer, "id", routes=3)["stop"] == (expected["stop"], expected["stop"])


def test_env_seeds_play_the_given_problems_as_the_evaluation_range_is_played(nano_model, char_tokenizer):
    from postlab.seeds import eval_seed

    model, tok = nano_model, char_tokenizer
    kw = dict(max_turns=3, max_new_tokens=4, env_args={"scripted": True})
    # the evaluation range given as env seeds is the default evaluation, problem for problem
    default = evaluate(model, tok, "toy-copy", "id", n_episodes=6, **kw)
    given = evaluate(model, tok, "toy-copy", "id", env_seeds=[eval_seed(i) for i in range(6)], **kw)
    assert given["per_problem"] == default["per_problem"] and given["success_by_turn"] == default["success_by_turn"]
    assert "env_seeds" not in default and given["env_seeds"] == [eval_seed(i) for i in range(6)]
    # other problems, in the given order, repeats kept (scripted: even seeds succeed at attempt 2);
    # n_episodes is their number whatever was passed
    r = evaluate(model, tok, "toy-copy", "id", n_episodes=64, env_seeds=[2, 3, 4, 4, 7], **kw)
    assert r["per_problem"] == [1.0, 0.0, 1.0, 1.0, 0.0] and r["n_episodes"] == 5
    sampled = evaluate(model, tok, "toy-copy", "id", env_seeds=[3, 8], decoding="sampled", n_samples=3, k=2, **kw)
    assert sampled["per_problem"] == [0.0, 1.0] and sampled["pass_at_k"] == 0.5
    with pytest.raises(ValueError, match="env_seeds is empty"):
        evaluate(model, tok, "toy-copy", "id", env_seeds=[], **kw)
