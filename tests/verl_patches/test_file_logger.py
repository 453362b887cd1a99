"""verl's file logger keeps earlier records when a run resumes (verl 0.9.1 truncated the file)."""

from __future__ import annotations

import json

from verl.utils.tracking import FileLogger

from verl_patches.file_logger import append_file_logger


def test_a_second_logger_appends(tmp_path, monkeypatch):
    append_file_logger()
    append_file_logger()  # idempotent
    path = tmp_path / "new_dir" / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    for steps in ([1, 2], [3]):
        logger = FileLogger("project", "experiment")
        for step in steps:
            logger.log({"critic/score/mean": float(step)}, step)
        logger.finish()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_default_path_is_verls(tmp_path, monkeypatch):
    append_file_logger()
    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path))
    logger = FileLogger("proj", "exp")
    logger.log({"x": 1.0}, 1)
    logger.finish()
    assert (tmp_path / "proj" / "exp.jsonl").exists()
