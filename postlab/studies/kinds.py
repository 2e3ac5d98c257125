"""Every built-in study stage kind, registered: import this module for the full `STAGE_KINDS`.

A `StageKind` (postlab.studies.stage_common) pairs `run(ctx) -> result dict` with
`validate(ctx)`, which builds and checks everything the stage will use (trainer config,
environment and splits, `data:` and `eval:` keys) without training anything. The runner validates
every stage of a study before the first one runs, so a typo in a late stage fails in a second,
not forty minutes in.

A result holds ``checkpoint`` (relative to the stage directory; what downstream stages load),
``checkpoints`` (the saved points along training, with cumulative compute at each, used by
eval stages with ``points: all``) and ``compute`` (integer tokens trained/generated,
parameters). A custom kind (``kind: module:function``) follows the same contract.

Where each kind lives:

=====================  ===========================================================
stages_train           pretrain, sft, rl, rl-probe
stages_eval            eval
stages_verifier        rasft, rft
stages_interventions   diagnose, rejuvenate
stages_drift           rollout, drift
=====================  ===========================================================

A new kind goes into one of those modules (or a new one imported here) with
`register_stage_kind`.
"""

from __future__ import annotations

# Imported for their registrations (each module registers its kinds when it loads), in the order the
# kinds are listed to a user (`valid: pretrain, sft, ...`).
from postlab.studies import stages_train  # noqa: F401  (pretrain, sft, rl, rl-probe)
from postlab.studies import stages_eval  # noqa: F401, I001  (eval)
from postlab.studies import stages_verifier  # noqa: F401, I001  (rasft, rft)
from postlab.studies import stages_interventions  # noqa: F401, I001  (diagnose, rejuvenate)
from postlab.studies import stages_drift  # noqa: F401, I001  (rollout, drift)
from postlab.studies.stage_common import STAGE_KINDS
from postlab.trainers.registry import TRAINERS

__all__ = ["STAGE_KINDS"]

# Every trainer of the registry (postlab.trainers.registry) runs as the study stage kind of its name:
# a trainer registered without one fails here, when the studies load, not in the middle of a study.
_NO_STAGE_KIND = sorted(set(TRAINERS) - set(STAGE_KINDS))
if _NO_STAGE_KIND:
    raise RuntimeError(f"trainers with no study stage kind: {', '.join(_NO_STAGE_KIND)}; register one "
                       "(register_stage_kind) in a postlab/studies/stages_*.py module that postlab/studies/kinds.py "
                       "imports")
