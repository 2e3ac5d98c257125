"""Rollouts: batched KV-cache sampling (`generate`), multi-turn episodes (evaluation: postlab.eval.evaluate)."""

from postlab.rollout.engine import Completion, SamplingParams, generate, hf_generate
from postlab.rollout.episodes import Episode, Turn, play, run_episodes

__all__ = ["Completion", "Episode", "SamplingParams", "Turn", "generate", "hf_generate", "play", "run_episodes"]
