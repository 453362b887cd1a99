"""The preflight's command-line side: Hydra's flags are not overrides, and another primary config is not ours to check."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggc_rl.preflight import check_sft
from aggc_rl.preflight.cli import other_config, overrides_of, wants_cfg


@pytest.mark.parametrize(
    ("argv", "overrides"),
    [
        (["-cd", "/tmp/cfgs", "engine.clip=aggc"], ["engine.clip=aggc"]),
        (["--config-dir", "/tmp/cfgs", "a=1"], ["a=1"]),
        (["--cfg", "job", "-p", "engine", "a=1"], ["a=1"]),
        (["a=1", "hydra.run.dir=/x", "+b=2"], ["a=1", "+b=2"]),
    ],
)
def test_flags_and_their_values_are_not_overrides(argv, overrides):
    assert overrides_of(argv) == overrides


def test_another_primary_config_is_recognised():
    for argv in (["-cn", "mine"], ["--config-name=mine"], ["-cp", "/x"], ["--config-dir", "/x"]):
        assert other_config(argv), argv
    assert not other_config(["engine.clip=aggc", "--cfg", "job"])
    assert wants_cfg(["--cfg", "job"]) and wants_cfg(["--cfg=job"]) and not wants_cfg(["a=1"])


def test_sft_data_must_be_parquet(tmp_path: Path):
    from aggc_rl.tiny import make_tiny_model_dir

    model = make_tiny_model_dir(tmp_path / "model")
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    sdpa = {"attn_implementation": "sdpa"}  # passes the attention check on any machine
    problems = check_sft(
        {"model": {"path": model, "override_config": sdpa}, "data": {"train_files": str(data)}}, {}
    )
    assert [p.key for p in problems] == ["data.train_files"]
    assert "verl reads only .parquet files here" in str(problems[0])


def test_help_flags_are_not_runs():
    from aggc_rl.preflight.cli import nothing_runs

    for argv in (["--help"], ["-h"], ["--hydra-help"], ["--info"], ["--info=config"]):
        assert nothing_runs(argv), argv
    assert not nothing_runs(["--cfg", "job", "a=1"])


@pytest.mark.parametrize("module", ["aggc_rl.train", "aggc_rl.sft"])
def test_help_prints_and_exits_0(module):
    """A new user's first command: Hydra's help, not a preflight refusal of the default paths."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Powered by Hydra" in out.stdout and "preflight refused" not in out.stderr
