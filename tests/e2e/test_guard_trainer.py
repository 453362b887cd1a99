"""verl's real GRPO trainer on CPU stops when the step guard skips too many steps in a row.

``guard.skip_above`` far below any real norm makes every step a skip; with ``max_consecutive_skips=2`` the
run must stop at training step 2 with the error naming the step, the reason and the non-finite groups,
instead of training on nothing, and the skipped step's metrics must have been logged.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from aggc_rl.demo import DemoSettings, read_metrics, trainer_env, trainer_overrides
from aggc_rl.tiny import TinySpec, build

pytestmark = pytest.mark.slow

SETTINGS = DemoSettings(steps=3, prompts_per_step=2, samples_per_prompt=2, response_length=16, lr=1e-3)
GUARD = [
    "actor_rollout_ref.actor.entropy_coeff=0.01",  # non-zero gradients even when every reward is equal
    "actor_rollout_ref.actor.clip_config.guard.skip_above=1e-12",
    "actor_rollout_ref.actor.clip_config.guard.max_consecutive_skips=2",
    "trainer.val_before_train=false",
]


def test_max_consecutive_skips_stops_verls_trainer(tmp_path):
    model = build(tmp_path / "model", TinySpec(hidden_size=64))
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "aggc_rl.data.knights_knaves", "--out", str(data), "--people", "2",
         "--train", "16", "--test", "4", "--seed", "0"],
        check=True, capture_output=True,
    )  # fmt: skip
    run = tmp_path / "run"
    overrides = trainer_overrides(model, data, run, "aggc", SETTINGS)
    out = subprocess.run(
        [sys.executable, "-m", "aggc_rl.train", *overrides, *GUARD],
        env=trainer_env(run),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-4000:]
    assert "SkippedStepsError" in log, log[-4000:]
    assert "clip_config.guard stopped training at training step 2" in log, log[-4000:]
    assert "2 optimizer steps in a row were skipped (guard.max_consecutive_skips=2)" in log
    assert "because the total norm was above guard.skip_above=1e-12" in log
    assert "groups with non-finite norms: none" in log
    records = [r for r in read_metrics(run / "metrics.jsonl") if "critic/score/mean" in r["data"]]
    assert [r["step"] for r in records] == [1], "step 1 is skipped and logged; step 2 stops the run"
    first = records[0]["data"]
    assert first["actor/clip/spike_skipped"] == 1.0 and first["actor/clip/skips_spike_total"] == 1.0
    assert first["actor/clip/skipped"] == 0.0 and first["actor/grad_norm"] > 1e-12
