"""Helpers for the foundation tests: a tiny synthetic task and running the CLI in a subprocess."""

import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def reverse_records(n: int, seed: int = 0, alphabet: str = "abcdef", lengths=(3, 5), exclude=()) -> list[dict]:
    """`{"prompt": "abc=", "completion": "cba"}`: reverse a short string; distinct prompts."""
    rng = random.Random(seed)
    seen, out = set(exclude), []
    while len(out) < n:
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(*lengths)))
        if s + "=" in seen:
            continue
        seen.add(s + "=")
        out.append({"prompt": s + "=", "completion": s[::-1]})
    return out


def run_cli(args: list[str], background: bool = False, **kw):
    """`postlab ARGS` in a fresh process (same interpreter, same thread count as the parent).

    Returns the CompletedProcess, or with background=True the running Popen (text pipes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(_threads())}
    if background:
        return subprocess.Popen([sys.executable, "-m", "postlab.cli.main", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=kw.pop("cwd", REPO), **kw)
    return subprocess.run([sys.executable, "-m", "postlab.cli.main", *args], env=env, capture_output=True, text=True,
                          cwd=kw.pop("cwd", REPO), **kw)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


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
