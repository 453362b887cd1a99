"""reward/unscored and reward/timeouts per training step, through verl's real trainer on CPU.

Two GRPO steps of 2 prompts x 2 samples, in file order (``data.shuffle=false``): step 1 is two
Knights-and-Knaves puzzles (scored as usual), step 2 one puzzle and one GSM8K question. GSM8K is scored by
``math_verify`` with a deadline no call can meet (``reward_kwargs.timeout_s``), so both GSM8K samples time
out twice (the retry included) and the router marks them unscored: a run can meet this on a busy machine,
and the preflight, which checks the rows, passes them (they are all scorable). Step 1 must log 0 and 0,
step 2 must log 2 and 2, in the file logger's records and on the console.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aggc_rl import metrics as names
from aggc_rl.data import gsm8k
from aggc_rl.demo import DemoSettings, read_metrics, trainer_env, trainer_overrides
from aggc_rl.tiny import TinySpec, build

pytestmark = pytest.mark.slow

SETTINGS = DemoSettings(steps=2, prompts_per_step=2, samples_per_prompt=2, response_length=16, lr=1e-3)
EXTRA = [
    "data.shuffle=false",  # step 1 = rows 0-1, step 2 = rows 2-3
    "trainer.val_before_train=false",
    "trainer.test_freq=-1",
    "trainer.save_freq=-1",
    "+reward.custom_reward_function.reward_kwargs.method=math_verify",
    "+reward.custom_reward_function.reward_kwargs.timeout_s=0.000001",
]


def mixed_train_file(kk: Path, out: Path) -> None:
    """Three K&K rows, then one GSM8K row (the same columns; verl reads extra_info loosely)."""
    rows = pq.read_table(kk).to_pylist()[:3]
    question = gsm8k.build_row(
        "Tom has 3 apples and buys 4 more. How many apples has he?", "3+4=7\n#### 7", "train", 3
    )
    rows.append({**question, "extra_info": {"split": "train", "index": 3}})
    pq.write_table(pa.Table.from_pylist(rows), out)


def test_unscored_samples_are_counted_at_their_training_step(tmp_path):
    model = build(tmp_path / "model", TinySpec(hidden_size=64))
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "aggc_rl.data.knights_knaves", "--out", str(data), "--people", "2",
         "--train", "4", "--test", "2", "--seed", "0"],
        check=True, capture_output=True,
    )  # fmt: skip
    mixed_train_file(data / "train.parquet", data / "train.parquet")
    run = tmp_path / "run"
    overrides = trainer_overrides(model, data, run, "global", SETTINGS, steps=2)
    done = subprocess.run(
        [sys.executable, "-m", "aggc_rl.train", *overrides, *EXTRA],
        env=trainer_env(run),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    records = {r["step"]: r["data"] for r in read_metrics(run / "metrics.jsonl")}
    assert sorted(records) == [1, 2]
    counts = {
        step: (m.get(names.REWARD_UNSCORED), m.get(names.REWARD_TIMEOUTS)) for step, m in records.items()
    }
    assert counts == {1: (0.0, 0.0), 2: (2.0, 2.0)}
    # the unscored samples scored 0 and were trained on: 4 samples per step, nothing dropped
    assert records[2]["response/aborted_ratio"] == 0.0

    # the console logger got the same dict
    console = {
        int(m.group(1)): line for line in log.splitlines() if (m := re.search(r"\bstep:(\d+) - ", line))
    }
    assert f"{names.REWARD_UNSCORED}:0.0" in console[1] and f"{names.REWARD_TIMEOUTS}:0.0" in console[1]
    assert f"{names.REWARD_UNSCORED}:2.0" in console[2] and f"{names.REWARD_TIMEOUTS}:2.0" in console[2]
