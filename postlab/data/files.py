"""Reading local data files row by row: JSONL (one object per line) and Parquet (one per row).

The lowest data module: it validates nothing but the file's own syntax, so both the record
loader (postlab.data.records) and the environments that read their own problem files
(postlab.envs.math) use it without depending on each other. Every error is a `DataError`
that names the file and the line or row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


class DataError(ValueError):
    """Bad training data; the message names the file and line."""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for each non-blank line; DataError names file:line on bad JSON."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


def iter_file_rows(path: str | Path) -> Iterator[tuple[str, object]]:
    """(where, object) for each record of a local JSONL or Parquet file; `where` names file and line/row."""
    path = Path(path)
    if path.suffix == ".parquet":
        for i, row in enumerate(read_parquet_rows(path)):
            yield f"{path}[row {i}]", row
    else:
        for lineno, rec in iter_jsonl(path):
            yield f"{path}:{lineno}", rec


def read_parquet_rows(path: str | Path) -> list[dict]:
    """The rows of a local Parquet file as plain dicts, through `datasets` when installed, else pyarrow.

    Arrow gives every row every column (and a struct every field), filling the ones a record lacks
    with null: nulls are dropped, so a row reads like the JSON object it came from."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    try:
        import datasets
    except ImportError:
        datasets = None
    try:
        if datasets is not None:
            datasets.disable_progress_bars()
            rows = list(datasets.Dataset.from_parquet(str(path)))  # a local file: nothing is downloaded
        else:
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise DataError(f"{path}: reading Parquet needs the `datasets` package (or pyarrow): "
                                "pip install 'postlab[datasets]'") from None
            rows = pq.read_table(str(path)).to_pylist()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is an unreadable file
        raise DataError(f"{path}: cannot read it as Parquet ({type(e).__name__}: {e})") from None
    return [_drop_nulls(r) for r in rows]


def _drop_nulls(value):
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value
