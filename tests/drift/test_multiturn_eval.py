"""Multi-turn RL's reward (DRIFT's R on a played episode) and multi-turn fields of the one evaluator."""

import importlib

import pytest

from postlab.envs import make
from postlab.eval.evaluate import evaluate, results_table
from postlab.objectives.returns import episode_return
from postlab.rollout.episodes import Episode, Turn
from postlab.studies.report_data import split_metric
from postlab.trainers.rl import _import_reward_fn
from postlab.trainers.rl_batch import episode_rewards


def play_scripted(texts, seed=7, **env_kwargs) -> Episode:
    """An Episode of the unary-feedback env (over math) answering `texts` in turn: the env's own infos."""
    env = make("unary-feedback", env="math", split="id", **env_kwargs)
    obs = env.reset(seed)
    ep = Episode(seed=seed, messages=list(obs.messages), input_ids=[], loss_mask=[], logprobs=[])
    gold = env.expert_answer()
    for text in texts:
        res = env.step(text.format(gold=gold, wrong=int(gold) + 1))
        ep.turns.append(Turn(start=0, token_ids=[1], logprobs=[0.0], text=text, finish_reason="stop",
                             reward=res.reward, success=res.success, env_done=res.done, info=res.info))
        if res.done:
            break
    ep.success = ep.turns[-1].success
    return ep


def test_episode_return_is_drift_return_by_hand():
    # wrong, unparsable (format penalty, no attempt used), the same wrong answer again, correct
    ep = play_scripted(["<answer>{wrong}</answer>", "no tag", "<answer>{wrong}</answer>", "<answer>{gold}</answer>"])
    assert [t.info["turn_correct"][-1] for t in ep.turns] == [False, None, False, True]
    rep = -0.5 * (1 - 2 / 3)  # N = 3 answers, U = 2 distinct
    assert episode_return(ep) == pytest.approx(0.9 ** 2 - 0.1 + rep)  # correct at the 3rd attempt
    assert episode_return(ep, gamma=0.5) == pytest.approx(0.5 ** 2 - 0.1 + rep)
    # the env's own summed turn rewards know neither decay nor repetition: 0 + (-0.1) + 0 + 1
    assert ep.reward == pytest.approx(0.9)
    first = play_scripted(["<answer>{gold}</answer>"])
    never = play_scripted(["<answer>{wrong}</answer>"] * 2, max_attempts=2)
    assert episode_return(first) == pytest.approx(1.0)
    assert episode_return(never) == pytest.approx(-0.25)  # N 2, U 1: -0.5 * (1 - 1/2)
    # what RLConfig.reward_fn imports, as the RL trainer calls it
    fn = _import_reward_fn("postlab.objectives.returns:episode_return")
    assert episode_rewards([ep, first, never], fn).tolist() == pytest.approx([0.81 - 0.1 + rep, 1.0, -0.25])


def hand_episode(verdicts) -> Episode:
    turns = [Turn(start=0, token_ids=[1, 2], logprobs=[0.0, 0.0], text="", finish_reason="stop",
                  reward={True: 1.0, False: 0.0, None: -0.1}[v], success=v is True, env_done=k == len(verdicts) - 1,
                  info={"turn_correct": list(verdicts[:k + 1]), "answers": ["x"] * (k + 1)})
             for k, v in enumerate(verdicts)]
    return Episode(seed=0, messages=[], input_ids=[], loss_mask=[], logprobs=[], turns=turns,
                   success=verdicts[-1] is True)


def test_evaluate_adds_multiturn_fields(monkeypatch):
    verdicts = [[True], [False, None, True], [False] * 5, [None, False, False, False, False, False]]
    # the module (postlab.eval re-exports the function under the module's name)
    monkeypatch.setattr(importlib.import_module("postlab.eval.evaluate"), "play",
                        lambda *a, **k: [hand_episode(v) for v in verdicts])
    r = evaluate(None, None, "unary-feedback", "id", n_episodes=4, max_turns=10,
                 env_args={"env": "math", "max_attempts": 5})
    mt, per = r["multiturn"], r["multiturn_per_problem"]
    assert mt["k_max"] == 5  # the env's attempt budget, not its turn cap
    assert mt["multi@1"]["mean"] == pytest.approx(0.25) and mt["multi@5"]["mean"] == pytest.approx(0.5)
    assert [m["mean"] for m in mt["cumulative_accuracy"]] == pytest.approx([0.25, 0.5, 0.5, 0.5, 0.5])
    assert mt["correction_rate"]["mean"] == pytest.approx(1 / 3)  # 1 of the 3 wrong at attempt 1
    assert per["multi@1"] == [1, 0, 0, 0] and per["multi@2"] == [1, 1, 0, 0]
    assert per["correction_rate"] == [None, 1, 0, 0]
    assert r["success_rate"] == pytest.approx(0.5) and r["success_by_turn"][2] == pytest.approx(0.5)  # unchanged keys
    # reports read them as SPLIT:KEY, per problem for paired CIs
    assert split_metric({"id": r}, "id:multi@5") == (pytest.approx(0.5), per["multi@5"])
    assert split_metric({"id": r}, "id:correction_rate")[1] == [None, 1, 0, 0]
    assert split_metric({"id": r}, "id:multi@9") == (None, None)
    # the eval table shows them
    from rich.console import Console

    console = Console(record=True, width=250)
    console.print(results_table([r]))
    text = console.export_text()
    assert "multi@k" in text and "correction" in text and "(k=5)" in text


def test_evaluate_on_a_real_model(nano_model, char_tokenizer):
    kw = dict(n_episodes=2, max_new_tokens=4, n_boot=50)
    r = evaluate(nano_model, char_tokenizer, "unary-feedback", "id", max_turns=4,
                 env_args={"env": "math", "max_attempts": 2}, **kw)
    assert r["multiturn"]["k_max"] == 2 and len(r["multiturn_per_problem"]["multi@2"]) == 2
    assert r["multiturn"]["multi@2"]["mean"] == pytest.approx(r["success_rate"])  # within the budget = success
    # single-turn: no multi-turn fields
    assert "multiturn" not in evaluate(nano_model, char_tokenizer, "math", "id", **kw)
