"""The trainers, registered once: name -> (module, config class, entry function).

`postlab train NAME` and the study stage kinds read this registry; nothing else lists the
trainers. The entries name their module rather than import it, so `postlab --help` and a study
plan do not import torch-heavy trainer code (and a build without a trainer's optional
dependencies still lists the others).

Adding a method (docs/architecture.md): write `postlab/trainers/NAME.py` with a config
dataclass, `setup_NAME(cfg, session, ...) -> Trainer` (set-up from `trainers.setup`, a step
function ending in `common.update_step`) and `train_NAME(cfg, resume=None) -> Path`, then add
one `register_trainer` line below. A study stage kind for it is one `register_stage_kind` in a
`postlab/studies/stages_*.py`; `postlab/studies/kinds.py` refuses to load while a registered
trainer has none.
"""

from __future__ import annotations

import dataclasses
import importlib

from postlab.naming import Registry


@dataclasses.dataclass(frozen=True)
class TrainerEntry:
    name: str
    module: str  # import path of the trainer's module
    config: str  # its config dataclass (the YAML's schema)
    train: str  # its entry function: train(cfg, resume=None, ...) -> RUN/final
    doc: str = ""

    def load(self):
        """(config class, entry function), importing the trainer's module."""
        module = importlib.import_module(self.module)
        return getattr(module, self.config), getattr(module, self.train)


TRAINERS: Registry = Registry("trainer")


def register_trainer(entry: TrainerEntry) -> TrainerEntry:
    """Add a trainer; a second trainer with a taken name is refused."""
    return TRAINERS.add(entry.name, entry)


register_trainer(TrainerEntry("sft", "postlab.trainers.sft", "SFTConfig", "train_sft",
                              "SFT and its variants (DFT, SFT+KL, ASFT, ProFit, weighted SFT)"))
register_trainer(TrainerEntry("rl", "postlab.trainers.rl", "RLConfig", "train_rl",
                              "RL on an environment (GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++, GSPO, PPO)"))
register_trainer(TrainerEntry("rasft", "postlab.trainers.rasft", "RASFTConfig", "train_rasft",
                              "rollout-adaptive SFT (Miao et al.)"))
register_trainer(TrainerEntry("rft", "postlab.trainers.rft", "RFTConfig", "train_rft",
                              "rejection-sampling fine-tuning on verified answers"))
register_trainer(TrainerEntry("drift", "postlab.trainers.drift", "DRIFTConfig", "train_drift",
                              "DRIFT: importance-weighted SFT on offline multi-turn rollouts (Mu et al.)"))
