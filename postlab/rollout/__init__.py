from postlab.rollout.engine import Completion, SamplingParams, generate

__all__ = ["Completion", "SamplingParams", "generate"]
