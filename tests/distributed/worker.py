"""`python worker.py [--frozen-rollouts MODEL_DIR] [--die-at-step N] :: postlab CLI args`, alone or under torchrun.

--frozen-rollouts MODEL_DIR: episodes are sampled from the frozen model MODEL_DIR, every prompt group
    on its own with a seed of its env seed, so a step's episodes depend neither on how groups are
    split over ranks (the production sampler seeds a rank's whole batch at once) nor on the last
    update's float rounding (which one discrete sample can amplify); the equality tests then
    compare the updates themselves, over several steps.
--parity-verifier: (with --frozen-rollouts) an RFT run's answers count as verified-correct when the sum
    of their token ids is even, and as finished: a random model then has kept answers in every step,
    on both ranks, and the test compares RFT's data-parallel update, not a verifier.
--die-at-step N: rank 1 (or the only process) SIGKILLs itself when step N starts (0-based index N-1
    done), mid-run, after the checkpoints written so far.
"""

import dataclasses
import os
import signal
import sys

args = sys.argv[1:]
split = args.index("::")
opts, cli = args[:split], args[split + 1:]

if "--frozen-rollouts" in opts:
    from postlab.models.io import load_model
    from postlab.rollout import episodes as episodes_mod
    from postlab.trainers import rl_rollouts

    frozen = load_model(opts[opts.index("--frozen-rollouts") + 1]).eval()

    def per_group(model, tokenizer, envs, seeds, params, **kw):
        model = frozen
        out, j = [], 0
        while j < len(seeds):
            k = j
            while k < len(seeds) and seeds[k] == seeds[j]:
                k += 1
            hints = kw.get("hints")
            out += episodes_mod.run_episodes(model, tokenizer, envs[j:k], seeds[j:k],
                                             dataclasses.replace(params, seed=seeds[j] % 1_000_003),
                                             **{**kw, "hints": hints[j:k] if hints else None})
            j = k
        return out

    rl_rollouts.run_episodes = per_group  # what the RL step's play_step samples with

    if "--parity-verifier" in opts:
        from postlab.trainers import rft

        def parity(*a, **kw):
            eps = per_group(*a, **kw)
            for e in eps:
                e.success = e.turns[-1].success = sum(e.turns[-1].token_ids) % 2 == 0
                e.turns[-1].finish_reason = "stop"
            return eps

        rft.run_episodes = parity

if "--die-at-step" in opts:
    die_at = int(opts[opts.index("--die-at-step") + 1])
    from postlab.trainers import loop

    orig_run_loop = loop.run_loop

    def run_loop(trainer, cfg, session):
        step = trainer.step

        def dying(i):
            if i + 1 == die_at and int(os.environ.get("RANK", "0")) == min(1, int(os.environ.get("WORLD_SIZE", "1")) - 1):
                os.kill(os.getpid(), signal.SIGKILL)
            return step(i)

        trainer.step = dying
        return orig_run_loop(trainer, cfg, session)

    loop.run_loop = run_loop
    from postlab.trainers import rl, sft
    rl.run_loop = sft.run_loop = run_loop

from postlab.cli.main import main  # noqa: E402

sys.exit(main(cli))
