"""my_scripts/compare_stability.sh: every arm with the same seed and data, each in its own run directory, then
the stability report (``python -m aggc_rl.report RUN_DIR... --out DIR``).

The dry run goes through the real run scripts; the orchestration (order, failures, report call) runs a fake
run script and a fake ``PYTHON``, so nothing trains and the report module need not exist yet.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from script_sandbox import Sandbox, as_dict, hydra_arg_blocks, make_sandbox, run

SCRIPT = "compare_stability.sh"


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    box = make_sandbox(tmp_path)
    box.env["COMPARE_DIR"] = str(tmp_path / "cmp")
    return box


def test_dry_run_prints_each_arm_with_the_same_seed_and_data_then_the_report(sandbox, tmp_path):
    cmp_dir = tmp_path / "cmp"
    out = run(
        sandbox,
        SCRIPT,
        "trainer.total_training_steps=3",
        DRY_RUN="1",
        ARMS="global aggc adagc",
        SCRIPT="run_qwen2.5-0.5b_gsm8k.sh",
        SEED="7",
        OUT_DIR=None,
    )
    assert out.returncode == 0, out.stderr
    blocks = [as_dict(block) for block in hydra_arg_blocks(out.stdout)]
    assert [b["actor_rollout_ref.actor.clip"] for b in blocks] == ["global", "aggc", "adagc"]
    for key in (
        "data.train_files",
        "data.val_files",
        "data.seed",
        "actor_rollout_ref.rollout.seed",
        "actor_rollout_ref.actor.data_loader_seed",
        "actor_rollout_ref.model.path",
        "trainer.total_training_steps",
    ):
        assert len({b[key] for b in blocks}) == 1, key
    assert blocks[0]["data.seed"] == "7" and blocks[0]["trainer.total_training_steps"] == "3"
    for arm, block in zip(("global", "aggc", "adagc"), blocks, strict=True):
        assert block["trainer.experiment_name"] == f"qwen2.5-0.5b_gsm8k_{arm}_s7"
        assert block["trainer.default_local_dir"] == f"{cmp_dir}/{arm}/checkpoints"
        assert (
            block["ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"]
            == f"{cmp_dir}/{arm}/metrics.jsonl"
        )
    report = out.stdout.splitlines()[-1].split()
    assert report == [
        str(sandbox.python),
        "-m",
        "aggc_rl.report",
        *(f"{cmp_dir}/{arm}" for arm in ("global", "aggc", "adagc")),
        "--out",
        f"{cmp_dir}/report",
    ]
    assert not cmp_dir.exists()
    # Only look-ups: the reward file, and whether flash_attn is there (found, never imported).
    assert all(
        call.startswith("-c import aggc_rl.rewards") or 'find_spec("flash_attn")' in call
        for call in sandbox.python_calls()
    )


def test_default_arms_are_global_then_aggc(sandbox):
    out = run(sandbox, SCRIPT, DRY_RUN="1")
    assert out.returncode == 0, out.stderr
    clips = [as_dict(b)["actor_rollout_ref.actor.clip"] for b in hydra_arg_blocks(out.stdout)]
    assert clips == ["global", "aggc"]
    assert "run_qwen2.5-3b_gsm8k.sh" in out.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ARMS": "global zclipp"},
            "ARMS contains 'zclipp'; allowed: global, aggc, aggc_official, aggc_lora, adagc, zclip",
        ),
        ({"ARMS": "aggc aggc"}, "ARMS lists 'aggc' twice"),
        ({"ARMS": " "}, "ARMS is empty"),
        ({"SCRIPT": "run_nope.sh"}, "SCRIPT='run_nope.sh' not found; allowed: one of run_"),
        ({"SEED": "x"}, "SEED='x' is invalid; allowed: a whole number >= 0"),
    ],
)
def test_bad_settings_are_refused(sandbox, env, message):
    out = run(sandbox, SCRIPT, DRY_RUN="1", **env)
    assert out.returncode == 2
    assert message in out.stderr


# --- orchestration with a fake run script and a fake PYTHON -----------------------------------------------------

FAKE_RUN = """#!/bin/sh
echo "CLIP=$CLIP SEED=$SEED OUT_DIR=$OUT_DIR EXPERIMENT=$EXPERIMENT DATA_DIR=$DATA_DIR args=$*" >> "$FAKE_LOG"
if [ "$CLIP" = "${FAIL_EARLY:-}" ]; then exit 1; fi
mkdir -p "$OUT_DIR"
echo started > "$OUT_DIR/train.log"
if [ "$CLIP" = "${FAIL_LATE:-}" ]; then exit 3; fi
exit 0
"""


def fake_setup(sandbox: Sandbox) -> tuple[Path, Path]:
    runs_log, report_log = sandbox.root / "runs.log", sandbox.root / "report.log"
    fake_run = sandbox.root / "run_fake.sh"
    fake_run.write_text(FAKE_RUN)
    fake_run.chmod(0o755)
    fake_python = sandbox.root / "fake_python"
    fake_python.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> "{report_log}"\n')
    fake_python.chmod(0o755)
    sandbox.env.update(SCRIPT=str(fake_run), PYTHON=str(fake_python), FAKE_LOG=str(runs_log), SEED="3")
    return runs_log, report_log


def test_arms_run_in_order_into_their_own_dirs_then_the_report(sandbox, tmp_path):
    runs_log, report_log = fake_setup(sandbox)
    out = run(sandbox, SCRIPT, "x=1", ARMS="global aggc adagc", CLIP="ignored")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CLIP, OUT_DIR and EXPERIMENT from the environment are ignored" in out.stdout
    cmp_dir, data = tmp_path / "cmp", sandbox.env["DATA_DIR"]
    assert runs_log.read_text().splitlines() == [
        f"CLIP={arm} SEED=3 OUT_DIR={cmp_dir}/{arm} EXPERIMENT=fake_{arm}_s3 DATA_DIR={data} args=x=1"
        for arm in ("global", "aggc", "adagc")
    ]
    assert report_log.read_text().split() == [
        "-m",
        "aggc_rl.report",
        f"{cmp_dir}/global",
        f"{cmp_dir}/aggc",
        f"{cmp_dir}/adagc",
        "--out",
        f"{cmp_dir}/report",
    ]


def test_an_arm_failing_mid_run_does_not_stop_the_others(sandbox):
    runs_log, report_log = fake_setup(sandbox)
    out = run(sandbox, SCRIPT, FAIL_LATE="global")
    assert out.returncode == 1
    assert len(runs_log.read_text().splitlines()) == 2
    assert "aggc_rl.report" in report_log.read_text()  # the diverged arm's logs are part of the story
    assert "arm global failed (exit 3) after it started" in out.stdout
    assert "failed arm(s): global" in out.stdout


def test_an_arm_failing_before_it_starts_stops_the_comparison(sandbox):
    runs_log, report_log = fake_setup(sandbox)
    out = run(sandbox, SCRIPT, FAIL_EARLY="global")
    assert out.returncode == 1
    assert len(runs_log.read_text().splitlines()) == 1
    assert not report_log.exists()
    assert "arm global failed before training started (exit 1)" in out.stdout
