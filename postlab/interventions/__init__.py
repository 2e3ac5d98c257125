"""Interventions on post-trained models: Rejuvenation (base-anchored fusion + targeted unit reset)
and the plasticity diagnostics that show why it is needed. See docs/interventions.md.

    from postlab.interventions import diagnose, rejuvenate
    result = diagnose("runs/sft/final", "runs/base/final", "math", ["id", "ood"], n=32, out="runs/diag")
    report = rejuvenate("runs/base/final", "runs/sft/final", "runs/rejuv", env="math", alpha=0.5)
"""

from postlab.interventions.common import InterventionError
from postlab.interventions.diagnostics import (DORMANT_TAU, diagnose, diagnostics_table, effective_rank, parameter_drift,
                                               perturbation_sharpness, top_hessian_eigenvalue)
from postlab.interventions.fusion import check_compatible, fuse
from postlab.interventions.rejuvenation import RejuvenationConfig, rejuvenate, rejuvenate_models
from postlab.interventions.reset import anchor_units, redo_reset
from postlab.interventions.scoring import Unit, dormancy_scores, score_units, select_units

__all__ = ["DORMANT_TAU", "InterventionError", "RejuvenationConfig", "Unit", "anchor_units", "check_compatible",
           "diagnose", "diagnostics_table", "dormancy_scores", "effective_rank", "fuse", "parameter_drift",
           "perturbation_sharpness", "redo_reset", "rejuvenate", "rejuvenate_models", "score_units", "select_units",
           "top_hessian_eigenvalue"]
