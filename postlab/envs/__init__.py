"""Environments with ID/OOD splits. Importing this package registers every environment."""

from postlab.envs.base import ENV_REGISTRY, Env, Observation, StepResult, make, register_env

__all__ = ["ENV_REGISTRY", "Env", "Observation", "StepResult", "make", "register_env"]
