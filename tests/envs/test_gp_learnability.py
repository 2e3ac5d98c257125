"""Lab-scale learnability: a tiny model trained from scratch by SFT on GeneralPoints compact ID
data, on a CPU, in a short budget, solves clearly more hands than chance.

"Chance" is measured, not assumed: a policy that writes the four card values in a random order
with random operators (no brackets), i.e. a model that learned the answer format and nothing
else. The trained model must beat it by a wide margin on the same held-out hands.
"""

import random

from postlab.config import load_config
from postlab.envs import make
from postlab.models import load_model, load_tokenizer
from postlab.eval.evaluate import evaluate
from postlab.seeds import eval_seed
from postlab.studies.stage_common import expert_records
from postlab.trainers.sft import SFTConfig, train_sft

N_EVAL = 200


def _format_only_success(n: int) -> float:
    rng = random.Random(0)
    env = make("generalpoints", split="id", style="compact", max_turns=1)
    wins = 0
    for i in range(n):
        env.reset(eval_seed(i))
        values = list(env.values)
        rng.shuffle(values)
        formula = str(values[0]) + "".join(rng.choice("+-*/") + str(v) for v in values[1:])
        wins += env.step(f"{formula}=24").success
    return wins / n


def test_tiny_model_learns_generalpoints_by_sft(tmp_path):
    spec = {"env": "generalpoints", "style": "compact", "env_args": {"expert_choice": "canonical"}}
    records = expert_records(spec, "id", 6000, seed=0)
    cfg = load_config(SFTConfig, overrides=[
        "model.preset=micro", f"run.out_dir={tmp_path / 'run'}", "run.max_steps=500", "run.tensorboard=false",
        "run.progress=false", "optim.lr=2e-3", "optim.warmup_ratio=0.05", "batch.sequences_per_step=32",
        "batch.micro_batch_sequences=32"])
    final = train_sft(cfg, records)

    model, tok = load_model(str(final)), load_tokenizer(str(final))
    result = evaluate(model, tok, "generalpoints", "id", n_episodes=N_EVAL, max_turns=1, max_new_tokens=24)
    chance = _format_only_success(N_EVAL)
    print(f"GeneralPoints ID one-attempt greedy success: {result['success_rate']:.3f} (format-only chance {chance:.3f})")
    # measured: 0.415 vs chance 0.010 (500 steps, ~50 s on 2 cores)
    assert result["success_rate"] >= max(0.20, 4 * chance)
