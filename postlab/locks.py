"""Directory locks: one process at a time writes a run directory or a study stage.

Two processes writing one run directory interleave metrics, checkpoints and `final/` and leave
a run that neither resumes nor means anything. So a trainer holds its run directory's lock for
the process's life (`RunDir`), and the study runner holds a stage's lock while it runs it, so
that two `postlab study ... --only-seed N` processes sharing a study directory take turns on
the stages they share instead of both running them.

The lock is an advisory `flock` on a file beside the locked directory's contents. The kernel
drops it when the holding process dies, so a killed run never leaves a stale lock behind.
Within one process a lock is re-entrant (counted), since a test, or a study running stages in
sequence, may open the same directory twice.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not guarded against a second process
    fcntl = None

_held: dict[str, list] = {}  # resolved lock file -> [open file, count] held by this process


class DirectoryInUse(RuntimeError):
    """Another process holds the lock."""


def _holder(lock_file: Path) -> str:
    """What the holder wrote into the lock file: its pid and start time (best effort)."""
    try:
        return lock_file.read_text().strip() or "unknown process"
    except OSError:
        return "unknown process"


def acquire(lock_file: str | Path, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> None:
    """Take the lock `lock_file`; raise `DirectoryInUse` naming the holder, or with `wait` block until it is free
    (calling `on_wait(holder)` once first)."""
    lock_file = Path(lock_file)
    key = str(lock_file.resolve())
    if fcntl is None:
        return
    if key in _held:
        _held[key][1] += 1
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_file, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(lock_file)
        if not wait:
            fh.close()
            raise DirectoryInUse(holder) from None
        if on_wait is not None:
            on_wait(holder)
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocks until the holder releases it or dies
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    fh.flush()
    _held[key] = [fh, 1]


def release(lock_file: str | Path) -> None:
    """Give back one hold of `lock_file` (the last one unlocks it)."""
    key = str(Path(lock_file).resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        fh = entry[0]
        fh.seek(0)
        fh.truncate()  # a reader no longer sees a holder
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


@contextlib.contextmanager
def waiting_for(lock_file: str | Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold `lock_file` for a `with` block, waiting for it if another process holds it (`acquire` with
    `wait`, `on_wait(holder)` called once first), and give it back however the block ends."""
    acquire(lock_file, wait=True, on_wait=on_wait)
    try:
        yield
    finally:
        release(lock_file)
