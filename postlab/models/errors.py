"""The errors a checkpoint raises when it cannot be read.

Their own module because both the loader (postlab.models.io) and LoRA's adapter loading
(postlab.models.lora) raise them, and io imports lora: neither can own them without a circle.
"""

from __future__ import annotations

from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message says which file and what to do."""


# What to do about a damaged file, wherever it is found.
DAMAGED_ADVICE = ("restore the file from a copy; for a run's checkpoint, `--resume RUN_DIR` falls back to the "
                  "previous good checkpoint automatically")


class DamagedFileError(CheckpointError):
    """One file of a checkpoint is missing or damaged: `file` and `problem` let callers compose their own message."""

    def __init__(self, file: Path, problem: str, advice: str = DAMAGED_ADVICE):
        self.file, self.problem = Path(file), problem
        super().__init__(f"{file}: {problem}; {advice}")
