"""The stability lab (v2) from its command line, at its smallest, and its report from hand-built records.

The command runs in a child process (it initialises a gloo process group and fixes verl's platform): one seed,
two arms, one fault, on the small test proxy. Checked: the records and the report are written, a second run
with the same settings reuses every record, other settings are refused, and the lab-only engine is not
reachable from a normal run. The report's statistics are checked on records whose answers are known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggc_rl.inprocess import faults
from aggc_rl.lab import twins_report

REPO = Path(__file__).resolve().parents[2]
CMD = [
    "--quick",
    "--test-proxy",
    "--seeds",
    "1",
    "--arms",
    "none,global",
    "--faults",
    "loss_x100",
    "--jobs",
    "1",
]


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, VERL_PLATFORM="cpu", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["AGGC_RL_CACHE"] = str(cache)
    return env


def _lab(out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "aggc_rl.lab", "--out", str(out), *CMD, *extra]
    return subprocess.run(cmd, cwd=REPO, env=_env(cache), capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_lab_runs_reports_and_continues(tmp_path):
    out, cache = tmp_path / "lab", tmp_path / "cache"
    proc = _lab(out, cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warm state in" in proc.stderr and "headline" in proc.stdout, (
        proc.stdout[-2000:] + proc.stderr[-2000:]
    )
    records = {p.name: json.loads(p.read_text()) for p in (out / "twins").glob("*.json")}
    assert set(records) == {"s0__none.json", "s0__global.json"}
    fault = records["s0__none.json"]["faults"]["loss_x100"]
    assert fault["fired"] and not fault["null"] and fault["fault_step"]["all"]["error"] > 0.05
    text = (out / "report" / "report.md").read_text()
    assert "### loss_x100" in text and "Paired against `none`" in text
    assert (out / "report" / "twins_m_error.png").stat().st_size > 1000

    again = _lab(out, cache)  # every record is reused: no warm state is built
    assert again.returncode == 0 and "warm state in" not in again.stderr, again.stderr[-2000:]
    other = _lab(out, cache, "--faults", "lm_head_x100")
    assert other.returncode != 0 and "written with other settings" in other.stderr, other.stderr[-2000:]


def test_bad_arms_and_faults_are_refused_by_name():
    proc = subprocess.run(
        [sys.executable, "-m", "aggc_rl.lab", "--arms", "none,nope", "--faults", "loss_x7"],
        cwd=REPO, env=_env(REPO / "unused"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "['nope', 'loss_x7']" in proc.stderr and "aggc_official" in proc.stderr


def test_a_normal_run_cannot_build_the_lab_engine():
    probe = (
        "import verl_patches.plugin, verl_patches.engine.clip_engine\n"
        "from verl.workers.engine import EngineRegistry\n"
        "print(sorted({b for t in EngineRegistry._engines.values() for b in t}))\n"
    )
    env = _env(REPO / "unused")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "aggc_fsdp2" in proc.stdout and "aggc_fsdp2_lab" not in proc.stdout, proc.stdout


# -- the report's statistics, on records with known answers ----------------------------------------------------


def _fault(error: float, drift: float = 1.0, null: bool = False) -> dict:
    trace = {"m_error": [error, error], "v_ratio": [1.0 + error, 1.0]}
    return {
        "null": null, "fired": True, "skipped": False, "scales": [1.0], "kl_end": error / 100,
        "fault_step": {"all": {"error": error, "cosine": 1.0 - error / 10}, "g": {"error": error, "cosine": 1.0}},
        "drift": {"all": [drift, drift], "g": [drift, drift]}, "moments": {"all": trace, "g": trace},
        "fault": {"kind": "loss_spike", "step": 1, "scale": 100.0, "group": "v_proj", "duration": 1},
    }  # fmt: skip


def _records(per_arm: dict[str, list[float]], null_seed: int | None = None) -> list[dict]:
    out = []
    for arm, errors in per_arm.items():
        for seed, e in enumerate(errors):
            out.append({"arm": arm, "seed": seed, "arm_desc": arm,
                        "faults": {"spike": _fault(e, drift=2 * e, null=seed == null_seed)}})  # fmt: skip
    return out


def test_paired_ratios_verdicts_identities_and_null_faults(tmp_path):
    recs = _records(
        {
            "none": [1.0, 2.0, 4.0, 8.0, 3.0],
            "global": [0.1, 0.2, 0.4, 0.8, 0.3],  # x0.1 of none in every seed: lower, a constant ratio
            "aggc": [
                1.0,
                2.0,
                4.0,
                8.0,
                3.0,
            ],  # the same as none in every seed: an identity, not a measurement
            "noisy": [1.1, 1.8, 4.4, 7.2, 3.0],  # around none: no detectable difference
        },
        null_seed=4,
    )
    by, nulls, arms, _ = twins_report.collect(recs)
    assert nulls["spike"] == [(4, a) for a in ("none", "global", "aggc", "noisy")]
    assert sorted(by[("spike", "none")]) == [0, 1, 2, 3]  # the null seed is excluded for every arm
    seeds = twins_report.seeds_of(by, "spike", arms)
    series = lambda arm: twins_report._series(by, "spike", arm, "error", seeds)  # noqa: E731
    cell, verdict = twins_report.paired(series("global"), series("none"), log=True)
    assert cell == "0.1 in every seed" and verdict == "lower"
    assert twins_report.paired(series("aggc"), series("none"), log=True) == ("= ref", "identical")
    assert twins_report.paired(series("noisy"), series("none"), log=True)[1] == "no detectable difference"
    assert twins_report.cell([2.0, 2.0, 2.0], log=True) == "2 in every seed"  # not "2 ± 0"
    text = twins_report.write(recs, tmp_path, {"plan": "test"}).read_text()
    assert "Null (zero gradient where the fault acts; excluded for every arm): seeds [4]" in text
    assert (
        "- `global`: vs none: lower." in text and "- `aggc`: vs none: identical; vs global: higher." in text
    )
    assert "| spike (n=4) |" in text


def test_a_plan_whose_fault_lands_inside_a_rule_s_warm_up_is_refused():
    import dataclasses

    from aggc_rl.lab import twins

    twins.FULL.check()  # every arm's warm-up (AdaGC 100, ZClip 25, the guard's 50) ends before the fault
    quick_adagc = dataclasses.replace(twins.QUICK, arms=("global", "adagc", "global_guard"))
    with pytest.raises(ValueError, match=r"\{'adagc': 100, 'global_guard': 50\}.*this plan's 20"):
        quick_adagc.check()


def test_reward_noise_is_never_null_and_a_spike_of_nothing_is():
    from aggc_rl.lab import twins

    assert twins._target(twins.FAULTS["reward_noise"]) is None  # it makes its own gradient
    assert twins._target(twins.FAULTS["lm_head_x100"]) == "lm_head"
    assert twins._target(twins.FAULTS["loss_x100"]) == "all"


def test_a_fault_is_described_by_the_fields_its_kind_uses():
    # A loss spike's record carries the dataclass's default group (v_proj); the report must not name it.
    rec = {"kind": "loss_spike", "step": 150, "scale": 100.0, "group": "v_proj", "duration": 1, "seed": 3}
    assert faults.describe(rec) == "`loss_spike` at optimizer step 151 (scale 100, duration 1)"
    rec = {"kind": "inf_group", "step": 150, "scale": 100.0, "group": "lm_head", "duration": 1, "seed": 0}
    assert faults.describe(rec) == "`inf_group` at optimizer step 151 (group lm_head)"
