"""Fuzzing every verifier with random and hostile strings (about 80,000 distinct strings, 330,000
verifier calls, plus hypothesis examples).

Properties: no exception escapes, every call is fast (max per-call time is measured and
bounded), nothing is executed (eval/exec are watched, and a payload that would create a
file does not). Hypothesis explores structure; plain seeded loops give the volume cheaply.
"""

import builtins
import os
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postlab.envs import make
from postlab.envs.multiturn import parse_answer_tag
from postlab.verifiers import answers
from postlab.verifiers.arith import ArithError, parse
from postlab.verifiers.generalpoints import score_response
from postlab.verifiers.navigation import parse_action, score_action

MAX_CALL_SECONDS = 0.05  # "a few milliseconds" typically; generous against CI hiccups
PWNED = "/tmp/postlab_fuzz_pwned"
PAYLOADS = [f"__import__('os').system('touch {PWNED}')", f"exec(\"open('{PWNED}','w')\")", "eval('1+1')",
            "().__class__.__bases__[0].__subclasses__()", "lambda: 1", "import os; os.system('ls')"]
HOSTILE = PAYLOADS + [
    "9**9**9", "9^9^9", "9" * 10_000, "1e999999", "10**1000000", "1000000!", "(" * 10_000 + "1" + ")" * 10_000,
    "(" * 10_000, ")" * 10_000, "1+" * 50_000 + "1", "8" * 1_000_000, "(" * 1_000_000, "<answer>" * 125_000,
    "\\boxed{" * 140_000, "{" * 1_000_000, "[" * 100_000, '{"formula": "' + "(" * 5000 + '"}', '{"formula": ' * 3000,
    "So, the answer is:" * 20_000, "#### " * 100_000, "\\frac{" * 5000, "9^{9^{9^{9}}}", "10^{1000000}",
    "\\sum_{i=1}^{10^{9}} i", "\\int_0^1 x^{x^{x}} dx", "<answer>9^{9^{9}}</answer>", "\\boxed{9^{9^{9}}}",
    "\x00\x01\x02\x1b[31m\x7f", "\u202e8*3\u202c", "８*３", "٣*٨", "²³", "🂡🂱🃁", "e\u0301" * 1000, "\ud7ff\ue000",
    "turn_direction(" * 10_000, '{"action": "' + "a" * 100_000 + '"}', "forward()" * 100_000, "", " ", "\n" * 10_000,
]
ALPHABET = list("0123456789+-*/()= \t\n{}[]\"':,.xyzJQK♠♥♦♣^!\\%$#<>_") + ["\x00", "\x1b", "é", "٣", "８", "🂡"]
PIECES = ["formula", '"formula": "', "<answer>", "</answer>", "\\boxed{", "\\frac{", "So, the answer is:", "####",
          "turn_direction(", "forward()", "stop()", "current observation", "intersection", "north", "slightly left",
          "8/(3-8/3)", "24", "9**9", "(((", ")))", "{", "}"]


def random_strings(n: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        k = rng.choice((0, 1, 3, 8, 20, 60, 200)) if i % 500 else rng.choice((5_000, 20_000))
        parts, size = [], 0
        while size < k:
            parts.append(rng.choice(PIECES) if rng.random() < 0.25 else rng.choice(ALPHABET) * rng.choice((1, 1, 1, 3)))
            size += len(parts[-1])
        yield "".join(parts)


@pytest.fixture
def watch_exec(monkeypatch):
    """Count eval/exec calls while verifiers run (a verifier that evals model text would show)."""
    calls = []
    real_eval, real_exec = builtins.eval, builtins.exec

    def spy(real):
        def f(*a, **k):
            if a and isinstance(a[0], str):  # source text; imports exec compiled code objects
                calls.append(a[0][:80])
            return real(*a, **k)
        return f

    monkeypatch.setattr(builtins, "eval", spy(real_eval))
    monkeypatch.setattr(builtins, "exec", spy(real_exec))
    if os.path.exists(PWNED):
        os.remove(PWNED)
    yield calls
    assert not os.path.exists(PWNED)


def assert_never_executed(calls: list[str], texts) -> None:
    """No eval/exec received model text. Libraries may exec their own templates at import
    (mpmath does), so a recorded call fails the test only if it contains a fuzz input."""
    if calls:
        texts = [t for t in texts if len(t) >= 4]
        for src in calls:
            assert not any(t in src for t in texts), f"model text reached eval/exec: {src!r}"


class Timer:
    def __init__(self):
        self.max, self.calls, self.worst = 0.0, 0, None

    def __call__(self, fn, text):
        t = time.perf_counter()
        fn(text)
        dt = time.perf_counter() - t
        self.calls += 1
        if dt > self.max:
            self.max, self.worst = dt, text[:80]


def _arith(text):
    try:
        parse(text)
    except ArithError:
        pass


HAND = [3, 3, 8, 8]
VERIFIERS = {
    "arith": _arith,
    "generalpoints": lambda t: score_response(t, HAND),
    "navigation": lambda t: (score_action(t, ("turn", "east"), True), parse_action(t)),
    "answers": lambda t: (answers.check_response(t, "42"), answers.exact_match(t, "Jonas Barnes")),
    "answer-tag": parse_answer_tag,
}


def test_fuzz_volume_hostile_and_random(watch_exec):
    timers = {name: Timer() for name in VERIFIERS}
    for text in HOSTILE:
        for name, fn in VERIFIERS.items():
            timers[name](fn, text)
    texts = list(random_strings(60_000, seed=0))
    for text in texts:
        for name, fn in VERIFIERS.items():
            timers[name](fn, text)
    assert len(texts) + len(HOSTILE) >= 60_000 and sum(t.calls for t in timers.values()) >= 300_000
    for name, t in timers.items():
        assert t.max < MAX_CALL_SECONDS, f"{name}: {t.max * 1000:.1f} ms on {t.worst!r}"
    assert_never_executed(watch_exec, HOSTILE + texts)


def test_fuzz_env_steps(watch_exec):
    """The same strings through each environment's step (verifier + episode bookkeeping)."""
    envs = [make("generalpoints", style="paper"), make("navigation", split="ood-rule", style="paper"),
            make("biographies", split="comp-iid"), make("math"), make("unary-feedback", env="math")]
    timer, texts = Timer(), list(HOSTILE) + list(random_strings(10_000, seed=1))
    for k, text in enumerate(texts):
        env = envs[k % len(envs)]
        env.reset(k)
        timer(env.step, text)
    assert timer.max < MAX_CALL_SECONDS, f"{timer.max * 1000:.1f} ms on {timer.worst!r}"
    assert_never_executed(watch_exec, texts)


_settings = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
_text = st.one_of(st.text(max_size=300), st.text(alphabet=ALPHABET, max_size=300),
                  st.lists(st.sampled_from(PIECES + ALPHABET), max_size=60).map("".join))


@_settings
@given(_text)
def test_hypothesis_verifiers(text):
    for name, fn in VERIFIERS.items():
        # Best of 3 timings: a GC pause or a descheduled core must not fail the test, a
        # genuinely slow input (slow on every try) still does.
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn(text)
            best = min(best, time.perf_counter() - t)
            if best < MAX_CALL_SECONDS:
                break
        assert best < MAX_CALL_SECONDS, (name, text[:80], best)


@_settings
@given(st.text(alphabet="0123456789+-*/() ", max_size=120))
def test_hypothesis_arith_agrees_with_a_reference_evaluator(text):
    """On well-formed formulas the parser's exact value matches Python's own Fraction arithmetic."""
    import re
    from fractions import Fraction

    try:
        got = parse(text)
    except ArithError:
        return
    if got.value is None:
        return
    expr = re.sub(r"(\d+)", r"Fraction(\1)", text.replace(" ", ""))  # test-side reference only (trusted input)
    if len(expr) > 2000 or "**" in expr or "//" in expr:
        return
    try:
        ref = builtins.eval(expr, {"Fraction": Fraction, "__builtins__": {}})  # noqa: S307 - alphabet is digits/ops
    except (ZeroDivisionError, SyntaxError):
        return
    assert ref == got.value


def test_fuzz_math_verify_path(watch_exec):
    """The optional math-verify path: screened inputs only, bounded by its own timeouts."""
    if not answers.math_verify_available():
        pytest.skip("math-verify not installed")
    answers.answers_match("\\sqrt{4}", "2", use_math_verify=True)  # warm-up: sympy imports take a second
    rng = random.Random(2)
    pieces = ["1", "2", "x", "+", "-", "*", "/", "^", "{", "}", "(", ")", "\\frac{", "\\sqrt{", "\\pi", ".", "9",
              "^{9}", "\\cdot", "\\left(", "\\right)", "0"]
    texts = HOSTILE + ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))) for _ in range(1500)]
    timer = Timer()
    for text in texts:
        timer(lambda t: answers.answers_match(t, "\\frac{1}{2}", use_math_verify=True), text)
    assert timer.max < 2.5, f"{timer.max:.2f} s on {timer.worst!r}"  # math-verify's own timeout is 1 s
    assert_never_executed(watch_exec, texts)
