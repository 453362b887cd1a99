"""The shared rounds/statistics code of the CPU and GPU clip benchmarks."""

from __future__ import annotations

import pytest

from bench import rounds as rd


class FakeTimer:
    """Returns scripted durations, one per call, in call order."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = list(durations)
        self.rounds_ended = 0

    def time(self, fn):
        fn()
        dt = self.durations.pop(0)
        return lambda: dt

    def end_round(self) -> None:
        self.rounds_ended += 1


def test_rounds_interleave_rotate_and_reset_before_each_method_but_not_the_probe() -> None:
    calls: list[str] = []
    methods = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    probe = {"p": lambda: calls.append("p")}
    timer = FakeTimer([1.0] * 12)
    times = rd.run_rounds(
        methods, rounds=3, warmup=1, timer=timer, reset=lambda: calls.append("reset"), untimed=probe
    )
    assert timer.rounds_ended == 4
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "p": 3}
    rounds = [calls[i : i + 5] for i in range(0, len(calls), 5)]
    assert rounds[0] == ["reset", "a", "reset", "b", "p"]
    assert rounds[1] == ["reset", "b", "p", "reset", "a"]  # the order rotates
    assert rounds[2] == ["p", "reset", "a", "reset", "b"]


def test_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians() -> None:
    # The load doubles halfway: torch and the method slow down together, their ratio stays 1.02.
    torch_t = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    method = [1.02 * t for t in torch_t]
    out = rd.summarize({"torch": torch_t, "m": method}, "torch")
    row = out["methods"]["m"]
    assert row["ratio"] == pytest.approx(1.02)
    assert row["ratio_iqr"] == pytest.approx(0.0, abs=1e-12)
    assert row["warning"] is None
    assert row["min_ms"] == pytest.approx(1020.0) and row["max_ms"] == pytest.approx(2040.0)
    assert out["methods"]["torch"]["ratio"] == 1.0
    assert any("load changed" in w for w in out["warnings"])  # 2x swing of the baseline


def test_a_wide_spread_is_flagged_in_plain_words() -> None:
    torch_t = [1.0] * 8
    method = [1.0, 1.3, 0.9, 1.5, 1.0, 1.2, 0.8, 1.4]
    out = rd.summarize({"torch": torch_t, "m": method}, "torch")
    warning = out["methods"]["m"]["warning"]
    assert warning is not None and "cannot be trusted" in warning and "IQR" in warning
    assert warning in out["warnings"]
    assert "whatever the load" not in warning  # the IQR straddles 1.05
    slow = rd.summarize(
        {"torch": torch_t, "m": [1.5 * t + 0.2 * (i % 3) for i, t in enumerate(method)]}, "torch"
    )
    assert "all of the IQR is above 1.05" in slow["methods"]["m"]["warning"]


def test_too_few_rounds_and_the_floor() -> None:
    out = rd.summarize({"torch": [2.0, 2.0], "m": [3.0, 3.0]}, "torch", floor_s=[1.0, 1.5])
    assert any("only 2 rounds" in w for w in out["warnings"])
    row = out["methods"]["m"]
    assert row["floor_ratio"] == pytest.approx(2.5)  # median of 3/1 and 3/1.5
    assert row["floor_ms"] == pytest.approx(1250.0)
    with pytest.raises(ValueError, match="rounds"):
        rd.summarize({"torch": [1.0], "m": [1.0, 2.0]}, "torch")


def test_markdown_table() -> None:
    text = rd.markdown_table(["a", "b"], [["x", 1]])
    assert text.splitlines() == ["| a | b |", "| --- | ---: |", "| x | 1 |"]
