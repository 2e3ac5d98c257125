"""Math verdicts on real answer formats (issue 29): the same verdict with math-verify (now a core
dependency) and without it (the fallback path), on MATH-, GSM8K- and AIME-style answers."""

import pytest

from postlab.verifiers import answers

SAME = [  # (model answer, gold): the same answer in another notation
    # MATH: fractions, radicals, units, degrees, choices, assignments, tuples, sets, percent, money
    (r"\frac12", r"\frac{1}{2}"), (r"\frac1{2}", r"\frac{1}{2}"), (r"\frac{1}2", "0.5"), (r"\dfrac{3}{4}", "0.75"),
    (r"\tfrac{3}{4}", r"\frac34"), (r"5\text{ cm}", "5"), (r"5\text{ inches}", "5"), (r"12\text{ cm}^2", "12"),
    (r"90^\circ", "90"), (r"90^{\circ}", "90"), (r"45^\circ", "45"), (r"2\sqrt{3}", r"\sqrt{12}"),
    (r"\sqrt{12}", r"2\sqrt{3}"), (r"3\sqrt{2}", r"\sqrt{18}"), (r"\sqrt{8}", r"2\sqrt2"), (r"\sqrt{16}", "4"),
    ("(1,2)", "(1, 2)"), (r"\left(1, 2\right)", "(1,2)"), ("x=5", "5"), ("5", "x = 5"), ("y = -3", "-3"),
    (r"\text{(B)}", "B"), ("(B)", "B"), ("B", r"\text{(B)}"), (r"1.5\times10^{3}", "1500"),
    (r"1.5 \times 10^3", "1500"), (r"10^{10}", "10000000000"), ("2^{10}", "1024"), (r"2.5\cdot 10^{-2}", "0.025"),
    (r"50\%", "50"), ("50%", "1/2"), (r"\$5", "5"), (r"\$1,\!000", "1000"), ("3, 4", r"\{3,4\}"),
    ("4, 3", r"\{3,4\}"), (r"\{1, 2, 3\}", "3,2,1"), (r"\frac{1}{2}", "0.5"), ("-\\frac{3}{2}", "-1.5"),
    (r"\boxed{7}", r"\boxed{7}"), ("$7$", "7"), ("7.", "7"),
    # GSM8K: plain integers, thousands separators, money, trailing units in words
    ("18", "18"), ("1,000", "1000"), ("1000.00", "1000"), (r"\$18", "18"), ("$18.00", "18"), ("70000", "70,000"),
    ("-5", "-5"), ("0.25", "1/4"),
    # AIME: integers 000-999, leading zeros
    ("033", "33"), ("005", "5"), ("999", "999"), ("0", "000"),
]

DIFFERENT = [  # must stay wrong
    ("1500", r"1.5\times10^{4}"), (r"2\sqrt{3}", r"\sqrt{13}"), (r"\sqrt{12}", "3"), ("(1,2)", "(2,1)"),
    ("3, 4", r"\{3,5\}"), ("3, 4", r"\{3,4,5\}"), ("A", "B"), ("(C)", "B"), ("50", "51"), ("x=5", "6"),
    ("12", "1, 2"), (r"90^\circ", "91"), (r"5\text{ cm}", "6"), (r"\$5", "6"), ("2^{10}", "1000"), ("33", "34"),
    ("1 2", "12"), ("1.414214", r"\sqrt{2}"), ("0.333333", r"\frac{1}{3}"), ("", "0"), ("10^{400}", "1"),
]


@pytest.fixture(params=["math-verify", "fallback"])
def mv(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(answers, "_MV", False)  # as if math-verify were not installed
        return True  # asked for, but absent: the fallback path answers
    if not answers.math_verify_available():
        pytest.fail("math-verify is a core dependency of postlab: `pip install -e .` installs it")
    return True


@pytest.mark.parametrize("pred,gold", SAME)
def test_the_same_answer_in_another_notation_is_right(pred, gold, mv):
    assert answers.answers_match(pred, gold, use_math_verify=mv)
    assert answers.answers_match(gold, pred, use_math_verify=mv)


@pytest.mark.parametrize("pred,gold", DIFFERENT)
def test_a_different_answer_stays_wrong(pred, gold, mv):
    assert not answers.answers_match(pred, gold, use_math_verify=mv)
    assert not answers.answers_match(gold, pred, use_math_verify=mv)


def test_the_table_is_large_enough():
    assert len(SAME) >= 50 and len(DIFFERENT) >= 20


def test_math_verify_is_a_core_dependency():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert any(d.replace(" ", "").startswith("math-verify") for d in project["dependencies"])
