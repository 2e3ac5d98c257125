"""RL algorithms declared once: what makes GRPO GRPO, in one registry.

An `AlgorithmSpec` names everything the RL trainer needs to know about an algorithm:
its loss (a registered objective), its advantage estimator (a pure function of the batch's
rewards and the group size; None for a critic), whether it needs groups of samples per
prompt, whether it keeps a value head, whether it drops all-same-reward groups (dynamic
sampling), and its default loss aggregation. The trainer reads the spec; it never branches
on an algorithm's name. As with objectives, registering a name twice is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import torch

from postlab.naming import Registry
from postlab.objectives import advantages as adv


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    objective: str  # a registered objective
    # rewards [N] (G consecutive samples per prompt), G -> advantages [N]; None: a critic (GAE over turns)
    advantages: Callable[[torch.Tensor, int], torch.Tensor] | None
    needs_groups: bool  # G >= 2 samples per prompt (group baselines)
    value_head: bool = False
    dynamic_sampling: bool = False  # default of RLConfig.dynamic_sampling
    # expert traces per group (default of RLConfig.expert_traces); > 0 only for an objective that trains
    # the off-policy tokens as such (LossInputs.off_policy)
    expert_traces: int = 0
    # an expert batch beside the groups (CHORD: RLConfig.chord.expert_ratio), trained by the objective's
    # off-policy (SFT) term with the step's `mu` and `off_policy_share`
    expert_batch: bool = False
    hints: bool = False  # UFT: a prefix of the expert's solution in the prompt (RLConfig.uft), trained by CE
    needs_teacher: bool = False  # reads a teacher (RLConfig.teacher): its log-probs of the sampled tokens
    # ... or its full-vocabulary logits at every trained position (GKD), computed per micro-batch
    teacher_logits: bool = False
    entropy_coef: float = 0.0  # the published run's entropy bonus (default of RLConfig.entropy_coef)
    paper: str = ""

    @property
    def learns_beyond_reward(self) -> bool:
        """Learns from something besides its own samples' rewards (expert traces, an expert batch, hints, a
        teacher): a batch where no sample succeeds still carries signal, so a study's pass@G gate (an
        rl-probe's `skip`) does not apply to it."""
        return self.expert_traces > 0 or self.expert_batch or self.hints or self.needs_teacher

    @property
    def default_aggregation(self) -> str:
        from postlab.objectives.registry import get_objective

        return get_objective(self.objective).default_aggregation


ALGORITHMS: Registry = Registry("RL algorithm")


def register_algorithm(spec: AlgorithmSpec) -> AlgorithmSpec:
    return ALGORITHMS.add(spec.name, spec)


def get_algorithm(name: str) -> AlgorithmSpec:
    return ALGORITHMS.lookup(name)


def _batch_normalized(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    return adv.reinforce_pp_advantages(rewards)


register_algorithm(AlgorithmSpec("grpo", "grpo", partial(adv.grpo_advantages, std=True), needs_groups=True,
                                 paper="Shao et al. 2024 (DeepSeekMath)"))
register_algorithm(AlgorithmSpec("dr_grpo", "dr_grpo", partial(adv.grpo_advantages, std=False), needs_groups=True,
                                 paper="Liu et al. 2025 (Dr. GRPO)"))
register_algorithm(AlgorithmSpec("dapo", "dapo", partial(adv.grpo_advantages, std=True), needs_groups=True,
                                 dynamic_sampling=True, paper="Yu et al. 2025 (DAPO)"))
register_algorithm(AlgorithmSpec("gspo", "gspo", partial(adv.grpo_advantages, std=True), needs_groups=True,
                                 paper="Zheng et al. 2025 (GSPO)"))
register_algorithm(AlgorithmSpec("rloo", "rloo", adv.rloo_advantages, needs_groups=True,
                                 paper="Ahmadian et al. 2024 (RLOO)"))
register_algorithm(AlgorithmSpec("reinforce_pp", "reinforce_pp", _batch_normalized, needs_groups=False,
                                 paper="Hu 2025 (REINFORCE++)"))
# LUFFY: 1 expert trace + G-1 samples per group, advantages r - mean over the mixed group (the published
# run: grpo_use_std=False), expert tokens shaped by f(p) = p/(p+0.1) (objectives.spectrum.luffy), - 0.001 x the
# mean entropy of every response token (expert traces included)
register_algorithm(AlgorithmSpec("luffy", "luffy", partial(adv.grpo_advantages, std=False), needs_groups=True,
                                 expert_traces=1, entropy_coef=0.001, paper="Yan et al. 2025 (LUFFY)"))
# CHORD: GRPO on the policy's groups + mu x SFT on an expert batch (20% of the samples), mu on a schedule
register_algorithm(AlgorithmSpec("chord", "chord", partial(adv.grpo_advantages, std=True), needs_groups=True,
                                 expert_batch=True, paper="Zhang et al. 2025 (CHORD)"))


# UFT: GRPO on the continuation of a hint whose length anneals to 0, + 0.001 x the hint's CE, - 0.001 x the
# continuation's entropy
register_algorithm(AlgorithmSpec("uft", "uft", partial(adv.grpo_advantages, std=True), needs_groups=True, hints=True,
                                 entropy_coef=0.001, paper="Liu et al. 2025 (UFT)"))


def _no_reward_signal(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    return torch.zeros_like(torch.as_tensor(rewards, dtype=torch.float32))


# On-policy distillation: the teacher's per-token reverse KL is the whole signal (the env's reward is
# logged, not trained: A_env = 0), objectives.spectrum.opd
register_algorithm(AlgorithmSpec("opd", "opd", _no_reward_signal, needs_groups=False, needs_teacher=True,
                                 paper="Agarwal et al. 2024 (GKD); Thinking Machines 2025 (reverse-KL form)"))
# GKD on-policy (lambda = 1: every batch the student's own samples): the generalized JSD to the teacher over
# the full vocabulary at every sampled position, differentiated through the student (objectives.spectrum.gkd)
register_algorithm(AlgorithmSpec("gkd", "gkd", _no_reward_signal, needs_groups=False, needs_teacher=True,
                                 teacher_logits=True, paper="Agarwal et al. 2024 (GKD), on-policy (lambda = 1)"))
register_algorithm(AlgorithmSpec("ppo", "ppo", None, needs_groups=False, value_head=True,
                                 paper="Schulman et al. 2017; Chu et al. 2025's turn-level GAE"))
