"""``--backend vllm`` with several models: each engine is built, used and released in a child process that
has exited before the next model is built, so two engines never hold GPU memory at once."""

from __future__ import annotations

import os
from pathlib import Path

from support import recording_backend
from support.recording_backend import EVENTS_ENV, read_events

from eval.config import BackendOptions, EvalConfig, SamplingConfig
from eval.run import run


def _config(models: list[Path], labels: list[str], data: Path, out: Path, backend: str) -> EvalConfig:
    return EvalConfig(
        models=tuple(models),
        labels=tuple(labels),
        task="gsm8k",
        data=data,
        out=out,
        backend=backend,
        sampling=SamplingConfig(max_new_tokens=8),
        options=BackendOptions(),
    )


def test_vllm_models_are_built_one_at_a_time_in_processes_that_have_exited(
    tiny_model: Path, gsm8k_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    events_file = tmp_path / "events.jsonl"
    monkeypatch.setenv(EVENTS_ENV, str(events_file))
    config = _config([tiny_model, tiny_model], ["first", "second"], gsm8k_dir, tmp_path / "out", "vllm")
    text = run(config, recording_backend.load)
    events = read_events(events_file)
    assert [e["event"] for e in events] == ["build", "generate", "close"] * 2
    first, second = events[0]["pid"], events[3]["pid"]
    assert len({first, second, os.getpid()}) == 3  # each model in a process of its own
    assert events[3]["earlier_alive"] == []  # the first model's process had exited when the second was built
    assert "first" in text and "second" in text  # both scored (1 of 4 GSM8K answers is 18)


def test_the_hf_backend_stays_in_process(
    tiny_model: Path, gsm8k_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    events_file = tmp_path / "events.jsonl"
    monkeypatch.setenv(EVENTS_ENV, str(events_file))
    run(_config([tiny_model], ["only"], gsm8k_dir, tmp_path / "out", "hf"), recording_backend.load)
    assert {e["pid"] for e in read_events(events_file)} == {os.getpid()}
