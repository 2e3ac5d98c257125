"""Environments with ID/OOD splits. Importing this package registers every environment.

    from postlab.envs import make, make_batch, sft_records, write_jsonl
    env = make("generalpoints", split="ood-rule", style="compact")

Registered: generalpoints, navigation, biographies, math, math-jsonl, unary-feedback
(the DRIFT multi-turn wrapper around any of the single-answer envs), and toy (a test task). See docs/envs.md.
"""

from postlab.envs.base import ENV_REGISTRY, Env, Observation, StepResult, make, register_env
from postlab.envs import biographies, generalpoints, math, multiturn, navigation, toy  # noqa: F401,E402 - registration
from postlab.envs.export import (corpus_records, expert_dialogue, export, make_batch, sft_records,  # noqa: E402
                                 write_jsonl)

__all__ = ["ENV_REGISTRY", "Env", "Observation", "StepResult", "make", "register_env", "make_batch",
           "expert_dialogue", "sft_records", "corpus_records", "write_jsonl", "export"]
