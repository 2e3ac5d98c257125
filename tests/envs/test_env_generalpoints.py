"""GeneralPoints: solver, splits, multi-turn revision, expert, base corpus."""

import itertools
import json
import random
import re
from fractions import Fraction

import pytest

from postlab.envs import make
from postlab.envs.generalpoints import BLACK, RED, GeneralPoints, card_value, face_rule_applied, values_read
from postlab.envs.gp_solver import count_solvable, derivation, is_solvable, render_derivation, solutions
from postlab.verifiers.arith import evaluate
from postlab.verifiers.generalpoints import score_formula

SPLITS = ("id", "ood-rule", "ood-visual")


def test_solver_reference_count():
    assert count_solvable((11, 12, 13), 24) == 1362  # of the 1820 rank multisets (methods.md)
    assert sum(1 for _ in itertools.combinations_with_replacement(range(1, 14), 4)) == 1820


def _brute(values, target):
    """Independent oracle: every binary tree over every ordering, exact arithmetic."""
    def reach(vals):
        if len(vals) == 1:
            return {vals[0]}
        out = set()
        for i, j in itertools.permutations(range(len(vals)), 2):
            rest = [v for k, v in enumerate(vals) if k not in (i, j)]
            a, b = vals[i], vals[j]
            for c in [a + b, a - b, a * b] + ([a / b] if b else []):
                out |= reach(rest + [c])
        return out
    return Fraction(target) in reach([Fraction(v) for v in values])


def test_solver_against_oracle_and_verifier():
    rng = random.Random(0)
    for _ in range(60):
        vals, target = [rng.randint(1, 13) for _ in range(4)], rng.choice([24, 24, 10, 1, 0])
        sols = solutions(vals, target)
        assert is_solvable(vals, target) == bool(sols) == _brute(vals, target)
        for s in sols:  # every listed solution is credited by the verifier
            assert score_formula(s, vals, target).success
    assert solutions([3, 3, 8, 8]) == ("8/(3-8/3)",)
    simple = solutions([1, 2, 3, 4])
    assert simple[0].count("(") == 0 and all(a.count("(") <= b.count("(") for a, b in zip(simple, simple[1:]))


@pytest.mark.parametrize("split", SPLITS)
def test_splits_deal_solvable_hands_with_their_rule_and_suits(split):
    env = GeneralPoints(split=split)
    for seed in range(150):
        obs = env.reset(seed)
        info = obs.info
        assert is_solvable(info["values"], 24)
        suits = {c[-1] for c in info["cards"]}
        assert suits <= set(RED if split == "ood-visual" else BLACK)
        if split == "ood-rule":
            assert any(r >= 11 for r in info["ranks"])  # every OOD hand is affected by the rule
            assert info["values"] == info["ranks"] and "rule J=11 Q=12 K=13" in obs.messages[0]["content"]
        else:
            assert info["values"] == [min(r, 10) for r in info["ranks"]]
            assert "rule J=Q=K=10" in obs.messages[0]["content"]


def test_ood_rule_hands_are_scored_under_the_other_rule():
    env = GeneralPoints(split="ood-rule")
    for seed in range(100):
        env.reset(seed)
        ranks = env.ranks
        as_id = [min(r, 10) for r in ranks]  # reading the hand with the ID rule
        for sol in solutions(as_id, 24)[:3]:
            assert not env.verify(sol).success  # an ID-rule answer never scores on an OOD hand
        assert env.verify(env.expert()).success


def test_no_ood_rule_item_in_id_training_data():
    id_env, ood_env = GeneralPoints(split="id"), GeneralPoints(split="ood-rule")
    id_prompts = {id_env.reset(s).messages[0]["content"] for s in range(2000)}
    ood_prompts = {ood_env.reset(s).messages[0]["content"] for s in range(500)}
    assert not id_prompts & ood_prompts
    vis_prompts = {GeneralPoints(split="ood-visual").reset(s).messages[0]["content"] for s in range(500)}
    assert not id_prompts & vis_prompts


@pytest.mark.parametrize("style", ("compact", "reason", "paper"))
@pytest.mark.parametrize("split", SPLITS)
def test_expert_gets_full_reward(split, style):
    env = make("generalpoints", split=split, style=style)
    for seed in range(300):
        env.reset(seed)
        r = env.step(env.expert())
        assert (r.reward, r.done, r.success) == (5.0, True, True), (seed, env.expert())


def test_expert_formats():
    env = GeneralPoints(style="paper")
    env.reset(1)
    obj = json.loads(env.expert())
    assert set(obj) == {"cards", "number", "formula"} and obj["number"] == env.values
    assert evaluate(obj["formula"].split("=")[0]) == 24
    env = GeneralPoints(style="compact")
    env.reset(1)
    assert env.expert().endswith("=24") and "\n" not in env.expert()
    # "any" picks among all solutions, "simple" among the fewest-bracket ones; both seeded
    a, b = GeneralPoints(expert_choice="any"), GeneralPoints(expert_choice="any")
    a.reset(7), b.reset(7)
    assert a.expert() == b.expert() and a.solution in a.all_solutions


def test_multi_turn_sequential_revision():
    env = GeneralPoints(split="id", style="paper")
    obs = env.reset(3)
    assert env.verify_iter == 5 and len(obs.messages) == 1
    for k in range(1, 5):
        r = env.step('{"formula": "1+1"}')
        assert not r.done and r.feedback[0]["role"] == "user"
        assert r.feedback[0]["content"].startswith("You failed this trial because ")
        assert r.info["attempt"] == k
    r = env.step("1+1")
    assert r.done and not r.success and r.feedback == []
    env = GeneralPoints(max_turns=2, style="compact")
    env.reset(0)
    assert env.step("1+1").feedback[0]["content"].startswith("fail: ")
    r = env.step(env.expert())
    assert r.done and r.success and r.reward == 5
    with pytest.raises(RuntimeError):
        env.step("1")


def test_determinism_and_bad_arguments():
    a, b = GeneralPoints(split="ood-rule"), GeneralPoints(split="ood-rule")
    assert [a.reset(s).messages for s in range(20)] == [b.reset(s).messages for s in range(20)]
    with pytest.raises(ValueError, match="valid: id, ood-rule, ood-visual"):
        GeneralPoints(split="ood")
    with pytest.raises(ValueError, match="valid: compact, reason, paper"):
        GeneralPoints(style="fancy")
    with pytest.raises(ValueError, match="disagree"):
        GeneralPoints(verify_iter=3, max_turns=4)
    env = GeneralPoints(target=30)
    obs = env.reset(0)
    assert "target 30" in obs.messages[0]["content"] and env.step(env.expert()).success


def test_base_corpus_teaches_ood_knowledge_but_never_the_task():
    env = GeneralPoints()
    corpus = env.base_corpus(5000, seed=0)
    assert corpus == env.base_corpus(5000, seed=0) and len(corpus) == 5000
    games = [c for c in corpus if isinstance(c, dict)]  # card games in chat form
    assert 500 < len(games) < 2000
    n_cards = []
    for g in games:
        user, assistant = g["messages"][0]["content"], g["messages"][1]["content"]
        rule, cards, target = user.split(" | ")
        n_cards.append(len(cards.split()) - 1)
        assert n_cards[-1] in (2, 3, 4)
        assert not (n_cards[-1] == 4 and target == "target 24")  # never the task itself
        face = 11 if rule == "rule J=11 Q=12 K=13" else 10
        values = sorted(card_value({"A": 1, "J": 11, "Q": 12, "K": 13}.get(c[:-1]) or int(c[:-1]), face)
                        for c in cards.split()[1:])
        lhs, rhs = assistant.rsplit("=", 1)
        assert evaluate(lhs) == Fraction(rhs) == int(target.split()[1])
        assert sorted(int(t) for t in re.findall(r"\d+", lhs)) == values
    assert {2, 3, 4} <= set(n_cards)
    corpus = [c for c in corpus if isinstance(c, str)]
    text = "\n".join(corpus)
    assert "rule J=11 Q=12 K=13" in text and "rule J=Q=K=10" in text
    assert all(s in text for s in ("♥", "♦", "♠", "♣")) and "13" in text
    for line in corpus:
        if "=" in line and "|" not in line and " " not in line:  # an arithmetic line
            lhs, rhs = line.rsplit("=", 1)
            assert evaluate(lhs) == Fraction(rhs)  # every stated value is right
            n_numbers = sum(1 for t in lhs.replace("(", " ").replace(")", " ").replace("+", " ").replace("-", " ")
                            .replace("*", " ").replace("/", " ").split())
            assert not (n_numbers == 4 and evaluate(lhs) == 24)  # never a 24-points solution
        if "cards" in line and "=" in line.split("cards")[1]:  # card arithmetic under a stated rule
            rule, cards, formula = line.split(" | ")
            face = 11 if rule == "rule J=11 Q=12 K=13" else 10
            values = sorted(card_value({"A": 1, "J": 11, "Q": 12, "K": 13}.get(c[:-1]) or int(c[:-1]), face)
                            for c in cards.split()[1:])
            lhs, rhs = formula.rsplit("=", 1)
            assert evaluate(lhs) == Fraction(rhs)
            assert sorted(int(t) for t in re.findall(r"\d+", lhs)) == values  # the rule's values, each card once
            assert not (len(values) == 4 and evaluate(lhs) == 24)  # never a 24-points solution
    assert sum("cards" in line and line.count("|") == 2 for line in corpus) > 500


def test_face_rule_applied_tells_which_convention_an_answer_uses():
    # rule-OOD hand K 3 8 A (K = 13): 13 is the stated rule, 10 the memorized ID one
    assert face_rule_applied("13*3-8-1=30", [13, 3, 8, 1], 11) == "stated"
    assert face_rule_applied("10+3+8+1=22", [13, 3, 8, 1], 11) == "other"
    assert face_rule_applied("3*8*1=24", [13, 3, 8, 1], 11) == "neither"
    assert face_rule_applied("10+13=23", [13, 10, 8, 1], 11) == "stated"  # a real 10 card is not the ID rule
    assert face_rule_applied("10*2+4=24", [13, 10, 2, 4], 11) == "neither"
    # ID hand (J = Q = K = 10): writing 12 for a queen is the other convention
    assert face_rule_applied("12*2=24", [12, 2, 5, 5], 10) == "other"
    assert face_rule_applied("10+5+5+2=22", [12, 2, 5, 5], 10) == "stated"
    assert face_rule_applied("5+5=10", [9, 2, 5, 5], 10) is None  # no face card: no verdict
    assert face_rule_applied("13+" + "9" * 50_000, [13, 3, 8, 1], 11) == "stated"  # hostile digit run: no crash
    env = GeneralPoints(split="ood-rule", max_turns=1)
    env.reset(0)
    assert env.step(env.expert()).info["face_rule"] == "stated"  # every rule-OOD expert answer uses the rule


def test_reason_derivations_by_hand():
    # 9 3 13 1: the smallest largest intermediate is 24 (9+3=12, 13-1=12, 12+12)
    assert render_derivation([9, 3, 13, 1], derivation((9, 3, 13, 1)), 24) == \
        "9 3 13 1 | 9+3=12 [13 1 12] | 13-1=12 [12 12] | 12+12=24 | (9+3)+(13-1)=24"
    # chains bracket earlier results; the larger number is taken first in - and /
    assert render_derivation([3, 4, 9, 9], derivation((3, 4, 9, 9)), 24) == \
        "3 4 9 9 | 9/3=3 [4 9 3] | 9-3=6 [4 6] | 4*6=24 | 4*(9-(9/3))=24"
    # no integer derivation: the fraction fallback, fractions bracketed inside steps
    assert render_derivation([8, 8, 3, 3], derivation((8, 8, 3, 3)), 24) == \
        "8 8 3 3 | 8/3=8/3 [8 3 8/3] | 3-(8/3)=1/3 [8 1/3] | 8/(1/3)=24 | 8/(3-(8/3))=24"
    assert derivation((1, 1, 1, 1)) is None
    # other targets (the base corpus's games)
    assert render_derivation([13, 3], derivation((13, 3), 39), 39) == "13 3 | 13*3=39 | 13*3=39"


@pytest.mark.parametrize("split", SPLITS)
def test_reason_answers_are_consistent_derivations(split):
    """Every step's arithmetic is right, each list left is the previous list with the two operands
    replaced by the result, and the formula is what the steps build."""
    env = GeneralPoints(split=split, style="reason")
    for seed in range(200):
        env.reset(seed)
        fields = env.expert().split(" | ")
        numbers = [Fraction(x) for x in fields[0].split()]
        assert fields[0].split() == [str(v) for v in env.values]
        for field in fields[1:-1]:
            step, _, left = field.partition(" [")
            lhs, rhs = step.rsplit("=", 1)
            assert evaluate(lhs) == Fraction(rhs)
            a, b = re.fullmatch(r"(\(\d+/\d+\)|\d+)[-+*/](\(\d+/\d+\)|\d+)", lhs).groups()
            for x in (a, b):
                numbers.remove(Fraction(x.strip("()")))
            numbers.append(Fraction(rhs))
            if left:
                assert sorted(Fraction(x) for x in left.rstrip("]").split()) == sorted(numbers)
        assert numbers == [24]
        assert score_formula(fields[-1], env.values).success


def test_reason_style_scores_only_the_formula():
    env = GeneralPoints(style="reason")
    env.reset(0)  # 3 4 9 9
    good = env.expert()
    assert env.verify(good).success
    steps, formula = good.rsplit(" | ", 1)
    # right steps, wrong formula: fails; wrong steps, right formula: succeeds (steps are not scored)
    assert not env.verify(f"{steps} | 4*9-9+3=24").success
    assert env.verify(f"1 2 3 4 | 9*9=7 | {formula}").success
    assert env.verify(formula).success  # no derivation at all: the whole line is the formula
    v = env.verify("3 4 9 9 | 9/3=3 [4 9 3] |")  # cut off before the formula
    assert v.kind == "illegal" and not v.success
    assert env.verify("x" * 100_000).kind == "illegal"
    assert env.step("1 2 | 1+2=3 | 1+2").feedback[0]["content"].startswith("fail: ")  # compact feedback
    # the values field shows which rule an answer applies
    ood = GeneralPoints(split="ood-rule", style="reason")
    ood.reset(0)
    ranks = ood.ranks
    memorized = " ".join(str(min(r, 10)) for r in ranks) + " | 1+1=2"
    assert face_rule_applied(memorized, ranks, 11) == "other"
    assert face_rule_applied(ood.expert(), ranks, 11) == "stated"


def test_reason_base_corpus_plays_games_in_the_derivation_form_never_the_task():
    env = GeneralPoints(style="reason")
    corpus = env.base_corpus(3000, seed=1)
    assert corpus == env.base_corpus(3000, seed=1)
    games = [c for c in corpus if isinstance(c, dict)]
    assert len(games) > 300
    faces = set()
    for g in games:
        user, answer = g["messages"][0]["content"], g["messages"][1]["content"]
        rule, cards, target = user.split(" | ")
        face = 11 if rule == "rule J=11 Q=12 K=13" else 10
        faces.add(face)
        values = [card_value({"A": 1, "J": 11, "Q": 12, "K": 13}.get(c[:-1]) or int(c[:-1]), face)
                  for c in cards.split()[1:]]
        t = int(target.split()[1])
        assert not (len(values) == 4 and t == 24) and 0 < t <= 60
        fields = answer.split(" | ")
        assert fields[0] == " ".join(map(str, values))  # the values under the stated rule
        assert score_formula(fields[-1], values, t).success
        assert len(fields) == len(values) + 1  # values, one step per combination, formula
    assert faces == {10, 11}


def test_values_read_tells_which_rule_the_whole_values_field_uses():
    ranks = [13, 3, 12, 1]  # K 3 Q A
    assert values_read("13 3 12 1 | 13-1=12 [3 12 12] | ...", ranks, 11) == "stated"
    assert values_read("10 3 10 1 | 10+3=13 [10 1 13] | ...", ranks, 11) == "other"  # the ID rule
    assert values_read("13 3 10 1 | 13+1=14 | ...", ranks, 11) == "neither"  # a mix: face_rule says 'stated'
    assert face_rule_applied("13 3 10 1 | 13+1=14 | ...", ranks, 11) == "stated"
    assert values_read("13 3 12 | 1+1=2", ranks, 11) == "neither"  # a card missing
    assert values_read("13 3 1² 1 | 1+1=2", ranks, 11) == "neither"  # not ASCII digits
    assert values_read("13*3-12-1=26", ranks, 11) is None  # no values field (compact answer)
    assert values_read("1 2 | 3", [1, 2, 3, 4], 11) is None  # no face card: both rules agree
    assert values_read("10 3 10 1 | x", ranks, 10) == "stated"  # an ID hand
    env = GeneralPoints(split="ood-rule", style="reason")
    env.reset(0)
    assert env.step(env.expert()).info["values_read"] == "stated"
    compact = GeneralPoints(split="ood-rule")
    compact.reset(0)
    assert compact.step(compact.expert()).info["values_read"] is None


def test_derivation_checks_by_hand():
    from postlab.eval.gp_derivations import check

    good = "9 3 13 1 | 9+3=12 [13 1 12] | 13-1=12 [12 12] | 12+12=24 | (9+3)+(13-1)=24"
    assert check(good, [9, 3, 13, 1], success=True) == {"values_read": True, "steps_right": True,
                                                        "reaches_target": True, "success": True}
    # the ID rule read on a rule-OOD hand, right arithmetic on the wrong numbers
    assert check("9 3 10 1 | 9+3=12 [10 1 12] | 10+1=11 [12 11] | 12+11=23 | x", [9, 3, 13, 1]) == \
        {"values_read": False, "steps_right": True, "reaches_target": False, "success": False}
    # a wrong step, then a claimed 24
    assert check("9 3 13 1 | 13-1=10 [9 3 10] | 9+3=12 [10 12] | 10+12=24 | f", [9, 3, 13, 1])["steps_right"] is False
    assert check("garbage", [1, 2, 3, 4]) == dict.fromkeys(("values_read", "steps_right", "reaches_target", "success"), False)
    assert check("1 2 | 1/0=3 | x", [1, 2])["steps_right"] is False  # division by zero is a wrong step
