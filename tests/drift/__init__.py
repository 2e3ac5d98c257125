"""DRIFT: returns and weights, trajectory datasets, loss, offline rollouts, multi-turn metrics."""
