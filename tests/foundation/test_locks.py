"""Directory locks: a second process is refused (or waits), a dead holder frees the lock."""

import os
import subprocess
import sys
import textwrap

import pytest

from postlab import locks
from postlab.config import ConfigError
from postlab.runs import RunDir


def _other_process(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


def test_a_held_lock_refuses_another_process_and_names_the_holder(tmp_path):
    lock = tmp_path / "x.lock"
    locks.acquire(lock)
    try:
        out = _other_process(f"""
            from postlab import locks
            try:
                locks.acquire({str(lock)!r})
            except locks.DirectoryInUse as e:
                print("refused:", e)
        """)
        assert f"refused: pid {os.getpid()} since" in out.stdout, out.stderr
    finally:
        locks.release(lock)
    out = _other_process(f"from postlab import locks; locks.acquire({str(lock)!r}); print('got it')")
    assert "got it" in out.stdout, out.stderr


def test_a_dead_holder_leaves_no_stale_lock_and_one_process_may_reenter(tmp_path):
    lock = tmp_path / "x.lock"
    out = _other_process(f"import os; from postlab import locks; locks.acquire({str(lock)!r}); os._exit(9)")
    assert out.returncode == 9
    locks.acquire(lock)  # the kernel released the dead process's lock
    locks.acquire(lock)  # re-entrant within a process
    locks.release(lock)
    refused = _other_process(f"""
        from postlab import locks
        try:
            locks.acquire({str(lock)!r})
        except locks.DirectoryInUse:
            print("still held")
    """)
    assert "still held" in refused.stdout  # one release of two holds keeps it
    locks.release(lock)
    free = _other_process(f"from postlab import locks; locks.acquire({str(lock)!r}); print('free')")
    assert "free" in free.stdout


def test_a_run_directory_in_use_by_another_process_is_refused_and_left_alone(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from postlab.runs import RunDir
        RunDir({str(run)!r}, tensorboard=False)
        print("holding", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = sorted(p.name for p in run.iterdir())
        with pytest.raises(ConfigError, match=f"run directory {run} is in use by another process \\(pid {holder.pid} "):
            RunDir(run, tensorboard=False)
        assert sorted(p.name for p in run.iterdir()) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    RunDir(run, tensorboard=False).close()  # free again once the holder exited
