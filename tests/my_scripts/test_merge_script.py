"""my_scripts/merge_ckpt/merge.sh: picks the numerically latest (or the given) step, merges it, and loads it.

The checkpoint is a real one: verl's FSDP2 engine with our clip engine (``aggc_fsdp2``, as the run scripts
use) on the CPU platform saves ``global_step_2`` and ``global_step_10``, one PPO step apart, so the merged
weights tell which step was merged. ``global_step_10`` sorts before ``global_step_2`` as text: picking it
proves the numeric order the official script lacked. A given STEP / TARGET_DIR and the error cases need no
real merge: a fake PYTHON records what would reach verl's merger, and empty shard files stand in for a step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.distributed import run_distributed

from verl_cpu import harness

REPO_ROOT = Path(__file__).resolve().parents[2]
MERGE = REPO_ROOT / "my_scripts" / "merge_ckpt" / "merge.sh"
VOCAB_SIZE = 96  # random token ids are drawn below this (the tiny vocabulary is larger)


def run_merge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("STEP", "TARGET_DIR")}
    full_env.update(PYTHON=sys.executable, **(env or {}))
    return subprocess.run(
        ["bash", str(MERGE), *args], capture_output=True, text=True, env=full_env, timeout=300, check=False
    )


# --- a real checkpoint with two steps ----------------------------------------------------------------------


def _save_two_steps(rank: int, world: int, model_path: str, root: str) -> None:
    harness.use_cpu_platform()
    cfg = harness.clip_ppo_config(model_path, 4, "actor_rollout_ref.actor.clip=aggc")
    setup = harness.engine_setup(cfg)
    engine = harness.build_engine(setup)
    loss_fn = harness.ppo_loss_fn(setup)
    for step, save_as in ((0, 2), (1, 10)):
        batch = harness.make_ppo_batch(setup, cfg, harness.make_padded_batch(VOCAB_SIZE, seed=step))
        harness.train_step(engine, batch, loss_fn)
        engine.save_checkpoint(os.path.join(root, f"global_step_{save_as}", "actor"), global_step=save_as)
        params = harness.full_params(engine)
        if rank == 0:
            torch.save(params, os.path.join(root, f"params_step_{save_as}.pt"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """``root/global_step_{2,10}/actor`` from a 2-rank FSDP2 run, plus each step's full parameters."""
    tmp = tmp_path_factory.mktemp("merge")
    model_path = harness.make_tiny_model_dir(tmp / "model")
    root = tmp / "checkpoints"
    previous = os.environ.get("VERL_PLATFORM")
    os.environ["VERL_PLATFORM"] = "cpu"  # inherited by the spawned ranks
    try:
        run_distributed(_save_two_steps, 2, model_path, str(root))
    finally:
        if previous is None:
            os.environ.pop("VERL_PLATFORM", None)
        else:
            os.environ["VERL_PLATFORM"] = previous
    return root


def merged_state(target: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(target, torch_dtype=torch.bfloat16).state_dict()


def assert_merged_is_step(target: Path, root: Path, step: int, other: int) -> None:
    merged = merged_state(target)
    expected = torch.load(root / f"params_step_{step}.pt")
    rival = torch.load(root / f"params_step_{other}.pt")
    assert set(expected) <= set(merged)
    differs = False
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor.bfloat16(), rtol=0, atol=0, msg=name)
        differs |= not torch.equal(merged[name], rival[name].bfloat16())
    assert differs, f"steps {step} and {other} have the same weights: the test could not tell them apart"


@pytest.mark.slow
def test_merges_the_numerically_latest_step_and_it_loads(checkpoints):
    listed = sorted(p.name for p in checkpoints.glob("global_step_*"))
    assert listed == ["global_step_10", "global_step_2"]  # as text, 2 comes last
    out = run_merge(str(checkpoints))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    target = checkpoints / "global_step_10" / "merged_hf"
    assert f"merged model (step 10): {target}" in out.stdout
    assert "loaded with transformers: Qwen2ForCausalLM" in out.stdout
    assert_merged_is_step(target, checkpoints, step=10, other=2)


FAKE_PYTHON = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_LOG"
prev=""
for arg in "$@"; do
    if [ "$prev" = "--target_dir" ]; then mkdir -p "$arg"; fi
    prev=$arg
done
"""


def test_a_given_step_from_a_run_dir_into_a_given_target(tmp_path):
    """STEP (argument or environment) and TARGET_DIR reach verl's merger; a run's OUT_DIR works as CKPT_DIR."""
    run_dir = tmp_path / "run"
    fake_steps(run_dir / "checkpoints", 2, 9, 10)
    fake_python, log = tmp_path / "python", tmp_path / "calls.log"
    fake_python.write_text(FAKE_PYTHON)
    fake_python.chmod(0o755)
    env = {"PYTHON": str(fake_python), "FAKE_LOG": str(log)}
    for args, extra_env in (
        ((str(run_dir), "9", "hf9"), {}),
        ((str(run_dir),), {"STEP": "9", "TARGET_DIR": "hf9"}),
    ):
        log.unlink(missing_ok=True)
        out = subprocess.run(
            ["bash", str(MERGE), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, **env, **extra_env},
            check=False,
        )
        assert out.returncode == 0, out.stderr
        merger, load_check = log.read_text().splitlines()
        actor = run_dir / "checkpoints" / "global_step_9" / "actor"
        assert merger == f"-m verl.model_merger merge --backend fsdp --local_dir {actor} --target_dir hf9"
        assert load_check == "- hf9"
        assert f"merged model (step 9): {tmp_path / 'hf9'}" in out.stdout


# --- clear errors, no Python needed ------------------------------------------------------------------------


def test_missing_checkpoint_dir(tmp_path):
    out = run_merge(str(tmp_path / "nope"))
    assert out.returncode == 1
    assert f"checkpoint directory CKPT_DIR='{tmp_path / 'nope'}' does not exist" in out.stderr


def test_no_global_step_dirs(tmp_path):
    (tmp_path / "global_step_x").mkdir()  # not a step number
    out = run_merge(str(tmp_path))
    assert out.returncode == 1
    assert "no global_step_N directory in CKPT_DIR=" in out.stderr


def fake_steps(root: Path, *steps: int, world: int = 2) -> None:
    for step in steps:
        actor = root / f"global_step_{step}" / "actor"
        actor.mkdir(parents=True)
        (actor / "fsdp_config.json").write_text("{}")
        for rank in range(world):
            (actor / f"model_world_size_{world}_rank_{rank}.pt").write_bytes(b"")


def test_requested_step_missing_lists_the_available_ones_in_order(tmp_path):
    fake_steps(tmp_path, 10, 2, 9)
    out = run_merge(str(tmp_path), "5")
    assert out.returncode == 1
    assert "STEP=5 has no checkpoint" in out.stderr and "available steps: 2 9 10" in out.stderr
    out = run_merge(str(tmp_path), env={"STEP": "last"})
    assert out.returncode == 2
    assert "STEP='last' is invalid; allowed: latest or one of: 2 9 10" in out.stderr


def test_incomplete_checkpoint_is_refused_before_merging(tmp_path):
    fake_steps(tmp_path, 3)
    (tmp_path / "global_step_3" / "actor" / "model_world_size_2_rank_1.pt").unlink()
    out = run_merge(str(tmp_path))
    assert out.returncode == 1
    assert "lacks model_world_size_2_rank_1.pt (world size 2): incomplete checkpoint" in out.stderr
    (tmp_path / "global_step_3" / "actor" / "fsdp_config.json").unlink()
    out = run_merge(str(tmp_path))
    assert "has no fsdp_config.json: not a complete verl FSDP actor checkpoint" in out.stderr


def test_usage_error():
    out = run_merge()
    assert out.returncode == 2 and "usage: merge.sh CKPT_DIR" in out.stderr
