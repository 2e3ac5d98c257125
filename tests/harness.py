"""What tests of every directory share: a tiny checkpoint on disk, the CLI in a subprocess, kill -9.

Imported as `harness` (pytest puts tests/ on sys.path: it has no __init__.py). Fixtures built on
these live in tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_checkpoint(out: Path, preset: str = "nano", seed: int = 0, chat_template: str | None = None,
                    extra_special: list[str] | None = None, eos: str | None = None) -> Path:
    """A random-init `preset` model + postlab's char tokenizer saved as a plain Hugging Face directory
    (a stand-in for a real checkpoint: model.path). `chat_template` replaces the tokenizer's
    template (None: postlab's; "" removes it, like a base checkpoint without one)."""
    from postlab.models import build_tokenizer, init_model, save_pretrained_atomic

    tok = build_tokenizer([], "char")
    if extra_special:
        tok.add_special_tokens({"additional_special_tokens": extra_special})
    if eos is not None:
        tok.eos_token = eos
    if chat_template is not None:
        tok.chat_template = chat_template or None
    model = init_model(preset, tok, seed=seed)
    save_pretrained_atomic(model, tok, out)
    return out


def rl_config(ckpt, out, *, env="toy", algorithm: str | None = None, prompts: int = 3, samples: int = 4,
              micro: int = 6, max_new_tokens: int = 4, lr: float = 5e-4, steps: int = 2, save_every: int = 0,
              **fields):
    """A small RLConfig for a CPU test: `ckpt` as the policy, `prompts` x `samples` episodes a step (micro-batches
    of `micro`), one update per batch, constant lr, `steps` steps logged each step, no periodic evaluation.
    `env` is an env name or a whole RLEnvConfig; `fields` replace whole RLConfig fields (batch=, run=, optim=, ...)."""
    from postlab.config import ModelConfig, OptimConfig, RunConfig
    from postlab.trainers.rl import RLBatchConfig, RLConfig, RLEnvConfig, RLSamplingConfig

    if isinstance(env, str):
        env = RLEnvConfig(name=env, eval_splits=())
    base = dict(model=ModelConfig(path=str(ckpt)), env=env, batch=RLBatchConfig(prompts, samples, micro, 1),
                sampling=RLSamplingConfig(max_new_tokens=max_new_tokens), optim=OptimConfig(lr=lr, schedule="constant"),
                run=RunConfig(out_dir=str(out), max_steps=steps, save_every=save_every, progress=False,
                              tensorboard=False, log_every=1))
    if algorithm is not None:
        base["algorithm"] = algorithm
    base.update(fields)
    return RLConfig(**base)


# ----------------------------------------------------------------------------- the CLI in a subprocess


def cli_env() -> dict:
    """The environment of a `postlab` subprocess: this checkout importable, the parent's torch thread count."""
    import torch

    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}


def run_cli(args: list[str], background: bool = False, **kw):
    """`postlab ARGS` in a fresh process (same interpreter, same thread count as the parent).

    Returns the CompletedProcess, or with background=True the running Popen (text pipes)."""
    cwd = kw.pop("cwd", REPO)
    if background:
        return subprocess.Popen([sys.executable, "-m", "postlab.cli.main", *args], env=cli_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, **kw)
    return subprocess.run([sys.executable, "-m", "postlab.cli.main", *args], env=cli_env(), capture_output=True,
                          text=True, cwd=cwd, **kw)


_printed: dict = {}


def printed_so_far(proc) -> str:
    """Non-blocking: what a subprocess started with stdout=PIPE (text) has printed so far."""
    import select

    buf = _printed.setdefault(proc.pid, [""])
    while select.select([proc.stdout], [], [], 0)[0]:
        line = proc.stdout.readline()
        if not line:
            break
        buf[0] += line
    return buf[0]


# ----------------------------------------------------------------------------- kill -9 of a training run

# The real CLI with RunDir.log patched to print HANGING and hang once training step {hang} is
# logged: its checkpoint before that step is on disk, and the run has logged metrics past it
# (which a resume must drop).
HANGING_RUN = textwrap.dedent("""
    import sys, time
    from postlab import runs
    orig = runs.RunDir.log
    def log(self, step, metrics, kind="train"):
        orig(self, step, metrics, kind)
        if step == {hang} and kind == "train":
            print("HANGING", flush=True)
            time.sleep(600)
    runs.RunDir.log = log
    from postlab.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def start_hanging_run(args: list[str], hang_step: int) -> subprocess.Popen:
    """`postlab ARGS` in a subprocess that hangs after logging training step `hang_step` (text pipes)."""
    return subprocess.Popen([sys.executable, "-c", HANGING_RUN.format(hang=hang_step), *args], env=cli_env(),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `ready()`, then kill -9 `proc` and reap it. Fails if `proc` exits first (showing
    its stderr) or if `what` has not appeared within `timeout` seconds."""
    try:
        deadline = time.time() + timeout
        while not ready():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, f"{what} never appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def kill_after_checkpoint(proc: subprocess.Popen, checkpoint: Path, timeout: float) -> None:
    """kill -9 a `start_hanging_run` process once `checkpoint` is complete and the run hangs past it."""
    kill_when(proc, lambda: (checkpoint / "trainer_state.json").exists() and "HANGING" in printed_so_far(proc),
              timeout, "checkpoint")
