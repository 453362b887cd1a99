"""Write verl rows (nested dicts and lists) to parquet so that ``RLHFDataset`` reads them back unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def write_rows(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` to ``path``; arrow infers list/struct columns from the first rows' shape."""
    if not rows:
        raise ValueError(f"refusing to write {path}: no rows")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a parquet file as plain Python dicts (the inverse of :func:`write_rows`)."""
    return pq.read_table(path).to_pylist()
