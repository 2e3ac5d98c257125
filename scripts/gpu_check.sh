#!/usr/bin/env bash
# GPU check (never run in CI): a few SFT and GRPO steps on a random-init model of Qwen2-0.5B's
# shape, offline, with steps/s, tokens/s and peak GPU memory next to TRL's GRPOTrainer (when trl
# is installed) and with vLLM rollouts (when vLLM is installed). Options: benchmarks/gpu_check.py --help.
# The comparisons of benchmarks/rl_step.py, on the GPU: at 16, 128 and 512 completion tokens, the
# GRPO step vs TRL's, the engine vs model.generate, and the RL update's tokens/s vs SFT's; every
# line names the card that printed it (override with --lengths N,M).
#
#   scripts/gpu_check.sh                       # defaults: 5 SFT steps, 4 GRPO steps, bf16 autocast
#   scripts/gpu_check.sh --lora 16 --gradient-checkpointing --out runs/gpu_check
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
# No network: everything is built locally; keep Hugging Face libraries from trying the hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" benchmarks/gpu_check.py --lengths 16,128,512 "$@"
