"""Progress bars (steps, tokens/s, ETA) and end-of-run summary tables, via rich."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


class StepProgress:
    """`with StepProgress(total, "sft") as p: p.advance(tokens=..., **metrics)`."""

    def __init__(self, total: int, description: str, start: int = 0, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self.start_time = time.time()
        self.tokens = 0
        self.total, self.step = total, start
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                                  TimeRemainingColumn(), console=console, disable=not self.enabled)
        self._task = self._progress.add_task(description, total=total, completed=start, info="")

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._progress.__exit__(*exc)

    def tokens_per_second(self) -> float:
        return self.tokens / max(time.time() - self.start_time, 1e-9)

    def advance(self, tokens: int = 0, **metrics) -> None:
        self.tokens += tokens
        self.step += 1
        info = f"{self.tokens_per_second():,.0f} tok/s " + " ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
        self._progress.update(self._task, advance=1, info=info)
        if not self.enabled and (self.step % max(1, self.total // 10) == 0 or self.step == self.total):
            console.print(f"step {self.step}/{self.total} {info}", highlight=False)


def summary_table(title: str, rows: dict[str, object]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for k, v in rows.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)
