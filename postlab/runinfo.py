"""The machine and software a run executed on, recorded next to its results.

A CPU run is bit-identical only when repeated on the same CPU type (the kernels torch picks
depend on the instruction set: AVX2 vs AVX-512), the same torch build (its BLAS and oneDNN
versions) and the same thread count (the order of floating-point sums depends on it). So every
study stores `environment()` in `study.json` under "environment", every run in `meta.json`, and
the report prints it.

Each probe is guarded: recording the environment must never stop a run, so a probe that fails
records None instead of raising.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any, Callable

DETERMINISM = "Results are bit-identical only on the same machine type, torch build and thread count."


def _probe(fn: Callable[[], Any]) -> Any:
    """fn(), or None when it raises (a missing package, an unreadable file, no driver)."""
    try:
        return fn()
    except Exception:
        return None


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU's model name: /proc/cpuinfo's "model name" on Linux (platform.processor() is
    often empty or just 'x86_64' there), else platform.processor()."""
    path = Path(cpuinfo)
    if path.exists():
        m = re.search(r"^model name\s*:\s*(.+)$", path.read_text(errors="replace"), re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or None


def _torch_build() -> dict:
    """torch's CPU math libraries, in short: which BLAS, whether oneDNN (mkldnn) is usable, and
    the SIMD level its kernels dispatch to (AVX512 / AVX2 / DEFAULT ...)."""
    import torch

    config = _probe(torch.__config__.show) or ""
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", config)
    capability = _probe(torch.backends.cpu.get_cpu_capability)
    return {
        "blas": blas.group(1) if blas else None,
        "mkldnn": _probe(torch.backends.mkldnn.is_available),
        "onednn_version": onednn.group(1) if onednn else None,
        "cpu_capability": capability,
        "avx512": None if capability is None else "AVX512" in capability.upper(),
    }


def _cuda_device() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _note(env: dict) -> str:
    """DETERMINISM, with the values this run would have to match."""
    note = (f"{DETERMINISM} This run: {env.get('cpu') or 'unknown CPU'} ({env.get('cpu_capability') or '?'}), "
            f"torch {env.get('torch') or '?'} (BLAS {env.get('blas') or '?'}), {env.get('torch_threads') or '?'} threads.")
    if env.get("cuda_device"):
        note += (" On CUDA, results also depend on the GPU model and driver, and some kernels are "
                 "non-deterministic unless torch.use_deterministic_algorithms(True).")
    return note


def environment() -> dict:
    """The run's environment as a JSON-ready dict (strings, numbers, booleans, None)."""
    from importlib.metadata import version  # reads the installed version without importing transformers

    env = {
        "torch": _probe(lambda: __import__("torch").__version__),
        "transformers": _probe(lambda: version("transformers")),
        "python": platform.python_version(),
        "platform": _probe(platform.platform),
        "cpu": _probe(cpu_model),
        "cpu_count": os.cpu_count(),
        "torch_threads": _probe(lambda: __import__("torch").get_num_threads()),
        **(_probe(_torch_build) or {}),
        "cuda_device": _probe(_cuda_device),
    }
    env["deterministic_note"] = _note(env)
    return env
