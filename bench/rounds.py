"""Interleaved timing rounds and the statistics both clip benchmarks (CPU and GPU) report.

A *round* times the baseline and every other method once, back to back, on the same inputs (the
order rotates from round to round, so no method always runs right after another). Load on a shared
machine changes between rounds far more than within one, so the figure to trust is the median of the
*per-round* ratios, not the ratio of two medians taken minutes apart; its spread (interquartile range
and min / max) says how much the load moved that ratio, and a plain warning says when it is too wide.

Times are seconds; a timer measures wall time (CPU: ``perf_counter``, synchronizing if asked) or
device time (CUDA events, read after the round so timing never adds a host sync inside it).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch

#: A ratio whose interquartile range is wider than this cannot decide a 1.05x goal.
SPREAD_LIMIT = 0.05
#: Fewer rounds than this give no meaningful spread.
MIN_ROUNDS = 5
#: The baseline's slowest round over its fastest: above this the machine's load changed during the run.
LOAD_SWING_LIMIT = 1.5


class Timer(Protocol):
    def time(self, fn: Callable[[], object]) -> Callable[[], float]:
        """Run ``fn`` once; return a reader of its duration in seconds, valid after :meth:`end_round`."""
        ...

    def end_round(self) -> None: ...


class WallTimer:
    """``perf_counter`` around the call; on an accelerator it synchronizes before and after."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object]) -> Callable[[], float]:
        self._sync()
        t0 = time.perf_counter()
        fn()
        self._sync()
        dt = time.perf_counter() - t0
        return lambda: dt

    def end_round(self) -> None:
        pass


class CudaEventTimer:
    """CUDA events recorded on the current stream around the call; read once the round is done.

    No synchronization before the start event: the host may run ahead of the device, as it does after a
    backward pass in training, so launch overhead shows only where the device would wait for it (and a
    host sync inside a method shows as the device idling while the host catches up).
    """

    def __init__(self, device: torch.device | str = "cuda") -> None:
        self.device = torch.device(device)

    def time(self, fn: Callable[[], object]) -> Callable[[], float]:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        return lambda: start.elapsed_time(end) / 1e3

    def end_round(self) -> None:
        torch.cuda.synchronize(self.device)


def timer_for(device: torch.device) -> Timer:
    return CudaEventTimer(device) if device.type == "cuda" else WallTimer(device)


def run_rounds(
    methods: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    timer: Timer,
    warmup: int = 2,
    reset: Callable[[], object] | None = None,
    untimed: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Time every method once per round, ``warmup`` rounds discarded; returns seconds per method.

    ``reset`` runs (untimed) before each method, e.g. to restore the gradients a clip step scaled.
    ``untimed`` methods are extra probes (a copy to measure bandwidth) timed in the same rounds but
    run without ``reset``.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} is invalid; allowed: an integer >= 1")
    probes = dict(untimed or {})
    names = list(methods) + list(probes)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        readers = {}
        for name in names[shift:] + names[:shift]:
            if name in probes:
                readers[name] = timer.time(probes[name])
                continue
            if reset is not None:
                reset()
            readers[name] = timer.time(methods[name])
        timer.end_round()
        if r >= warmup:
            for name, read in readers.items():
                times[name].append(read())
    return times


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(
    times: Mapping[str, Sequence[float]],
    baseline: str,
    *,
    floor_s: Sequence[float] | float | None = None,
    spread_limit: float = SPREAD_LIMIT,
) -> dict[str, Any]:
    """Per method: min / median / max ms, the median per-round ratio to ``baseline`` and its spread.

    ``floor_s`` is the least time the step can take (one value, or one per round, measured in the same
    rounds): each method also gets the median of its per-round ratios to it.
    Returns ``{"methods": {name: row}, "warnings": [...]}``; a row's ``warning`` is None when trusted.
    """
    base = list(times[baseline])
    n = len(base)
    floors = None
    if floor_s is not None:
        floors = list(floor_s) if isinstance(floor_s, Sequence) else [float(floor_s)] * n
    rows: dict[str, dict[str, Any]] = {}
    for name, values in times.items():
        values = list(values)
        if len(values) != n:
            raise ValueError(f"{name!r} has {len(values)} rounds, {baseline!r} has {n}")
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        q1, q3 = _quartiles(ratios)
        row: dict[str, Any] = {
            "runs": n,
            "min_ms": 1e3 * min(values),
            "median_ms": 1e3 * statistics.median(values),
            "max_ms": 1e3 * max(values),
            "ratio": statistics.median(ratios),
            "ratio_q1": q1,
            "ratio_q3": q3,
            "ratio_iqr": q3 - q1,
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
        if floors is not None:
            row["floor_ms"] = 1e3 * statistics.median(floors)
            row["floor_ratio"] = statistics.median(v / f for v, f in zip(values, floors, strict=True))
        row["warning"] = _row_warning(name, row, baseline, spread_limit) if name != baseline else None
        rows[name] = row
    warnings = [row["warning"] for row in rows.values() if row["warning"]]
    swing = max(base) / min(base) if min(base) > 0 else float("inf")
    if swing > LOAD_SWING_LIMIT:
        warnings.insert(
            0,
            f"the machine's load changed during the run: {baseline} took {1e3 * min(base):.3g} to "
            f"{1e3 * max(base):.3g} ms ({swing:.2f}x) across rounds; absolute times are not comparable "
            "with another run, only the per-round ratios are",
        )
    if n < MIN_ROUNDS:
        warnings.insert(0, f"only {n} rounds: too few for a spread; no figure here can be trusted")
    return {"methods": rows, "warnings": warnings}


def _row_warning(name: str, row: Mapping[str, Any], baseline: str, spread_limit: float) -> str | None:
    if row["runs"] < MIN_ROUNDS:
        return f"{name}: only {row['runs']} rounds, the ratio to {baseline} cannot be trusted"
    if row["ratio_iqr"] > spread_limit:
        text = (
            f"{name}: the ratio to {baseline} ({row['ratio']:.3f}) cannot be trusted: its spread over rounds "
            f"(IQR {row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}, min {row['ratio_min']:.3f}, max "
            f"{row['ratio_max']:.3f}) is wider than {spread_limit}; re-run on a quieter machine or with more rounds"
        )
        if row["ratio_q1"] > 1 + spread_limit:
            text += f" (all of the IQR is above {1 + spread_limit:.2f}: slower than that in most rounds, whatever the load)"
        return text
    return None


def host_load() -> dict[str, Any]:
    """What else the machine was doing: load averages (1, 5, 15 min) against its core count."""
    try:
        load = os.getloadavg()
    except OSError:  # not on every platform
        load = None
    return {"loadavg": None if load is None else [round(x, 2) for x in load], "cpu_count": os.cpu_count()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (l / r), right for numbers by default."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(map(str, header)) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def fmt_ratio(row: Mapping[str, Any], key: str = "ratio") -> str:
    """``1.003 [0.998-1.010]``: the median per-round ratio with its interquartile range."""
    if key == "ratio":
        return f"{row['ratio']:.3f} [{row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}]"
    return f"{row[key]:.2f}"
