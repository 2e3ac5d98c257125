"""Objectives: pure per-token loss functions in a registry, plus `aggregate`.

Importing this package registers every objective.
"""

from postlab.objectives import sft  # noqa: F401  (registers)
from postlab.objectives.registry import (AGGREGATION_MODES, OBJECTIVES, LossInputs, Normalizer, Objective, aggregate,
                                         get_objective, per_sequence_mean, register_objective)

from postlab.objectives import rl  # noqa: F401,E402  (registers the RL objectives)
from postlab.objectives import rasft  # noqa: F401,E402  (registers RASFT's objective)
from postlab.objectives import spectrum  # noqa: F401,E402  (registers LUFFY, CHORD, UFT, GKD, OPD)

__all__ = ["AGGREGATION_MODES", "OBJECTIVES", "LossInputs", "Normalizer", "Objective", "aggregate", "get_objective",
           "per_sequence_mean", "register_objective"]
