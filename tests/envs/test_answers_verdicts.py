"""Math answer verdicts that were wrong: decimals passed for irrationals, zero products passed for 0,
spaces inside numbers were dropped, MATH-style thin spaces were not understood."""

import pytest

from postlab.verifiers import answers

needs_mv = pytest.mark.skipif(not answers.math_verify_available(), reason="math-verify not installed")


@needs_mv
@pytest.mark.parametrize("pred,gold", [
    ("1.414214", r"\sqrt{2}"), ("3.141593", r"\pi"), ("1.5708", r"\frac{\pi}{2}"),
    (r"\sqrt{2}", "1.414214"),  # either side
    ("0.333333", r"\frac{1}{3}"),  # decimals are exact, as on the numeric path
    ("0.7071068x", r"\frac{\sqrt{2}}{2}x"),  # inside an expression too
])
def test_a_decimal_is_not_an_irrational(pred, gold):
    assert not answers.answers_match(pred, gold, use_math_verify=True)


@needs_mv
@pytest.mark.parametrize("pred,gold", [
    ("0z", "0"), (r"0\pi", "0"), (r"0 \cdot x", "0"), (r"0\sqrt{2}", "0"), ("0", "0z"), ("1+0z", "1"),
])
def test_a_zero_product_with_a_symbol_or_constant_is_not_a_number(pred, gold):
    assert not answers.answers_match(pred, gold, use_math_verify=True)


@pytest.mark.parametrize("mv", [False, True])
@pytest.mark.parametrize("pred,gold", [("1 2", "12"), ("1 23", "123"), (r"1\,2", "12"), ("1 2", "3"), ("1.5 0", "1.5")])
def test_spaces_inside_a_number_are_not_dropped(pred, gold, mv):
    assert not answers.answers_match(pred, gold, use_math_verify=mv)


@pytest.mark.parametrize("pred,gold", [
    (r"10,\!000", "10000"), (r"44\!", "44"), (r"10\,000", "10000"), (r"10\;000", "10000"), (r"1{,}000", "1000"),
    (r"1\,234\,567", "1234567"), ("10 000", "10000"), ("- 3", "-3"), ("3 / 4", "0.75"),
])
def test_math_style_digit_groups_and_spaces(pred, gold):
    assert answers.answers_match(pred, gold)
    assert answers.answers_match(gold, pred)


@needs_mv
@pytest.mark.parametrize("pred,gold", [
    (r"\sqrt{4}", "2"), ("0.5x", r"\frac{x}{2}"), (r"1.5\pi", r"\frac{3\pi}{2}"), ("x=1.5", r"\frac{3}{2}"),
    (r"(0.5, 2]", r"(\frac{1}{2}, 2]"), (r"0.5\sqrt{2}", r"\frac{\sqrt{2}}{2}"), (r"2 \cdot 0", "0"),
    (r"2\sqrt{2}", r"\sqrt{8}"), ("x+1", "1+x"), ("0.1 + 0.2", "0.3"), ("-0.5", r"-\frac{1}{2}"),
])
def test_what_was_right_stays_right(pred, gold):
    assert answers.answers_match(pred, gold, use_math_verify=True)


def test_long_answers_are_still_refused():
    assert not answers.answers_match("1" * (answers.MAX_ANSWER_CHARS + 1), "1")
    assert answers.as_number("1" * 100) is None
    assert not answers.answers_match("0" * 200 + "z", "0", use_math_verify=True)  # over the math-verify limit
