"""Rollouts: batched KV-cache sampling (`generate`), multi-turn episodes and evaluation on an env."""

from postlab.rollout.engine import Completion, SamplingParams, generate, hf_generate
from postlab.rollout.episodes import Episode, Turn, evaluate, run_episodes

__all__ = ["Completion", "Episode", "SamplingParams", "Turn", "evaluate", "generate", "hf_generate", "run_episodes"]
