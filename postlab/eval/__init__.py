"""ID/OOD evaluation: success rates, pass@k, multi-turn success by turn, failure reasons, bootstrap CIs."""

from postlab.eval.evaluate import evaluate, evaluate_checkpoint, results_table
from postlab.eval.metrics import bootstrap_ci, mean_ci, pass_at_k

__all__ = ["bootstrap_ci", "evaluate", "evaluate_checkpoint", "mean_ci", "pass_at_k", "results_table"]
