"""Lab v2's replay: twins replayed from one warm state are bit-identical until the fault, and the measured
error at the fault grows with the spike's size in the ``none`` arm (the measurement can see a fault)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggc_rl.lab.replay import ReplaySize

REPO = Path(__file__).resolve().parents[2]


def test_the_warm_up_must_reach_adam_s_steady_regime():
    with pytest.raises(ValueError, match="1/\\(1-beta2\\)"):
        ReplaySize(warmup=10, beta2=0.98).check()
    ReplaySize(warmup=50, beta2=0.98).check()
    ReplaySize(warmup=5, beta2=0.8).check()  # 1/(1-0.8) is 5.000000000000001 in floats: still accepted


_RUN = """
import json, sys, torch
torch.set_num_threads(1)
from pathlib import Path
from aggc_rl.lab import replay
from aggc_rl.inprocess.faults import Fault
from aggc_rl.inprocess.loop import ensure_process_group
from aggc_rl.lr_sweep.plans import ARMS
from aggc_rl.proxy.sampler import Sampler
from aggc_rl.proxy.policy import TEST_PROXY, proxy_policy
ensure_process_group("cpu")
model = proxy_policy(TEST_PROXY, eval_count=0, log=lambda *_: None)
size = replay.ReplaySize(warmup=5, beta2=0.8, replay=3, prompts=2, samples=4, lr=1e-3)
state = replay.warm_state(model, 0, size, log=lambda *a: None)
def dist(a, b):
    return sum(float((a[n] - b[n]).double().norm() ** 2) for n in a) ** 0.5
def step(tr, t):
    return {n: tr[t]["params"][n] - tr[t - 1]["params"][n] for n in tr[t]["params"]}
cfg, setup, engine, loss_fn = replay.build(model, ARMS["none"], size)
c1 = replay.branch(engine, loss_fn, state, size)
c2 = replay.branch(engine, loss_fn, state, size)
out = {"twins": [dist(a["params"], b["params"]) for a, b in zip(c1, c2)],
       "adam_twins": [max(float((a["adam"][n]["exp_avg_sq"] - b["adam"][n]["exp_avg_sq"]).abs().max()) for n in a["adam"]) for a, b in zip(c1, c2)],
       "warm_grads": len(state.warm_grads), "batches": len(state.batches), "errors": {}}
for scale in (10.0, 1000.0):
    f = replay.branch(engine, loss_fn, state, size, Fault("loss_spike", 1, scale=scale))
    out["errors"][scale] = {"start": dist(f[0]["params"], c1[0]["params"]),
                            "fault": dist(step(f, 1), step(c1, 1)) / dist(step(c1, 1), {n: 0 * v for n, v in step(c1, 1).items()}),
                            "fired": f[1]["fault_fired"]}
# A null fault: the fault step's batch has zero advantages (every group's rewards uniform), so its gradient is 0.
from aggc_rl.lab import twins
state.batches[0]["advantages"].zero_()
c0 = replay.branch(engine, loss_fn, state, size)
f0 = replay.branch(engine, loss_fn, state, size, twins.FAULTS["loss_x100"])
real = replay.branch(engine, loss_fn, replay.warm_state(model, 0, size, log=lambda *a: None), size)
out["null"] = twins.measure(c0, f0, engine.measure_groups, twins.FAULTS["loss_x100"])["null"]
out["not_null"] = twins.measure(real, real, engine.measure_groups, twins.FAULTS["loss_x100"])["null"]
out["null_moved"] = dist(c0[1]["params"], c0[0]["params"])
# On-policy: the branch samples from its own weights with the clean continuation's prompts and seeds, so a clean
# on-policy twin reproduces the recorded run (same weights, same samples) and a faulted one departs from it.
warm = replay.warm_state(model, 0, size, log=lambda *a: None)
on = replay.OnPolicy(Sampler(model, compact=True), setup, cfg)
op_clean = replay.branch(engine, loss_fn, warm, size, on_policy=on)
op_fault = replay.branch(engine, loss_fn, warm, size, twins.FAULTS["loss_x100"], on_policy=on)
out["op_rewards"] = [t["reward"] for t in op_clean[1:]]
out["recorded_rewards"] = warm.rewards[size.warmup:]
out["op_replayed_gap"] = dist(op_clean[-1]["params"], real[-1]["params"])
out["op_fault_gap"] = dist(op_fault[-1]["params"], op_clean[-1]["params"])
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One small proxy for the module's runs (AGGC_RL_CACHE)."""
    return tmp_path_factory.mktemp("cache")


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, VERL_PLATFORM="cpu", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["AGGC_RL_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.slow
def test_twins_are_identical_until_the_fault_and_the_error_grows_with_the_spike(cache):
    proc = subprocess.run(
        [sys.executable, "-c", _RUN], cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=900
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["warm_grads"] == 5 and out["batches"] == 4  # the fault step and 3 replayed steps
    assert (
        out["twins"] == [0.0] * 5 and out["adam_twins"] == [0.0] * 5
    )  # clean twins: bit-identical throughout
    small, large = out["errors"]["10.0"], out["errors"]["1000.0"]
    assert small["start"] == large["start"] == 0.0  # every branch starts from the same warm state
    assert small["fired"] and large["fired"]
    assert 0.05 < small["fault"] < large["fault"], (small, large)
    # The null fault is detected from the clean gradient (Adam's momentum still moved the weights), a real one not.
    assert out["null"] is True and out["not_null"] is False and out["null_moved"] > 0, out
    assert out["op_rewards"] == out["recorded_rewards"] and out["op_replayed_gap"] == 0.0, out
    assert out["op_fault_gap"] > 0, out


def _trajectory(steps):
    """A fake twin: a list of (params, exp_avg, exp_avg_sq, pre_norm) per step for one 2-group model."""
    import torch

    out = []
    for p, m, v, g in steps:
        out.append({
            "params": {"a": torch.tensor(p[0]), "b": torch.tensor(p[1])},
            "adam": {"a": {"exp_avg": torch.tensor(m[0]), "exp_avg_sq": torch.tensor(v[0])},
                     "b": {"exp_avg": torch.tensor(m[1]), "exp_avg_sq": torch.tensor(v[1])}},
            "pre_norm": {"A": g[0], "B": g[1]},
        })  # fmt: skip
    return out


def test_errors_are_differences_of_twins_not_sizes():
    from aggc_rl.lab import errors

    groups = {"A": ["a"], "B": ["b"]}
    start = ([[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], (0.0, 0.0))
    clean = _trajectory(
        [start, ([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]], (1.0, 1.0))]
    )
    # Faulted: group A's update has the same size but the opposite direction; B unchanged.
    faulted = _trajectory(
        [start, ([[-1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, 1.0]], [[4.0, 4.0], [1.0, 1.0]], (9.0, 1.0))]
    )
    step = errors.fault_step(clean, faulted, groups)
    assert step["A"] == {"error": 2.0, "cosine": -1.0}  # a norm ratio would read 1.0 here
    assert step["B"] == {"error": 0.0, "cosine": 1.0}
    assert step["all"]["error"] == pytest.approx(2.0 / 2**0.5)
    assert errors.drift(clean, faulted, groups)["A"] == [2.0]
    mom = errors.moments(clean, faulted, groups)
    assert mom["A"] == {"m_error": [2.0], "v_ratio": [4.0]} and mom["B"] == {
        "m_error": [0.0],
        "v_ratio": [1.0],
    }
    assert not errors.is_null(clean)
    null = _trajectory(
        [start, ([[0.1, 0.0], [0.0, 0.1]], [[0.1, 0.0], [0.0, 0.1]], [[1.0, 1.0], [1.0, 1.0]], (0.0, 0.0))]
    )
    assert errors.is_null(null) and errors.is_null(
        null, "A"
    )  # momentum moved the weights, the gradient was 0
