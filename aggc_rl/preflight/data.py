"""Can verl read these data files, and can every row be scored? Checked in seconds, before Ray starts.

A file must exist, be non-empty, open as parquet (verl's RLHFDataset also takes ``.json``/``.jsonl``), hold
rows, and have the columns the trainer needs. Rows are then checked by a trainer-specific function
(:class:`DataRequirements`) on the needed columns only: every row of a file up to ``MAX_ROWS_CHECKED`` rows,
else evenly spaced row groups up to about that many rows (a sample, said in the message). Prompts are only
looked at in the first ``PROMPT_ROWS_CHECKED`` rows, since they are the big column.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggc_rl.preflight.problems import Problem

MAX_ROWS_CHECKED = 200_000
PROMPT_ROWS_CHECKED = 1_000
BAD_ROWS_SHOWN = 5
SUFFIXES = (".parquet", ".json", ".jsonl")
REMOTE_PREFIXES = ("hdfs://",)

#: (row index in the file, {column: value}) -> why the row cannot be used, or None.
RowCheck = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class DataRequirements:
    """What one trainer needs of its data: columns, a per-row check, and how to make good data."""

    columns: tuple[str, ...]
    row_check: RowCheck | None = None
    #: the columns ``row_check`` reads (all of them rows up to MAX_ROWS_CHECKED)
    checked_columns: tuple[str, ...] = ()
    #: columns looked at only in the first PROMPT_ROWS_CHECKED rows (large ones), by ``head_check``
    head_columns: tuple[str, ...] = ()
    head_check: RowCheck | None = None
    how_to_make: str = ""
    notes: list[str] = field(default_factory=list)
    #: file types the trainer's dataset reads (verl's RL dataset: parquet and json; its SFT dataset: parquet)
    suffixes: tuple[str, ...] = SUFFIXES


def as_file_list(value: object) -> list[object]:
    """verl takes one path or a list of paths."""
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _fix(requirements: DataRequirements) -> str:
    return requirements.how_to_make or "Point the key at the right file."


def check_data_files(
    key: str, value: object, requirements: DataRequirements, required: bool = True
) -> list[Problem]:
    """Problems of one data setting (``data.train_files``): every file it names, then their rows."""
    if value is None or value == "" or value == []:
        if not required:
            return []
        return [Problem(key, value, "no data file is set", _fix(requirements), "value")]
    problems: list[Problem] = []
    for item in as_file_list(value):
        problems += check_data_file(key, item, requirements)
    return problems


def check_data_file(key: str, value: object, requirements: DataRequirements) -> list[Problem]:
    if not isinstance(value, str) or not value.strip():
        return [Problem(key, value, "not a file path", _fix(requirements), "value")]
    if value.startswith(REMOTE_PREFIXES):
        return []
    path = Path(value).expanduser()
    fix = _fix(requirements)
    if not path.exists():
        return [Problem(key, value, f"no such file ({path.absolute()})", fix)]
    if path.is_dir():
        return [Problem(key, value, "is a directory; verl needs the data file itself", fix)]
    if path.suffix not in requirements.suffixes:
        return [Problem(key, value, f"verl reads only {', '.join(requirements.suffixes)} files here", fix)]
    try:
        size = path.stat().st_size
        if size == 0:
            return [Problem(key, value, "the file is empty (0 bytes)", fix)]
        reader = ParquetRows(path) if path.suffix == ".parquet" else JsonRows(path)
    except Exception as err:  # permissions, a torn or foreign file: anything pyarrow or json refuse
        return [Problem(key, value, f"cannot be read ({type(err).__name__}: {err})", fix)]
    if reader.num_rows == 0:
        return [Problem(key, value, "the file holds no rows", fix)]
    missing = [c for c in requirements.columns if c not in reader.columns]
    if missing:
        return [
            Problem(
                key,
                value,
                f"lacks the column(s) {', '.join(missing)} that verl needs "
                f"(it has: {', '.join(reader.columns) or 'none'})",
                fix,
            )
        ]
    try:
        return check_rows(key, value, reader, requirements)
    except Exception as err:
        return [Problem(key, value, f"rows cannot be read ({type(err).__name__}: {err})", fix)]


def check_rows(key: str, value: str, reader: Rows, requirements: DataRequirements) -> list[Problem]:
    """Run the requirement's row checks; one Problem per kind of bad row, with the first indices and counts."""
    bad: dict[str, list[int]] = {}
    example: dict[str, str] = {}

    def note(index: int, reason: str | None) -> None:
        if reason is None:
            return
        kind, _, detail = reason.partition(": ")  # "not a number: '12a'" groups by "not a number"
        bad.setdefault(kind, []).append(index)
        if detail:
            example.setdefault(kind, f"row {index}: {detail}")

    checked = 0
    if requirements.row_check is not None:
        for index, row in reader.rows(requirements.checked_columns, MAX_ROWS_CHECKED):
            checked += 1
            note(index, requirements.row_check(row))
    if requirements.head_check is not None:
        for index, row in reader.rows(requirements.head_columns, PROMPT_ROWS_CHECKED, head=True):
            note(index, requirements.head_check(row))
    scope = (
        f"{checked} of {reader.num_rows} rows checked (a sample)"
        if 0 < checked < reader.num_rows
        else f"{reader.num_rows} rows"
    )
    problems = []
    for kind, rows in bad.items():
        shown = ", ".join(str(r) for r in rows[:BAD_ROWS_SHOWN]) + (
            ", ..." if len(rows) > BAD_ROWS_SHOWN else ""
        )
        detail = f"; {example[kind]}" if kind in example else ""
        problems.append(
            Problem(
                key,
                value,
                f"{len(rows)} bad row(s) of {scope}: {kind} (rows {shown}{detail})",
                _fix(requirements),
            )
        )
    return problems


class Rows:
    """A data file's size, columns and rows (by index, only the columns asked for)."""

    num_rows: int
    columns: list[str]

    def rows(self, columns: Sequence[str], limit: int, head: bool = False) -> Iterator[tuple[int, dict]]:
        raise NotImplementedError


class ParquetRows(Rows):
    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._file = pq.ParquetFile(path)
        self.num_rows = self._file.metadata.num_rows
        self.columns = list(self._file.schema_arrow.names)

    def rows(self, columns: Sequence[str], limit: int, head: bool = False) -> Iterator[tuple[int, dict]]:
        groups = self._file.metadata.num_row_groups
        sizes = [self._file.metadata.row_group(g).num_rows for g in range(groups)]
        starts = [sum(sizes[:g]) for g in range(groups)]
        if head or self.num_rows <= limit:
            chosen = range(groups)
        else:  # evenly spaced row groups, about `limit` rows in all
            average = max(1, self.num_rows // max(groups, 1))
            want = max(1, min(groups, limit // average))
            chosen = sorted({round(i * (groups - 1) / max(want - 1, 1)) for i in range(want)})
        seen = 0
        for group in chosen:
            table = self._file.read_row_group(group, columns=list(columns))
            for offset, row in enumerate(table.to_pylist()):
                if seen >= limit:
                    return
                seen += 1
                yield starts[group] + offset, row


class JsonRows(Rows):
    """JSON lines (``.jsonl``, and ``.json`` written that way) or one JSON array (``.json``)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        text = path.read_text(encoding="utf-8")
        stripped = text.lstrip()
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not all(isinstance(r, dict) for r in records):
            raise ValueError("every record must be a JSON object")
        self._records = records
        self.num_rows = len(records)
        self.columns = sorted({k for r in records[:1000] for k in r})

    def rows(self, columns: Sequence[str], limit: int, head: bool = False) -> Iterator[tuple[int, dict]]:
        for index, record in enumerate(self._records[:limit]):
            yield index, {c: record.get(c) for c in columns}
