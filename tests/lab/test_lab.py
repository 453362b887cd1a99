"""The stability lab at its smallest: two arms, one fault, one seed, three steps (item 6 of issue 13).

The lab runs in a child process (it initialises a gloo process group and fixes verl's platform). Checked:
the fault is where it must be (the spiked group's pre-clip norm at the fault step is >= 10x its clean
value in every arm, the other groups' are unchanged, and the steps before it are identical to the clean
twin's), the report files are written, and the lab-only engine is not reachable from a normal run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggc_rl.lab import measure

REPO = Path(__file__).resolve().parents[2]
ARMS = ("global", "aggc")
FAULT_STEP = 2  # 1-based, as on the command line


def _env() -> dict[str, str]:
    env = dict(os.environ, VERL_PLATFORM="cpu", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="module")
def lab_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab")
    cmd = [
        sys.executable, "-m", "aggc_rl.lab", "--out", str(out), "--arms", ",".join(ARMS),
        "--faults", "group_spike", "--seeds", "1", "--steps", "3", "--fault-step", str(FAULT_STEP),
        "--prompts", "2", "--samples", "4", "--response-length", "40", "--warm-start", "40",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[4/4]" in proc.stdout and "headline" in proc.stdout, proc.stdout[-2000:]
    return out


def _runs(out: Path) -> dict[tuple[str, str], dict]:
    runs = {}
    for path in (out / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        runs[(rec["arm"], rec["fault"]["kind"])] = rec
    return runs


def test_the_spike_is_visible_in_every_arm(lab_out):
    runs = _runs(lab_out)
    assert set(runs) == {(a, f) for a in ARMS for f in ("none", "group_spike")}
    k = FAULT_STEP - 1
    for arm in ARMS:
        clean, spiked = runs[(arm, "none")]["steps"], runs[(arm, "group_spike")]["steps"]
        assert clean[k]["pre_norm"]["v_proj"] > 0, f"{arm}: no gradient at the fault step (zero advantages?)"
        assert spiked[k]["pre_norm"]["v_proj"] >= 10 * clean[k]["pre_norm"]["v_proj"], arm
        assert [s["fault_fired"] for s in spiked] == [t == k for t in range(len(spiked))], arm
        assert not any(s["fault_fired"] for s in clean), arm
        for group, norm in clean[k]["pre_norm"].items():  # only the spiked group was touched
            if group != "v_proj":
                assert spiked[k]["pre_norm"][group] == pytest.approx(norm, rel=1e-9), (arm, group)
        for t in range(k):  # the same data, sampling and weights before the fault
            assert spiked[t]["reward"] == clean[t]["reward"] and spiked[t]["update"] == clean[t]["update"], (
                arm,
                t,
            )
        assert spiked[k]["update"] != clean[k]["update"], (
            f"{arm}: the spike changed nothing the optimizer applied"
        )


def test_the_report_is_written(lab_out):
    report = lab_out / "report"
    for name in ("report.md", "summary.png", "traces.png"):
        assert (report / name).stat().st_size > 0, name
    text = (report / "report.md").read_text()
    assert "## Headline" in text and "## group_spike" in text
    for arm in ARMS:
        assert f"| `{arm}` |" in text
    rows = measure.comparisons(json.loads(p.read_text()) for p in (lab_out / "runs").glob("*.json"))
    assert {r["arm"] for r in rows} == set(ARMS)
    assert all(r["pre_norm_x"] >= 10 and math.isfinite(r["untouched"]) for r in rows)


def test_a_killed_lab_continues_from_the_runs_done(lab_out):
    victim = next((lab_out / "runs").glob("aggc__group_spike__*.json"))
    victim.unlink()
    cmd = [
        sys.executable, "-m", "aggc_rl.lab", "--out", str(lab_out), "--arms", ",".join(ARMS),
        "--faults", "group_spike", "--seeds", "1", "--steps", "3", "--fault-step", str(FAULT_STEP),
        "--prompts", "2", "--samples", "4", "--response-length", "40", "--warm-start", "40",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done earlier") == 3 and victim.exists(), proc.stdout[-2000:]


def test_a_normal_run_cannot_build_the_lab_engine():
    probe = (
        "import verl_patches.plugin, verl_patches.engine.clip_engine\n"
        "from verl.workers.engine import EngineRegistry\n"
        "print(sorted({b for t in EngineRegistry._engines.values() for b in t}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "aggc_fsdp2" in proc.stdout and "aggc_fsdp2_lab" not in proc.stdout, proc.stdout


def _record(kind: str, updates: list[dict[str, float]], rewards: list[float], seed: int = 0) -> dict:
    return {
        "arm": "a", "seed": seed, "groups": ["v_proj", "q_proj"], "greedy_acc": 0.0,
        "fault": {"kind": kind, "step": 1, "scale": 100.0, "group": "v_proj"},
        "steps": [
            {"update": u, "reward": r, "pre_norm": {"v_proj": 1.0, "q_proj": 1.0}, "grad_norm": 1.0,
             "skipped": False, "clipped": False, "min_scale": 1.0, "probe_kl": 0.1}
            for u, r in zip(updates, rewards, strict=True)
        ],
    }  # fmt: skip


def test_measures_against_the_clean_twin():
    clean = _record("none", [{"v_proj": 1.0, "q_proj": 1.0}] * 4, [0.0, 0.0, 0.0, 0.0])
    spiked = _record(
        "group_spike",
        [
            {"v_proj": 1.0, "q_proj": 1.0},
            {"v_proj": 3.0, "q_proj": 0.5},
            *[{"v_proj": 1.0, "q_proj": 1.0}] * 2,
        ],
        [0.0, 0.0, -1.0, 0.5],
    )
    (row,) = measure.comparisons([clean, spiked])
    assert row["spiked"] == pytest.approx(3.0) and row["untouched"] == pytest.approx(0.5)
    assert row["update"] == pytest.approx(math.sqrt(9.25) / math.sqrt(2))
    assert row["recovery"] == 1  # below the clean floor at step 2, back at step 3
    mean, half, n = measure.mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
