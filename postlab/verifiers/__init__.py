"""Exact, safe answer checking. Model text is parsed by small hand-written grammars and
regular expressions with bounded input; it is never passed to `eval` or `exec`.

- `arith`: exact rational arithmetic over + - * / ( ) and integers (GeneralPoints formulas);
- `generalpoints`: the 24-points rewards and reasons of Chu et al.;
- `navigation`: V-IRL-style action parsing and rewards;
- `answers`: final-answer extraction ("So, the answer is:", <answer>, \\boxed{}, ####) and
  matching (exact, numeric, optional math-verify).
"""

from postlab.verifiers.answers import answers_match, check_response, exact_match, extract_answer
from postlab.verifiers.arith import ArithError, evaluate, parse
from postlab.verifiers.generalpoints import GPVerdict, extract_formula, score_formula, score_response
from postlab.verifiers.navigation import NavVerdict, parse_action, score_action

__all__ = ["ArithError", "evaluate", "parse", "GPVerdict", "extract_formula", "score_formula", "score_response",
           "NavVerdict", "parse_action", "score_action", "answers_match", "check_response", "exact_match",
           "extract_answer"]
