"""``python -m aggc_rl.lr_sweep`` at its smallest: 1 arm x 2 lrs x 1 seed x 2 steps, two workers,
resumed, with the report; bad input refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggc_rl.lr_sweep import __main__ as lr_sweep
from aggc_rl.lr_sweep import plans

REPO = Path(__file__).resolve().parents[2]


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, VERL_PLATFORM="cpu", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["AGGC_RL_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arms", "global,nope"], "unknown arm"),
        (["--lrs", "1e-3,-1"], "must be > 0"),
        (["--lrs", "x"], "comma-separated numbers"),
        (["--seeds", "0"], "--seeds=0 must be >= 1"),
        (["--hidden", "30"], "multiple of 4"),
        (["--steps", "1"], "steps=1 must be >= 2"),
    ],
)
def test_bad_input_is_refused(args, message, capsys):
    with pytest.raises(SystemExit):
        lr_sweep.parse_args(args)
    assert message in capsys.readouterr().err


def test_the_arms_are_the_issue_s_and_none_never_clips():
    assert set(plans.ARMS) == {"none", "global", "aggc", "aggc_official", "adagc", "zclip"}
    assert plans.ARMS["none"].knobs["max_norm"] >= 1e30
    full = plans.FULL
    assert len(full["lrs"]) >= 5 and max(full["lrs"]) / min(full["lrs"]) >= 100 and full["seeds"] >= 3
    assert full["heldout"] >= 1000


@pytest.mark.parametrize("table", ["grpo", "sft"])
def test_every_arm_composes_into_the_trainer_config(table, tmp_path):
    """Each arm's overrides compose with configs/aggc_ppo_trainer.yaml, and the knobs land where the engine
    reads them (``none``: verl's optim.clip_grad at 1e30, so global clipping never fires)."""
    from aggc_rl.inprocess.size import LabSize
    from aggc_rl.tiny import build_tokenizer
    from verl_cpu import harness

    model = tmp_path / "model"
    build_tokenizer().save_pretrained(model)
    arms = plans.SFT_ARMS if table == "sft" else plans.ARMS
    for name, arm in arms.items():
        cfg = harness.clip_ppo_config(str(model), 10, *arm.overrides(LabSize()))
        actor = cfg.actor_rollout_ref.actor
        assert actor.clip == arm.method, name
        if name == "none":
            assert actor.optim.clip_grad >= 1e30
        for knob, value in arm.knobs.items():
            if knob != "max_norm":
                assert actor.clip_config[arm.method][knob] == value, (name, knob)


@pytest.mark.slow
def test_a_tiny_sweep_runs_resumes_and_reports(tmp_path):
    out = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "aggc_rl.lr_sweep", "--out", str(out), "--arms", "aggc",
        "--lrs", "1e-3,1e-2", "--seeds", "1", "--steps", "2", "--prompts", "2", "--samples", "4",
        "--eval-every", "2", "--heldout", "8", "--hidden", "32", "--warm-start", "4", "--jobs", "2",
    ]  # fmt: skip
    env = _env(tmp_path / "cache")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == 2
    rec = json.loads(runs[0].read_text())
    assert [e["step"] for e in rec["evals"]] == [0, 2] and len(rec["steps"]) == 2
    step = rec["steps"][0]
    assert len(step["scales"]) == len(rec["clip_groups"]) and set(step["pre_norm"]) == set(rec["groups"])
    assert {"collapsed", "nonfinite", "final_acc", "start_acc"} <= set(rec)
    report = (out / "report" / "lr_sweep.md").read_text()
    assert "| aggc |" in report and "Learning-rate sensitivity" in report
    assert (out / "report" / "lr_sweep.png").exists()
    # A second start finds every run done and only rewrites the report.
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done earlier") == 2
