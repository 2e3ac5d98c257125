"""RASFT's rollout groups: filtering (near-duplicates, degenerate samples, answers the verifier or
the expert's answer rejects) and group weights (the expert sample's A and each correct rollout's
weight, or a fallback to expert-only). Steps 4 and 5 of `postlab.trainers.rasft_routing`'s
outline; pure functions of strings and counts, so a trainer step can call them and tests can
check them by hand. Randomness: none.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

from postlab.trainers.rasft_routing import RASFTRoutingConfig
from postlab.verifiers.answers import MARKER, answers_match, extract_answer


# ----------------------------------------------------------------------------- rollout filtering

def word_trigrams(text: str) -> set[tuple[str, ...]]:
    """Set of lower-cased whitespace-word trigrams; a text of 1-2 words is its own single 'trigram'
    (so short answers still compare), an empty text has none."""
    words = text.lower().split()
    if len(words) < 3:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def dedupe(answers: Sequence[str], threshold: float = 0.82) -> list[int]:
    """Indices of the answers kept: each answer is dropped if its word-trigram Jaccard with an
    already kept one is >= threshold, so the first of a group of near-duplicates survives."""
    kept: list[int] = []
    grams: list[set] = []
    for i, text in enumerate(answers):
        g = word_trigrams(text)
        if all(jaccard(g, other) < threshold for other in grams):
            kept.append(i)
            grams.append(g)
    return kept


# markers the answer extractor understands, as they stand right before the answer
_ANSWER_LEADS = (MARKER, "<answer>", "\\boxed{", "\\fbox{", "\\boxed", "####")


def reasoning_words(text: str, answer: str | None) -> int:
    """Whitespace-separated words before the final answer, not counting its marker.

    The answer's position is its last occurrence in the text; a marker right before it
    ("So, the answer is:", "<answer>", "\\boxed{", "####") is cut off. Compact math
    "12+5=17 17*3=51 #### 51" has 2 reasoning words; "#### 51" has 0.
    """
    cut = text.rfind(answer) if answer else -1
    head = (text[:cut] if cut >= 0 else text).rstrip()
    for lead in _ANSWER_LEADS:
        if head.endswith(lead):
            head = head[:-len(lead)]
            break
    return len(head.split())


def _has_loop(words: list[str], min_repeats: int, min_words: int, max_period: int) -> bool:
    """Some block of n <= max_period words repeated back to back >= min_repeats times over >= min_words words."""
    for n in range(1, min(max_period, len(words) // min_repeats) + 1):
        need = max(n * min_repeats, min_words)
        run = 0  # consecutive positions i with words[i] == words[i + n]: words[s : s + run + n] has period n
        for i in range(len(words) - n):
            run = run + 1 if words[i] == words[i + n] else 0
            if run + n >= need:
                return True
    return False


def degenerate_reason(text: str, expert_text: str | None = None, cfg: RASFTRoutingConfig | None = None,
                      extract: Callable[[str], str | None] = extract_answer) -> str | None:
    """Why a rollout is degenerate, or None. Checked in this order:

    - "empty": nothing but whitespace;
    - "no_answer": `extract` finds no final answer, or an empty one;
    - "loop": a block of n <= 64 whitespace words repeated back to back at least 4 times,
      spanning at least 16 words ("7 7 7 ..." x16, or a 10-word sentence x4); word level only,
      so a loop inside one unbroken token run is not seen;
    - "shortcut": the expert shows reasoning (>= 1 reasoning word, `reasoning_words`) and the
      rollout has fewer than 25% as many (a bare "#### 44" against a worked solution).
    """
    cfg = cfg or RASFTRoutingConfig()
    if not text.strip():
        return "empty"
    answer = extract(text)
    if not answer:
        return "no_answer"
    if _has_loop(text.split(), cfg.loop_min_repeats, cfg.loop_min_words, cfg.loop_max_period):
        return "loop"
    if expert_text is not None:
        expert_words = reasoning_words(expert_text, extract(expert_text))
        if expert_words > 0 and reasoning_words(text, answer) < cfg.shortcut_fraction * expert_words:
            return "shortcut"
    return None


def matches_expert_answer(text: str, expert_text: str, use_math_verify: bool = False) -> bool:
    """The rollout's final answer equals the expert's: exact, then numeric, then (optionally)
    symbolic (`verifiers.answers.answers_match`)."""
    gold = extract_answer(expert_text)
    return gold is not None and answers_match(extract_answer(text), gold, use_math_verify)


@dataclasses.dataclass
class RolloutGroup:
    """One problem's rollouts after filtering (indices into the samples)."""

    kept: list[int]  # after trigram dedupe: K = len(kept)
    correct: list[int]  # kept, not degenerate, answer correct: k = len(correct); trained on
    negatives: list[int]  # the other kept samples (wrong or degenerate), at most max_negatives: statistics only
    dropped: dict[int, str]  # index -> "duplicate" or the degenerate reason

    @property
    def K(self) -> int:  # noqa: N802 - the paper's name
        return len(self.kept)

    @property
    def k(self) -> int:
        return len(self.correct)


def filter_group(samples: Sequence[str], expert_text: str, cfg: RASFTRoutingConfig | None = None,
                 is_correct: Callable[[str], bool] | None = None,
                 extract: Callable[[str], str | None] = extract_answer) -> RolloutGroup:
    """Dedupe, then check each kept sample: degenerate ones and wrong ones are negatives.

    K counts samples after trigram dedupe (degenerate ones included, as reward-0 samples);
    k counts correct samples that also pass the quality filters (methods.md section 3).
    `is_correct` defaults to `matches_expert_answer` against `expert_text`.
    """
    cfg = cfg or RASFTRoutingConfig()
    is_correct = is_correct or (lambda text: matches_expert_answer(text, expert_text))
    kept = dedupe(samples, cfg.dedupe_jaccard)
    kept_set = set(kept)
    dropped = {i: "duplicate" for i in range(len(samples)) if i not in kept_set}
    correct, wrong = [], []
    for i in kept:
        reason = degenerate_reason(samples[i], expert_text, cfg, extract)
        if reason is not None:
            dropped[i] = reason
            wrong.append(i)
        elif is_correct(samples[i]):
            correct.append(i)
        else:
            wrong.append(i)
    return RolloutGroup(kept=kept, correct=correct, negatives=wrong[:cfg.max_negatives], dropped=dropped)


# ----------------------------------------------------------------------------- group weights

class GroupWeights(NamedTuple):
    expert: float  # A of the expert response
    correct_rollout: float | None  # weight of each correct rollout; None on a fallback
    fallback: str | None  # None, or why the group fell back to expert-only with A = 1


def group_weights(k: int, K: int, cfg: RASFTRoutingConfig | None = None) -> GroupWeights:  # noqa: N803
    """Expert and correct-rollout weights of one problem's group.

    The reading that reproduces the spec's worked example (K=3, k=1 -> 0.278 and 0.0087):
    the group is the expert PLUS the kept rollouts, negatives included (capped at
    max_negatives), with rewards

        d_hat = 1 - k/K,  r_E = 1 + 2 d_hat,  rewards = [r_E] + [1] * k + [0] * min(K - k, 3)

    z = (r - mean) / (population std + 1e-6) over those 1 + k + negatives values;
    A = tanh(0.4 z); scale = 1/(1 + k); expert weight = A_E * scale; each correct rollout
    weight = 0.25 * clip(A_pos * scale, 0.02, 0.15), so in [0.005, 0.0375]. Worked example:
    rewards [7/3, 1, 0, 0], mean 5/6, std 0.9574, z_E 1.5667, A_E 0.5557 -> 0.2779;
    z_pos 0.1741, A_pos 0.0695 -> 0.25 * 0.0348 = 0.00869. Other readings miss it: without
    the expert in the group A_pos * scale = 0.256, clipped to a rollout weight of 0.0375; with
    the sample std (n - 1) the expert weight is 0.248; without the negatives, 0.190.

    Fallbacks to expert-only with A = 1, checked in this order: "all_filtered" (K = 0),
    "no_correct" (k = 0), "zero_variance" (every reward equal: k = K gives r_E = 1).
    """
    cfg = cfg or RASFTRoutingConfig()
    if not 0 <= k <= K:
        raise ValueError(f"group_weights: need 0 <= k <= K, got k={k}, K={K}")
    if K == 0:
        return GroupWeights(1.0, None, "all_filtered")
    if k == 0:
        return GroupWeights(1.0, None, "no_correct")
    r_expert = 1.0 + 2.0 * (1.0 - k / K)
    rewards = [r_expert] + [1.0] * k + [0.0] * min(K - k, cfg.max_negatives)
    if max(rewards) == min(rewards):
        return GroupWeights(1.0, None, "zero_variance")
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))  # population std

    def advantage(r: float) -> float:
        return math.tanh(cfg.advantage_tanh * (r - mean) / (std + cfg.reward_std_eps))

    scale = 1.0 / (1 + k)
    lo, hi = cfg.rollout_weight_clip
    correct = cfg.rollout_weight_scale * min(max(advantage(1.0) * scale, lo), hi)
    return GroupWeights(advantage(r_expert) * scale, correct, None)
