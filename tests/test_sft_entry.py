"""``python -m aggc_rl.sft``: bad settings are refused before any rank trains, naming the key and what is allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggc_rl.tiny import make_tiny_model_dir
from verl_patches.sft import reduce_for_loggers

REPO = Path(__file__).resolve().parents[1]


def start(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VERL_PLATFORM": "cpu"}
    cmd = [sys.executable, "-m", "aggc_rl.sft", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return make_tiny_model_dir(tmp_path_factory.mktemp("sft_model") / "model")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["engine.clip=bogus"], "engine.clip='bogus' is invalid; allowed: global, aggc"),
        (["engine.clip_config.aggc.nope=1"], "unknown knob 'engine.clip_config.aggc.nope'"),
        (
            ["engine.clip=aggc", "engine.clip_config.aggc.beta=2"],
            "beta=2 is invalid; allowed: a number in [0, 1)",
        ),
        (["chat_template=bogus"], "chat_template='bogus' is invalid; allowed: null"),
    ],
)
def test_bad_clip_and_template_settings_are_refused(model, args, message):
    out = start(f"model.path={model}", *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "Platform override" not in out.stderr  # before verl, one message
    assert "Epoch" not in out.stderr + out.stdout  # nothing trained


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clip=aggc"], "the switch is engine.clip=aggc"),
        (["actor.clip=aggc"], "the switch is engine.clip=aggc"),
        (["engine.foo=1"], "Key 'foo' is not in struct; allowed under engine:"),
        # value problems alone: a dry run only warns about the (missing) default data
        (["optim.lr=nan", "--cfg", "job"], "optim.lr=nan: not a finite number"),
        (["engine.strategy=fsdp", "--cfg", "job"], "engine.strategy='fsdp': the clip engine"),
    ],
)
def test_other_bad_settings_exit_2_in_one_line(model, args, message):
    out = start(f"model.path={model}", *args)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and message in lines[0], out.stderr[-2000:]


def test_a_missing_model_and_data_are_refused_with_exit_2(tmp_path):
    out = start(f"model.path={tmp_path / 'nope'}", f"data.train_files={tmp_path / 'none.parquet'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "model.path" in out.stderr and "data.train_files" in out.stderr


def test_metrics_reach_loggers_as_numbers_with_clip_metrics_under_train():
    from verl.utils.metric.utils import Metric

    two_micro_batches = Metric("mean", 1.0)
    two_micro_batches.append(3.0)
    got = reduce_for_loggers(
        {
            "clip/total_norm_pre": two_micro_batches,
            "clip/norm/q_proj": [Metric("mean", 2.0), Metric("mean", 4.0)],  # one per data-parallel rank
            "clip/skips_total": [Metric("max", 1.0), Metric("max", 5.0)],
            "train/loss": 0.5,
            "perf/max_memory_allocated_gb": [1.0, 2.0],
        }
    )
    assert got == {
        "train/clip/total_norm_pre": 2.0,
        "train/clip/norm/q_proj": 3.0,
        "train/clip/skips_total": 5.0,
        "train/loss": 0.5,
        "perf/max_memory_allocated_gb": 2.0,
    }
    assert all(type(v) is float for v in got.values())
    with pytest.raises(TypeError, match="'bad'"):
        reduce_for_loggers({"bad": object()})
