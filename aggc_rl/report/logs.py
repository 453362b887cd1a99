"""Read one run's metrics from verl's file logger (JSONL) and/or TensorBoard event files.

verl 0.9.1 (``verl/utils/tracking.py``): ``trainer.logger=['console','file']`` makes ``FileLogger`` write
``$VERL_FILE_LOGGER_PATH``, or else ``${VERL_FILE_LOGGER_ROOT:-.}/<project_name>/<experiment_name>.jsonl``,
one line per ``log`` call: ``{"step": N, "data": {"metric/name": value, ...}}``. It serialises with orjson,
which writes NaN and +-inf as ``null``, so a ``null`` value means "logged, not finite" and is read as NaN.
Validation before training is logged at step 0; the last step's line carries the final validation too.
``'tensorboard'`` writes ``add_scalar(key, value, step)`` under ``$TENSORBOARD_DIR`` or
``tensorboard_log/<project_name>/<experiment_name>``.

A metric is a float :class:`pandas.Series` indexed by step, holding only the steps where it was logged, so
"not logged" (absent) and "not finite" (NaN) stay distinguishable.

A log that survived crashes and resumes can hold a training step twice (a crash forced a resume from an
earlier checkpoint, and the step was trained again) or miss one (the run was killed after the checkpoint
was saved but before verl wrote that step's record: it logs after saving). :class:`RunLog` says both:
``duplicate_steps`` keeps the LAST training record of a step (the one the resumed run continued from), and
``missing_steps`` lists the training steps absent between the first and the last. A record holding only
validation metrics (``val-core/``, ``val-aux/``: the validation a resumed run makes before training, at the
step it resumed from) is merged into its step rather than counted as a second record.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

JSONL_SUFFIX = ".jsonl"
EVENTS_PREFIX = "events.out.tfevents."
NO_LOG_HINT = (
    "expected verl's file-logger JSONL (trainer.logger=['console','file'] writes "
    '${VERL_FILE_LOGGER_ROOT:-.}/<project>/<experiment>.jsonl, lines {"step": N, "data": {...}}) '
    "or TensorBoard event files (events.out.tfevents.*)"
)


class RunLogError(ValueError):
    """A run argument that does not lead to a readable log; the message names the path."""


@dataclass
class RunLog:
    """One run's metrics (name -> Series over steps) and where they came from."""

    label: str
    path: Path
    metrics: dict[str, pd.Series]
    sources: list[Path] = field(default_factory=list)
    bad_lines: int = 0
    #: training steps written more than once (the last record kept), and those absent from the log
    duplicate_steps: list[int] = field(default_factory=list)
    missing_steps: list[int] = field(default_factory=list)

    def get(self, name: str) -> pd.Series | None:
        """The metric's Series, or None when the run never logged it."""
        return self.metrics.get(name)

    @property
    def steps(self) -> list[int]:
        """Every step at which anything was logged, sorted."""
        found: set[int] = set()
        for series in self.metrics.values():
            found.update(int(s) for s in series.index)
        return sorted(found)


def _as_float(value: Any) -> float | None:
    """A metric value as float: numbers and bools as themselves, ``null`` as NaN, anything else skipped."""
    if value is None:
        return math.nan
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, list) and len(value) == 1:  # a numpy 1-element array under OPT_SERIALIZE_NUMPY
        return _as_float(value[0])
    return None


def _is_verl_record(obj: Any) -> bool:
    return isinstance(obj, dict) and "step" in obj and isinstance(obj.get("data"), dict)


def looks_like_verl_jsonl(path: Path) -> bool:
    """True when the first non-empty line is a ``{"step", "data"}`` record, or the file is empty.

    verl's validation/rollout dumps (``trainer.validation_data_dir``) are JSONL too, with other fields; they
    must not be mistaken for the metric log.
    """
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    return _is_verl_record(json.loads(line))
                except ValueError:
                    return False
    return True


VALIDATION_PREFIXES = ("val-core/", "val-aux/")


def is_validation_only(values: dict[str, float]) -> bool:
    return bool(values) and all(name.startswith(VALIDATION_PREFIXES) for name in values)


@dataclass
class JsonlLog:
    """What one file-logger JSONL holds: step -> metrics, and what was odd about it."""

    by_step: dict[int, dict[str, float]]
    bad_lines: int = 0
    duplicate_steps: list[int] = field(default_factory=list)


def read_jsonl_log(path: Path) -> JsonlLog:
    """Every record of a file-logger JSONL; a training step written twice keeps its last record.

    A torn last line (a run killed mid-write) or any other unreadable line is skipped with a warning on
    stderr rather than failing the whole report.
    """
    by_step: dict[int, dict[str, float]] = {}
    trained: set[int] = set()
    duplicates: set[int] = set()
    bad = 0
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not _is_verl_record(record):
                    raise ValueError("not a {'step', 'data'} object")
                step = int(record["step"])
            except (ValueError, TypeError) as err:
                bad += 1
                print(f"warning: {path}:{line_no}: skipped unreadable line ({err})", file=sys.stderr)
                continue
            values = {}
            for name, raw in record["data"].items():
                value = _as_float(raw)
                if value is not None:
                    values[name] = value
            if is_validation_only(values):
                by_step.setdefault(step, {}).update(values)
                continue
            if step in trained:  # trained again after a resume: this record replaces the earlier one
                duplicates.add(step)
                kept = {k: v for k, v in by_step[step].items() if k.startswith(VALIDATION_PREFIXES)}
                by_step[step] = kept
            trained.add(step)
            by_step.setdefault(step, {}).update(values)
    return JsonlLog(by_step, bad, sorted(duplicates))


def read_jsonl(path: Path) -> tuple[dict[int, dict[str, float]], int]:
    """step -> {metric: value} from a file-logger JSONL, and how many lines could not be read."""
    log = read_jsonl_log(path)
    return log.by_step, log.bad_lines


def missing_training_steps(by_step: dict[int, dict[str, float]]) -> list[int]:
    """Training steps absent between the first and the last training record (validation-only ones aside)."""
    trained = sorted(step for step, values in by_step.items() if values and not is_validation_only(values))
    if not trained:
        return []
    present = set(trained)
    return [step for step in range(trained[0], trained[-1] + 1) if step not in present]


def read_events(path: Path) -> dict[int, dict[str, float]]:
    """step -> {tag: value} from one TensorBoard event file (scalar summaries and scalar tensors)."""
    try:
        from tensorboard.backend.event_processing import event_accumulator
        from tensorboard.util import tensor_util
    except ImportError as err:
        raise RunLogError(
            f"{path} is a TensorBoard event file; reading it needs: pip install tensorboard"
        ) from err
    acc = event_accumulator.EventAccumulator(
        str(path), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    by_step: dict[int, dict[str, float]] = {}
    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        for event in acc.Scalars(tag):
            by_step.setdefault(int(event.step), {})[tag] = float(event.value)
    for tag in tags.get("tensors", []):  # tensorboardX / TF2 writers store scalars as 0-d tensors
        for event in acc.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if array.size == 1 and array.dtype.kind in "fiub":
                by_step.setdefault(int(event.step), {})[tag] = float(array.reshape(-1)[0])
    return by_step


def _to_series(by_step: dict[int, dict[str, float]]) -> dict[str, pd.Series]:
    columns: dict[str, dict[int, float]] = {}
    for step, values in by_step.items():
        for name, value in values.items():
            columns.setdefault(name, {})[step] = value
    return {
        name: pd.Series(values, dtype=float).sort_index().rename(name)
        for name, values in sorted(columns.items())
    }


def find_sources(path: Path) -> tuple[list[Path], list[Path]]:
    """(verl JSONL logs, TensorBoard event files) of a run argument: a file, or a directory searched deep."""
    if not path.exists():
        raise RunLogError(f"run path does not exist: {path}")
    if path.is_file():
        if path.name.startswith(EVENTS_PREFIX):
            return [], [path]
        if not looks_like_verl_jsonl(path):
            raise RunLogError(f"{path} is not a verl file-logger log; {NO_LOG_HINT}")
        return [path], []
    jsonl = sorted(p for p in path.rglob(f"*{JSONL_SUFFIX}") if p.is_file() and looks_like_verl_jsonl(p))
    events = sorted(p for p in path.rglob(f"{EVENTS_PREFIX}*") if p.is_file())
    if len(jsonl) > 1:
        listed = ", ".join(str(p) for p in jsonl)
        raise RunLogError(
            f"{path} holds {len(jsonl)} verl logs ({listed}); "
            "pass each as its own run argument to compare them"
        )
    if not jsonl and not events:
        raise RunLogError(f"no log found under {path}: {NO_LOG_HINT}")
    return jsonl, events


def _merge(into: dict[int, dict[str, float]], new: Iterable[tuple[int, dict[str, float]]]) -> None:
    for step, values in new:
        into.setdefault(step, {}).update(values)


def load_run(path: str | Path, label: str) -> RunLog:
    """Every metric of the run at ``path``; RunLogError naming the path when there is no log or no steps.

    With both a JSONL and event files, the JSONL wins on a (step, metric) both hold: its ``null`` keeps
    the "not finite" information exactly. Event files are read in name order (their names start with the
    creation time), later ones overriding earlier ones.
    """
    path = Path(path)
    jsonl, events = find_sources(path)
    by_step: dict[int, dict[str, float]] = {}
    for event_file in events:
        _merge(by_step, read_events(event_file).items())
    bad = 0
    duplicates: list[int] = []
    for log in jsonl:
        read = read_jsonl_log(log)
        bad, duplicates = read.bad_lines, read.duplicate_steps
        _merge(by_step, read.by_step.items())
    missing = missing_training_steps(by_step)
    for step in missing:
        print(f"warning: {path}: training step {step} is missing from the log", file=sys.stderr)
    for step in duplicates:
        print(
            f"warning: {path}: training step {step} was written twice; the last record is kept",
            file=sys.stderr,
        )
    metrics = _to_series(by_step)
    if not metrics:
        listed = ", ".join(str(p) for p in [*jsonl, *events])
        raise RunLogError(f"the log of {path} holds no metrics ({listed})")
    return RunLog(
        label=label,
        path=path,
        metrics=metrics,
        sources=[*jsonl, *events],
        bad_lines=bad,
        duplicate_steps=duplicates,
        missing_steps=missing,
    )
