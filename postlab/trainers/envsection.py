"""The sections of the trainers that play an environment (RL, RFT, RASFT), in one place.

`SamplingConfig` is the `sampling:` section of RL and RFT (how rollouts sample, per model turn).
`EnvConfig` is the `env:` section: which environment and split to train on, how many model turns
an episode may take, and what the periodic evaluation plays. `validate_env` builds every env the
run will build before any model loads, so a bad name, split, style or env argument fails at once;
`evaluate_env` is the one periodic evaluation of splits (greedy, and sampled when asked) whose row
the loop logs.
"""

from __future__ import annotations

import dataclasses

from postlab.config import ConfigError
from postlab.envs.spec import EnvSpec
from postlab.rollout.engine import SamplingParams


@dataclasses.dataclass
class SamplingConfig:
    """How the trainer's rollouts sample, per model turn (the engine's `SamplingParams` without the seed,
    which the trainer derives per step: `postlab.seeds.sampling_seed`)."""

    max_new_tokens: int = 32  # per model turn
    temperature: float = 1.0  # Chu et al.'s PPO: 0.2
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k
    repetition_penalty: float = 1.0  # 1.0 = off; > 1 discourages tokens already in the prompt or output
    stop: tuple[str, ...] = ()  # stop strings (kept in the output, as EOS ends a turn)

    def __post_init__(self):
        try:
            self.params(0)
        except ValueError as e:
            raise ConfigError(f"sampling: {e}") from None

    def params(self, seed: int, n: int = 1) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, repetition_penalty=self.repetition_penalty, stop=tuple(self.stop),
                              n=n, seed=seed)


@dataclasses.dataclass
class EnvConfig(EnvSpec):
    """The `env:` section of a trainer: the environment it plays (`EnvSpec`'s keys) and the periodic
    evaluation of its splits."""

    # model turns an episode may take: 1 = single-turn; with verifier feedback (GeneralPoints'
    # "verification iterations", Chu et al. use 5) each failed answer earns another turn
    max_turns: int = 1
    # evaluated greedily every run.eval_every steps and at the end; [] = no periodic evaluation
    eval_splits: tuple[str, ...] = ("id",)
    eval_episodes: int = 64
    # > 0: also eval_samples samples per problem at eval_temperature (mean success = pass@1, and
    # pass@eval_samples): greedy success cannot see RL sharpening a distribution it already ranks right
    eval_samples: int = 0
    eval_temperature: float = 1.0
    eval_max_new_tokens: int | None = None  # per model turn; None = the sampling section's max_new_tokens

    def __post_init__(self):
        if self.max_turns < 1:
            raise ConfigError(f"env.max_turns must be >= 1, got {self.max_turns}")
        try:
            super().__post_init__()
        except ConfigError as e:
            raise ConfigError(f"env.{e}") from None
        if self.eval_episodes < 1:
            raise ConfigError(f"env.eval_episodes must be >= 1, got {self.eval_episodes}")
        if self.eval_samples < 0 or not (self.eval_temperature > 0 and self.eval_temperature < float("inf")):
            raise ConfigError(f"env.eval_samples must be >= 0 (got {self.eval_samples}) and env.eval_temperature "
                              f"a finite number > 0 (got {self.eval_temperature})")
        if self.eval_max_new_tokens is not None and self.eval_max_new_tokens < 1:
            raise ConfigError(f"env.eval_max_new_tokens must be >= 1 (or unset), got {self.eval_max_new_tokens}")


def make_env(env_cfg: EnvSpec, split: str | None = None, key: str = "env"):
    """The environment of `env_cfg` on `split` (default: its training split); a bad name, split, style or
    kwargs is a ConfigError that starts with `key` (the config key to fix)."""
    return env_cfg.build(split, key=key)


def require_verifier(env, name: str, what: str) -> None:
    """`what` verifies answers with the environment: it needs check_answer(answer) and expert_answer()."""
    from postlab.envs.base import missing_single_answer_methods, single_answer_envs

    missing = missing_single_answer_methods(env)  # the protocol is postlab.envs.base.SingleAnswerEnv
    if missing:
        able = single_answer_envs()
        raise ConfigError(f"env.name={name!r}: the environment has no {' and no '.join(f'{m}()' for m in missing)}; "
                          f"{what} checks answers with the environment's verifier (check_answer) against its expert "
                          f"answer (expert_answer), so it needs an environment that has both: {', '.join(able)}")


def validate_env(env_cfg: EnvConfig, verifier_for: str | None = None) -> None:
    """Build the training env and every eval split's env once, before any model loads or any step runs:
    a bad env.name, env.split, env.eval_splits or env.kwargs fails here, not after training. With
    `verifier_for` (the method's name), the env must also verify single answers (RFT, RASFT)."""
    from postlab.envs.base import env_class

    try:  # a registered name or an import path ('mypkg.myenv:MyEnv')
        env_class(env_cfg.name)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"env.name: {e}") from None
    env = make_env(env_cfg, key="env.split")  # the name is good: what fails is the split, style or kwargs
    if verifier_for is not None:
        require_verifier(env, env_cfg.name, verifier_for)
    for split in env_cfg.eval_splits:
        make_env(env_cfg, split, key="env.eval_splits")


def evaluate_env(model, tok, env_cfg: EnvConfig, run, step: int, max_new_tokens: int | None = None) -> dict:
    """Success on each of `env_cfg.eval_splits` through the one evaluator (evaluation seed range):
    greedy (`eval_SPLIT_success`, `eval_SPLIT_reward`; multi-turn envs with attempts also
    `eval_SPLIT_multi@1`, `eval_SPLIT_multi@K`, `eval_SPLIT_correction_rate`), and with
    env.eval_samples also sampled (`eval_SPLIT_pass1`, `eval_SPLIT_passN`); logged as the step's eval
    row. Tokens per model turn: env.eval_max_new_tokens, else `max_new_tokens` (the trainer's sampling)."""
    from postlab.eval.evaluate import evaluate

    e = env_cfg
    tokens = e.eval_max_new_tokens or max_new_tokens
    if tokens is None:
        raise ConfigError("env.eval_max_new_tokens: this trainer has no sampling section to take it from; set it")
    out = {}
    was_training = model.training
    model.eval()
    for split in e.eval_splits:
        common = dict(n_episodes=e.eval_episodes, max_turns=e.max_turns, style=e.style, env_args=e.kwargs,
                      max_new_tokens=tokens)
        res = evaluate(model, tok, e.name, split, **common)
        out[f"eval_{split}_success"], out[f"eval_{split}_reward"] = res["success_rate"], res["mean_reward"]
        mt = res.get("multiturn")
        if mt:  # unary-feedback: success within the first attempt / all attempts, and self-correction
            out[f"eval_{split}_multi@1"] = mt["multi@1"]["mean"]
            out[f"eval_{split}_multi@{mt['k_max']}"] = mt[f"multi@{mt['k_max']}"]["mean"]
            out[f"eval_{split}_correction_rate"] = mt["correction_rate"]["mean"]
        if e.eval_samples:
            res = evaluate(model, tok, e.name, split, decoding="sampled", n_samples=e.eval_samples, k=e.eval_samples,
                           temperature=e.eval_temperature, **common)
            out[f"eval_{split}_pass1"] = res["success_rate"]
            out[f"eval_{split}_pass{e.eval_samples}"] = res["pass_at_k"]
    model.train(was_training)
    run.log(step, out, kind="eval")
    return out
