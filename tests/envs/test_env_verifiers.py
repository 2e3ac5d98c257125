"""Verifiers: exact arithmetic, GeneralPoints rewards and reasons, answer extraction, navigation actions."""

from fractions import Fraction

import pytest

from postlab.verifiers import answers
from postlab.verifiers.arith import ArithError, evaluate, parse
from postlab.verifiers.generalpoints import extract_formula, score_formula, score_response
from postlab.verifiers.navigation import parse_action, score_action


# -- exact arithmetic -------------------------------------------------------------------------------
def test_exact_rational_arithmetic():
    assert evaluate("8/(3-8/3)") == 24  # a float evaluation gives 23.999999999999996
    assert evaluate("(10+9+10)*5/6") == Fraction(145, 6)  # no truncation to an integer
    assert evaluate("1 + 2 * 3") == 7 and evaluate("(1+2)*3") == 9 and evaluate("8-3-2") == 3 and evaluate("8/4/2") == 1
    p = parse("8/(3-3)*8")
    assert p.value is None and p.div_zero and p.numbers == (8, 3, 3, 8)


@pytest.mark.parametrize("text,kind", [
    ("", "illegal formula"), ("8*", "illegal formula"), ("(8", "illegal formula"), ("8)", "illegal formula"),
    ("-8+32", "illegal formula"), ("8 8", "illegal formula"), ("2**3", "illegal formula"),
    ("8x3", "illegal characters"), ("8.5*2", "illegal characters"), ("8×3", "illegal characters"),
    ("²+1", "illegal characters"), ("__import__('os')", "illegal characters"),
    ("1" * 10, "illegal formula"), ("(" * 40 + "1" + ")" * 40, "illegal formula"),
    ("1+" * 200 + "1", "illegal formula"),
])
def test_not_a_formula(text, kind):
    with pytest.raises(ArithError) as e:
        parse(text)
    assert e.value.kind == kind


# -- GeneralPoints rewards ---------------------------------------------------------------------------
def test_regressions_from_public_verifiers():
    assert score_formula("8/(3-8/3)", [3, 3, 8, 8]).reward == 5  # exact rationals
    assert score_formula("8/(3-8/3)=24", [8, 3, 8, 3]).success
    for hand in ([6, 4, 1, 2], [6, 4, 2, 2], [1, 1, 1, 1], [6, 6, 4, 1], [10, 4, 1, 1]):
        assert not score_formula("6*4*1*1", hand).success  # the numbers must be the dealt cards
    assert score_formula("6*4*1*1", [1, 6, 1, 4]).success
    v = score_formula("(10+9+10)*5/6", [10, 9, 10, 5])
    assert not v.success  # 145/6, not 24; and the 6 is not a card
    v = score_formula("(10+9+10)*5/6", [10, 9, 10, 5, 6])
    assert (v.reward, v.kind, v.reasons) == (-1, "wrong value", ["your formula does not evaluate to 24"])


def test_reward_values_and_reasons():
    hand = [3, 3, 8, 8]
    v = score_formula("8*3", hand)
    assert v.reward == -2 and v.reasons == ["you didn't use numbers: [3, 8]"]
    v = score_formula("11+8+3+3-8/8", hand)
    assert v.reward == -2 and v.reasons == ["you used invalid numbers: [11]"]  # overuse is not reported then
    v = score_formula("11+8*3", hand)
    assert v.reward == -4 and v.reasons == ["you used invalid numbers: [11]", "you didn't use numbers: [3, 8]"]
    v = score_formula("8+8+8+3+3", hand)
    assert v.reward == -2 and v.reasons == ["you used numbers: [8] too many times"]
    v = score_formula("8+8+3+3", hand)
    assert (v.reward, v.kind) == (-1, "wrong value") and v.value == 22
    assert score_formula("8+8+3+3", hand, target=22).reward == 5
    assert score_formula("8/(3-3)+8", hand).reasons == ["your formula divides by zero"]
    assert score_formula("8*3$", hand).reasons == ["illegal characters"] and score_formula("8*3$", hand).reward == -3
    assert score_formula("8*(3", hand).reasons == ["illegal formula"] and score_formula("8*(3", hand).reward == -3
    assert score_formula(None, hand).reward == -3
    # per_number=True charges -2 per offending number (the released code charges once per category)
    assert score_formula("11+13", hand, per_number=True).reward == -2 * 2 - 2 * 2


def test_feedback_texts():
    v = score_formula("11+8*3", [3, 3, 8, 8])
    assert v.feedback() == ("You failed this trial because you used invalid numbers: [11], "
                            "you didn't use numbers: [3, 8].")
    assert v.feedback("compact") == "fail: invalid [11], unused [3, 8]"
    expected = "You failed this trial because your formula does not evaluate to 24."
    assert score_formula("8+8+3+3", [3, 3, 8, 8]).feedback() == expected


def test_formula_extraction_paper_json_is_lenient():
    paper = '{\n  "cards": [\'3\', \'3\', \'8\', \'8\'],\n  "number": [3, 3, 8, 8],\n  "formula": "8/(3-8/3)=24",\n}'
    assert extract_formula(paper) == "8/(3-8/3)=24"  # trailing comma, single quotes: the authors' template
    assert extract_formula('Sure! {"cards": ["3"], "number": [3], "formula": "8*3=24"} done') == "8*3=24"
    assert extract_formula("'formula': '8*3'") == "8*3"
    assert extract_formula('{"formula": 5}') is None
    assert extract_formula("  8/(3-8/3)=24\nthat's it") == "8/(3-8/3)=24"
    assert score_response(paper, [3, 3, 8, 8]).success
    assert score_response("x" * 20_000, [3, 3, 8, 8]).reward == -3


# -- answers -----------------------------------------------------------------------------------------
def test_answer_extraction_formats():
    assert answers.extract_answer("A is B. So, the answer is: Jonas Barnes") == "Jonas Barnes"
    assert answers.extract_answer("So, the answer is: x. So, the answer is: 42.\nmore") == "42."
    assert answers.extract_answer("think <answer>1</answer> again <answer> 7 </answer>") == "7"
    assert answers.extract_answer(r"so \boxed{\frac{1}{2}} and \boxed{3}") == "3"
    assert answers.extract_answer(r"\boxed{\frac{a}{b}}") == r"\frac{a}{b}"
    assert answers.extract_answer("1+2=3 #### 3") == "3"
    assert answers.extract_answer("no answer here") is None
    assert answers.extract_answer(r"\boxed{unclosed") is None


def test_answers_match_exact_and_numeric():
    assert answers.answers_match("Jonas Barnes.", "Jonas Barnes")
    assert not answers.answers_match("jonas barnes", "Jonas Barnes")  # exact, case-sensitive
    assert answers.answers_match("0.5", "1/2") and answers.answers_match(r"\frac{1}{2}", "0.50")
    assert answers.answers_match("1,000", "1000") and answers.answers_match("50%", "1/2")
    assert not answers.answers_match("12", "13") and not answers.answers_match(None, "1")
    assert answers.exact_match("... So, the answer is: Norvia", "Norvia")
    assert not answers.exact_match("... So, the answer is: Norvia Land", "Norvia")


def test_math_verify_is_optional_and_guarded(monkeypatch):
    if answers.math_verify_available():
        assert answers.answers_match(r"\sqrt{4}", "2", use_math_verify=True)
        assert answers.answers_match("x+1", "1+x", use_math_verify=True)
        assert not answers.answers_match("x+1", "1+x", use_math_verify=False)  # symbolic: math-verify's job
        assert not answers.answers_match("9^{9^{9}}", "1", use_math_verify=True)  # screened: sympy would hang
    monkeypatch.setattr(answers, "_MV", False)  # as if not installed
    assert not answers.answers_match("x+1", "1+x", use_math_verify=True)
    assert answers.answers_match(r"\sqrt{4}", "2", use_math_verify=True)  # the fallback reads k*sqrt(m) (issue 29)
    assert answers.answers_match("2", "2.0", use_math_verify=True)


# -- navigation actions --------------------------------------------------------------------------------
def test_action_parsing():
    assert parse_action("turn_direction(northeast)") == ("turn", "northeast")
    assert parse_action("turn NE") == parse_action(" Turn ne. ") == ("turn", "northeast")
    assert parse_action("turn_direction(slightly left)") == ("turn", "slightly left")
    assert parse_action("forward()") == parse_action("forward") == ("forward",)
    assert parse_action("stop()") == ("stop",)
    assert parse_action("turn up") is None and parse_action("jump") is None and parse_action("") is None


def test_navigation_rewards():
    gold = ("turn", "east")
    assert score_action("turn E", gold, True).reward == 1
    assert score_action("forward()", gold, True).reward == -1
    wrong_claim = '{"current observation": "No landmarks nearby.", "current instruction": "x", "action": "forward()"}'
    assert score_action(wrong_claim, gold, True).reward == -1.5  # denies the intersection it stands at
    false_claim = '{"current observation": "You observe an intersection", "action": "stop()"}'
    assert score_action(false_claim, ("forward",), False).reward == -1.5
    right_claim_wrong_action = '{"current observation": "You observe an intersection", "action": "stop()"}'
    assert score_action(right_claim_wrong_action, gold, True).reward == -1
    assert score_action('{"current observation": "x", "action": "turn_direction(east)",}', gold, True).reward == 1
