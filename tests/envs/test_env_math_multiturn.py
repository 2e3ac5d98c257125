"""Math (procedural and JSONL) and the DRIFT unary-feedback wrapper."""

import json

import pytest

from postlab.envs import make
from postlab.envs.math import SOLUTION_KINDS, Math, MathJSONL, make_problem, solution_anatomy
from postlab.envs.multiturn import FEEDBACK, UnaryFeedback, parse_answer_tag
from postlab.verifiers.answers import math_verify_available


@pytest.mark.parametrize("split", ("id", "ood"))
@pytest.mark.parametrize("style", ("compact", "paper"))
def test_math_expert_and_split_ranges(split, style):
    env = Math(split=split, style=style)
    for seed in range(300):
        obs = env.reset(seed)
        p = env.problem
        n = len(p["steps"])
        assert (2 <= n <= 3) if split == "id" else (4 <= n <= 6)
        cap = 100 if split == "id" else 2000
        assert all(1 <= r <= cap for _, _, r in p["steps"])
        r = env.step(env.expert())
        assert r.reward == 1.0 and r.success and obs.info["answer"] == str(p["answer"])
        assert r.info["solution"] == "right"  # both styles' expert solutions parse step by step


def test_math_rewards_and_corpus():
    env = Math(style="compact")
    env.reset(0)
    ans = env.expert_answer()
    assert env.step(f"#### {int(ans) + 1}").reward == 0
    env.reset(0)
    assert env.step(f"so \\boxed{{{ans}}}").reward == 1  # any known final-answer format
    corpus = env.base_corpus(500)
    assert all("How many" not in t for t in corpus) and any(int(t.split("=")[1]) > 1000 for t in corpus if "=" in t)
    import random
    a, b = make_problem(random.Random(1), "id"), make_problem(random.Random(1), "id")
    assert a == b


# Ann has 12, buys 5, gets 3 times as many, loses 7: 12+5=17 17*3=51 51-7=44
PROBLEM = {"start": 12, "steps": [("+", 5, 17), ("*", 3, 51), ("-", 7, 44)], "answer": 44}


@pytest.mark.parametrize("answer, kind", [
    ("12+5=17 17*3=51 51-7=44 #### 44", "right"),
    ("12 + 5 = 17. Then 17 * 3 = 51, and 51 - 7 = 44. \\boxed{44}", "right"),
    ("#### 44", "no steps"),                                   # a right answer with no work shown
    ("I think it is 44", "no steps"),
    ("13+5=18 18*3=54 54-7=47 #### 47", "start misread"),
    ("12+5=17 18*3=54 54-7=47 #### 47", "copy slip"),
    ("12+5=17 17+3=20 20-7=13 #### 13", "wrong operation"),
    ("12+5=17 17*4=68 68-7=61 #### 61", "amount misread"),
    ("12+5=17 17*3=41 41-7=34 #### 34", "arithmetic slip"),    # the plan right, one fact wrong
    ("12+5=17 17*3=51 #### 51", "step count"),
    ("12+5=17 17*3=51 51-7=44 51-7=44 #### 44", "step count"),
    ("12+5=17 17*3=51 51-7=44 #### 45", "answer slip"),
    ("12+5=17 17*3=51 51-7=44", "answer slip"),                # no final answer after right steps
    ("12+5=17 17*3=51 51-7=44 #### 44 " + "9" * 5000 + "+1=1", "step count"),  # hostile digits never reach int()
])
def test_solution_anatomy_names_the_first_deviation(answer, kind):
    assert kind in SOLUTION_KINDS and solution_anatomy(answer, PROBLEM) == kind


def test_verify_steps_rewards_only_right_work():
    """A slip that lands on the right answer earns the answer reward, not the `steps` one."""
    env = Math(style="compact")
    env.reset(0)
    gold = env.expert_answer()
    lucky = f"1+1=3 #### {gold}"  # wrong work, right answer
    for verify, reward in (("answer", 1.0), ("steps", 0.0)):
        env = Math(style="compact", verify=verify)
        env.reset(0)
        r = env.step(lucky)
        assert r.reward == reward and r.success == bool(reward) and r.info["solution"] == "start misread"
        assert r.info["verdict"] == ("correct" if reward else "wrong steps")
        env.reset(0)
        assert env.step(env.expert()).reward == 1.0
        assert env.check_answer(gold)  # the answer-only check RASFT and unary feedback use
    with pytest.raises(ValueError, match="verify='strict'; valid: answer, steps"):
        Math(verify="strict")


def test_solution_anatomy_reaches_evaluation_diagnostics():
    """Math declares `solution`, so every evaluation counts each kind over first answers."""
    from postlab.envs.base import env_class
    from postlab.eval.evaluate import first_attempt_diagnostics
    from postlab.rollout.episodes import Episode, Turn

    assert env_class("math").diagnostics == ("solution",)
    env = Math(style="compact")
    episodes = []
    for seed, text in ((0, None), (1, "#### 3")):
        env.reset(seed)
        r = env.step(text if text is not None else env.expert())
        ep = Episode(seed=seed, messages=[], input_ids=[], loss_mask=[], logprobs=[])
        ep.turns.append(Turn(start=0, token_ids=[], logprobs=[], text="", finish_reason="stop", info=r.info))
        episodes.append([ep])
    diag = first_attempt_diagnostics(episodes, env_class("math").diagnostics)
    assert diag["diagnostics"]["solution"] == {"no steps": 0.5, "right": 0.5}


def test_math_jsonl_adapter(tmp_path):
    path = tmp_path / "m.jsonl"
    rows = [{"problem": "1+1?", "solution": "It is \\boxed{2}."},
            {"question": "Half of 1?", "answer": "\\frac{1}{2}"},
            {"instruction": "Root of 4?", "response": "\\boxed{2}"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = make("math-jsonl", path=str(path))
    assert env.reset(0).messages[0]["content"].startswith("1+1?")
    assert env.step(env.expert()).reward == 1
    env.reset(1)
    assert env.expert().endswith("\\boxed{\\frac{1}{2}}.") and env.step("\\boxed{0.5}").reward == 1
    env.reset(2)
    if math_verify_available():
        assert env.step("\\boxed{\\sqrt{4}}").reward == 1
    (tmp_path / "bad.jsonl").write_text('{"problem": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        MathJSONL(path=str(tmp_path / "bad.jsonl"))
    with pytest.raises(ValueError, match="give path"):
        MathJSONL()


def test_answer_tag_parsing():
    assert parse_answer_tag("a <answer> 5 </answer>") == "5"
    assert parse_answer_tag("<answer>1</answer><answer>2</answer>") == "2"
    assert parse_answer_tag("<answer></answer>") is None and parse_answer_tag("5") is None
    assert parse_answer_tag("<answer>5") is None


def test_unary_feedback_protocol():
    env = make("unary-feedback", env="math", split="id")
    obs = env.reset(0)
    assert obs.messages[-1]["content"].endswith("<answer>")
    gold = env.expert_answer()
    r = env.step("I think 3")  # unparsable: -0.1, no attempt used
    assert (r.reward, r.done) == (-0.1, False) and r.feedback == [{"role": "user", "content": FEEDBACK}]
    r = env.step("<answer>-1</answer>")
    assert (r.reward, r.done) == (0.0, False) and r.feedback[0]["content"] == "Incorrect. Please think again."
    r = env.step("<answer>-1</answer>")
    r = env.step(f"<answer>{gold}</answer>")  # stop at the first correct answer
    assert (r.reward, r.done, r.success) == (1.0, True, True)
    assert r.info["turn_correct"] == [None, False, False, True]
    assert r.info["answers"] == [None, "-1", "-1", gold]
    assert (r.info["n_answers"], r.info["n_distinct"], r.info["attempts"], r.info["format_errors"]) == (3, 2, 3, 1)


def test_unary_feedback_limits():
    env = UnaryFeedback(env="biographies", split="comp-iid")
    env.reset(0)
    for k in range(5):
        r = env.step("<answer>nobody</answer>")
    assert r.done and not r.success and r.info["attempts"] == 5  # five attempts
    env.reset(0)
    for k in range(10):
        r = env.step("no tags")
        if r.done:
            break
    assert r.done and k == 9 and r.info["attempts"] == 0  # total turns bounded (2 x attempts)
    assert UnaryFeedback(env="math", max_turns=1).max_attempts == 1  # generic callers pass max_turns
    env = UnaryFeedback(env="generalpoints", split="ood-rule", style="paper")
    env.reset(3)
    assert env.step(env.expert()).success and "<answer>" in env.expert()
    with pytest.raises(ValueError, match="no check_answer"):
        UnaryFeedback(env="navigation")
    with pytest.raises(ValueError, match="unknown inner env"):
        UnaryFeedback(env="chess")
    with pytest.raises(ValueError, match="valid: id, ood"):
        UnaryFeedback(env="math", split="test")


def test_unary_feedback_expert_everywhere():
    for name, splits in (("math", ("id", "ood")), ("biographies", ("comp-zeroshot", "mem-iid")),
                         ("generalpoints", ("id", "ood-rule", "ood-visual"))):
        for split in splits:
            for style in ("compact", "paper"):
                env = make("unary-feedback", env=name, split=split, style=style)
                for seed in range(40):
                    env.reset(seed)
                    r = env.step(env.expert())
                    assert r.success and r.reward == 1.0


def test_unary_feedback_keeps_generalpoints_worked_derivation():
    """The wrapper takes its inner env's answer styles: GeneralPoints' `reason` answers keep the derivation
    before the <answer> tag (the drift study's `reason` preset), whose formula is the derivation's own."""
    env = make("unary-feedback", env="generalpoints", split="id", style="reason")
    obs = env.reset(20_000_000_001)  # 5 A J 7 under J=Q=K=10
    assert obs.messages[-1]["content"] == "rule J=Q=K=10 | cards 5♣ A♣ J♠ 7♠ <answer>"
    assert env.expert() == "5 1 10 7 | 5*7=35 [1 10 35] | 1+10=11 [35 11] | 35-11=24 <answer>(5*7)-(1+10)=24</answer>"
    r = env.step("5 1 10 7 | 5+1+10+7=23 <answer>5+1+10+7=24</answer>")  # a formula off by one: an attempt used
    assert (r.reward, r.done, r.info["attempts"]) == (0.0, False, 1)
    assert env.step(env.expert()).success
    inner = make("generalpoints", split="ood-rule", style="reason")
    for seed in range(40):  # the derivation's formula is the answer the wrapper checks, on every split
        inner.reset(seed)
        assert inner.expert() == f"{inner.expert_reasoning()} | {inner.expert_answer()}"
        assert inner.check_answer(inner.expert_answer())
    assert make("generalpoints", style="compact").expert_reasoning() == ""
    with pytest.raises(ValueError, match="unknown style 'reason'; valid: compact, paper"):
        make("unary-feedback", env="math", style="reason")  # math has no reason style


def test_expert_retries_show_a_correction_without_teaching_the_mistake():
    """`expert_retries`: that share of expert dialogues first gives a neighbouring problem's answer (wrong
    here, marked "train": false), gets the feedback, then answers right: a reference that has seen a
    correction (DRIFT's offline data has none from a reference trained on first answers only)."""
    from postlab.data.records import encode_record
    from postlab.envs.export import expert_dialogue
    from postlab.models import build_tokenizer

    env = make("unary-feedback", env="generalpoints", split="id", style="reason", expert_retries=1.0)
    messages = expert_dialogue(env, 5)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    wrong, feedback, right = messages[1], messages[2], messages[3]
    assert wrong["train"] is False and "train" not in right and feedback["content"] == FEEDBACK
    env.reset(5)
    assert not env.check_answer(parse_answer_tag(wrong["content"]))
    assert env.check_answer(parse_answer_tag(right["content"]))
    assert " | " in wrong["content"]  # a whole attempt: the neighbour's derivation, then its formula
    assert env.expert() == wrong["content"] and not env.expert_turn_trained()
    env.step(wrong["content"])
    assert env.expert() == right["content"] and env.expert_turn_trained()
    # only the correction is trained: the wrong attempt's tokens carry no loss
    tok = build_tokenizer([], "char")
    enc = encode_record(tok, {"messages": messages})
    trained = tok.decode([t for t, m in zip(enc.input_ids, enc.loss_mask) if m])
    assert right["content"] in trained and wrong["content"] not in trained
    # a share of 0.3: about that many dialogues retry, the same ones every time, each ending right
    share = make("unary-feedback", env="math", split="id", expert_retries=0.3)
    lengths = [len(expert_dialogue(share, s)) for s in range(300)]
    assert lengths == [len(expert_dialogue(share, s)) for s in range(300)]
    assert 0.2 < lengths.count(4) / 300 < 0.4 and set(lengths) == {2, 4}
    assert [len(expert_dialogue(make("unary-feedback", env="math"), s)) for s in range(20)] == [2] * 20
    with pytest.raises(ValueError, match=r"expert_retries must be a number in \[0, 1\]"):
        make("unary-feedback", env="math", expert_retries=1.5)
    with pytest.raises(ValueError, match="needs max_attempts >= 2"):
        make("unary-feedback", env="math", max_attempts=1, expert_retries=0.5)
