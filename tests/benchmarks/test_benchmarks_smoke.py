"""Every benchmark script runs end to end at a tiny size (one step, a few tokens, no TRL).

Speed belongs to the benchmarks, never to a test: these only check that each script still
runs against the current library (a renamed function, a changed seed range or a new config
field fails here, in `make test`, instead of the next time someone measures). Each script
runs as its own subprocess, exactly as a user starts it, on one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
# a new script in benchmarks/ must get a smoke run here (test_every_benchmark_has_a_smoke_run)
SMOKED = {"rl_step.py", "rl_update.py", "sft_throughput.py", "multiturn_sampling.py", "gpu_check.py"}


def _command(name: str, tmp: Path) -> list[str]:
    """Each script at a tiny size, one thread, no TRL; results (when the script writes any) in tmp."""
    args = {
        # GRPO step + the SFT comparison + PPO multi-turn episodes, through the real trainers
        "rl_step.py": ["--threads", "1", "--prompts", "2", "--samples", "2", "--tokens", "3", "--steps", "1",
                       "--repeats", "1", "--micro", "4", "--skip-trl", "--sft", "--ppo-multiturn", "--turns", "2",
                       "--ppo-tokens", "3", "--ppo-updates", "1", "--json", str(tmp / "rl_step.json")],
        # every micro-batch layout of the RL update, log-probs checked against the padded one
        "rl_update.py": ["--threads", "1", "--prompts", "2", "--samples", "2", "--turns", "2", "--tokens", "4",
                         "--micro", "2", "--repeats", "1"],
        "sft_throughput.py": ["--threads", "1", "--steps", "1", "--warmup", "0", "--batch", "2", "--skip-trl",
                              "--peak-size", "64", "--json", str(tmp / "sft_throughput.json")],
        "multiturn_sampling.py": ["--threads", "1", "--episodes", "2", "--group", "2", "--attempts", "2",
                                  "--max-new-tokens", "3"],
        # scripts/gpu_check.sh's runs at --tiny size on the CPU
        "gpu_check.py": ["--allow-cpu", "--tiny", "--precision", "fp32", "--backends", "local", "--no-trl",
                         "--sft-steps", "1", "--rl-steps", "1", "--sequences", "2", "--micro", "2", "--prompts", "1",
                         "--samples", "2", "--max-new-tokens", "3", "--lengths", "3", "--out", str(tmp / "gpu_check")],
    }[name]
    return [sys.executable, str(BENCH / name), *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every script at once (each is mostly interpreter start-up and imports), then collect them."""
    tmp = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = {name: subprocess.Popen(_command(name, tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=ROOT, env=env) for name in sorted(SMOKED)}
    done = {}
    try:
        for name, p in procs.items():
            out, err = p.communicate(timeout=300)
            done[name] = (p.returncode, out, err)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    return tmp, done


def finished(runs, name: str) -> str:
    code, out, err = runs[1][name]
    assert code == 0, f"benchmarks/{name} failed (exit {code}):\n{out[-3000:]}\n{err[-6000:]}"
    return out


def test_every_benchmark_has_a_smoke_run():
    assert {p.name for p in BENCH.glob("*.py")} == SMOKED


def test_rl_step(runs):
    finished(runs, "rl_step.py")
    res = json.loads((runs[0] / "rl_step.json").read_text())
    row = res["lengths"]["3"]
    assert row["postlab"]["s_per_step"] > 0 and row["sft"]["tokens"] > 0 and row["generation"]["engine"] > 0
    assert res["ppo_multiturn"]["turns"] >= 1


def test_rl_update(runs):
    out = finished(runs, "rl_update.py")
    diffs = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "max |logp - padded|" in line]
    assert len(diffs) == 4 and max(diffs) < 1e-4  # every layout computes the padded layout's log-probs


def test_sft_throughput(runs):
    finished(runs, "sft_throughput.py")
    assert json.loads((runs[0] / "sft_throughput.json").read_text())["postlab"]["tokens"] > 0


def test_multiturn_sampling(runs):
    assert "identical episodes: True" in finished(runs, "multiturn_sampling.py")


def test_gpu_check_on_cpu(runs):
    finished(runs, "gpu_check.py")
    res = json.loads((runs[0] / "gpu_check" / "gpu_check.json").read_text())
    assert not any("error" in r for r in res["results"].values()), res["results"]
    assert res["results"]["generation (3 tokens): engine vs model.generate"]["ratio"] > 0
    assert res["results"]["postlab GRPO (local engine, 3 tokens)"]["update_tokens_per_s"] > 0
