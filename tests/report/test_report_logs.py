"""Reading runs: verl's file-logger JSONL (nulls, repeats, torn lines), TensorBoard event files, bad paths."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from aggc_rl.report import analysis
from aggc_rl.report.logs import RunLogError, load_run
from aggc_rl.report.synthetic import SyntheticRun, records, write_jsonl

RUN = SyntheticRun(steps=80, spikes=(30, 55), skipped=(40,), seed=3)


def test_jsonl_as_verl_writes_it(tmp_path: Path) -> None:
    path = write_jsonl(records(RUN), tmp_path / "proj" / "exp.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"step", "data"} and first["step"] == 0  # validation before training
    run = load_run(tmp_path, "exp")  # a directory: found recursively
    assert run.sources == [path]
    assert run.steps == list(range(0, 81))
    assert math.isnan(run.metrics[analysis.GRAD_NORM_KEY].loc[40])  # null = logged but not finite
    assert 0 not in run.metrics[analysis.GRAD_NORM_KEY].index  # not logged at step 0
    summary = analysis.summarize("exp", run.metrics)
    assert summary.spikes == [30, 55] and summary.skipped == [40]


def test_repeated_steps_take_the_last_value_and_bad_lines_are_skipped(tmp_path: Path, capsys) -> None:
    path = tmp_path / "exp.jsonl"
    lines = [
        {"step": 1, "data": {"critic/score/mean": 0.1, "note": "text values are ignored"}},
        {"step": 2, "data": {"critic/score/mean": 0.2}},
        {"step": 2, "data": {"critic/score/mean": 0.25, "actor/grad_norm": None}},  # a resumed run
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + '\n{"step": 3, "data": {"critic/sc')
    run = load_run(path, "exp")
    assert run.metrics["critic/score/mean"].to_dict() == {1: 0.1, 2: 0.25}
    assert "note" not in run.metrics and run.bad_lines == 1
    assert f"{path}:4: skipped unreadable line" in capsys.readouterr().err


def test_a_run_without_a_log_is_an_error_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(
        RunLogError, match=re.escape(f"no log found under {tmp_path / 'empty'}: expected verl's file-logger")
    ):
        load_run(tmp_path / "empty", "x")
    with pytest.raises(RunLogError, match=re.escape(f"run path does not exist: {tmp_path / 'missing'}")):
        load_run(tmp_path / "missing", "x")
    dump = tmp_path / "val_dump.jsonl"  # verl's validation generations dump is JSONL with other fields
    dump.write_text(json.dumps({"input": "q", "output": "a", "score": 1.0}) + "\n")
    with pytest.raises(RunLogError, match="is not a verl file-logger log"):
        load_run(dump, "x")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(RunLogError, match="holds no metrics"):
        load_run(tmp_path / "empty.jsonl", "x")


def test_a_directory_with_several_logs_asks_for_one_argument_each(tmp_path: Path) -> None:
    write_jsonl(records(RUN), tmp_path / "a.jsonl")
    write_jsonl(records(RUN), tmp_path / "b.jsonl")
    with pytest.raises(RunLogError, match=r"holds 2 verl logs .* pass each as its own run argument"):
        load_run(tmp_path, "x")


def _write_events(recs: list, folder: Path) -> None:
    """What verl's tensorboard logger does: add_scalar(key, value, step) for every metric."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step, data in recs:
        for key, value in data.items():
            writer.add_scalar(key, math.nan if value is None else value, step)
    writer.close()


def test_tensorboard_event_files(tmp_path: Path) -> None:
    _write_events(records(RUN), tmp_path / "tensorboard_log" / "proj" / "exp")
    run = load_run(tmp_path, "exp")
    assert len(run.sources) == 1 and run.sources[0].name.startswith("events.out.tfevents.")
    summary = analysis.summarize("exp", run.metrics)
    assert summary.spikes == [30, 55] and summary.skipped == [40]
    assert summary.groups == len(RUN.groups)
    assert run.metrics["critic/score/mean"].index.tolist() == list(range(1, 81))
    final, _ = summary.validation[analysis.validation_keys(run.metrics)[0]]
    assert final.step == 80


def test_jsonl_wins_over_tensorboard_where_both_have_a_value(tmp_path: Path) -> None:
    _write_events([(1, {"critic/score/mean": 9.0, "actor/entropy": 1.5})], tmp_path / "tb")
    (tmp_path / "exp.jsonl").write_text(json.dumps({"step": 1, "data": {"critic/score/mean": 0.5}}) + "\n")
    run = load_run(tmp_path, "exp")
    assert len(run.sources) == 2
    assert run.metrics["critic/score/mean"].loc[1] == 0.5
    assert run.metrics["actor/entropy"].loc[1] == 1.5


def test_reads_what_verls_own_file_logger_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from verl.utils.tracking import FileLogger

    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path))
    logger = FileLogger("aggc", "gsm8k_global")  # -> $VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl
    logger.log({"val-core/openai/gsm8k/acc/mean@1": np.float64(0.3)}, step=0)
    logger.log({"actor/grad_norm": np.float32(1.5), "critic/score/mean": 0.2}, step=1)
    logger.log({"actor/grad_norm": float("nan"), "actor/clip/skipped": 1.0}, step=2)
    logger.finish()
    run = load_run(tmp_path / "aggc", "global")
    assert run.sources == [tmp_path / "aggc" / "gsm8k_global.jsonl"]
    assert run.metrics["actor/grad_norm"].loc[1] == 1.5
    assert analysis.skipped_steps(run.metrics) == [2]
    assert analysis.validation_keys(run.metrics) == ["val-core/openai/gsm8k/acc/mean@1"]
