"""The checkpoint verl will resume, and its clipper state checked before Ray (real clipper states on disk)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aggc_rl.clipping import GradClipper, rule_knobs
from aggc_rl.preflight.clip_state import CLIP_STATE_PATTERN, check_clip_state
from aggc_rl.preflight.problems import Problem
from aggc_rl.preflight.resume import Resume, find_resume
from aggc_rl.preflight.run_dir import finished_message
from aggc_rl.tiny import lm_loss, tiny_qwen2

PREFIX = "actor_rollout_ref.actor"


def save_checkpoint(root: Path, step: int, method: str = "aggc", world: int = 1, actor: bool = True) -> Path:
    """A ``global_step_N`` folder with a real clipper state per rank and the tracker pointing at it."""
    model = tiny_qwen2(seed=0)
    lm_loss(model, torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))).backward()
    clipper = GradClipper(model.named_parameters(), method)
    clipper.clip_()
    engine_dir = root / f"global_step_{step}" / ("actor" if actor else "")
    engine_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(world):
        torch.save(clipper.state_dict(), engine_dir / CLIP_STATE_PATTERN.format(world=world, rank=rank))
    (root / "latest_checkpointed_iteration.txt").write_text(str(step))
    return engine_dir


def resume_of(root: Path, sft: bool = False, **trainer) -> Resume:
    found = find_resume({"default_local_dir": str(root), "resume_mode": "auto", **trainer}, sft=sft)
    assert isinstance(found, Resume), found
    return found


def check(root: Path, method: str = "aggc", world: int = 1, **config) -> list[Problem]:
    clip_config = {"aggc": {**rule_knobs("aggc"), **config.pop("aggc", {})}, **config}
    return check_clip_state(resume_of(root), world, method, clip_config, 1.0, PREFIX)


def test_resume_is_found_as_verl_finds_it(tmp_path):
    root = tmp_path / "ckpt"
    assert find_resume({"default_local_dir": str(root), "resume_mode": "auto"}, sft=False) is None
    save_checkpoint(root, 2)
    found = resume_of(root)
    assert (found.step, found.step_dir.name, found.engine_dir.name) == (2, "global_step_2", "actor")
    assert find_resume({"default_local_dir": str(root), "resume_mode": "disable"}, sft=False) is None
    other = tmp_path / "other" / "global_step_7"
    other.mkdir(parents=True)
    # GRPO's auto ignores resume_from_path; SFT's auto and every resume_path take it.
    assert resume_of(root, resume_from_path=str(other)).step == 2
    assert resume_of(root, sft=True, resume_from_path=str(other)).engine_dir == other
    path = {"default_local_dir": str(root), "resume_mode": "resume_path", "resume_from_path": str(other)}
    assert find_resume(path, sft=False).engine_dir == other / "actor"
    (root / "latest_checkpointed_iteration.txt").write_text("two")
    problem = find_resume({"default_local_dir": str(root), "resume_mode": "auto"}, sft=False)
    assert isinstance(problem, Problem) and "not a step number" in str(problem)


def test_a_matching_state_passes_and_each_kind_of_unusable_state_is_refused(tmp_path):
    root = tmp_path / "ckpt"
    engine_dir = save_checkpoint(root, 3, world=2)
    assert check(root, world=2) == []
    assert check(root, world=1) == []  # another world size reads the replicated state of rank 0

    (mismatch,) = check(root, world=2, aggc={"beta": 0.9}, grouping="tensor")
    assert "knob 'beta': saved 0.99, now 0.9" in str(mismatch) and "grouping: saved 'module_type'" in str(
        mismatch
    )
    (other_rule,) = check(root, method="adagc", world=2)
    assert "saved for other clip settings" in str(other_rule) and "'adagc'" in str(other_rule)
    assert check(root, world=2, aggc={"beta": 0.9}, resume_mismatch="reset") == []  # the engine resets

    state = engine_dir / CLIP_STATE_PATTERN.format(world=2, rank=1)
    state.write_bytes(state.read_bytes()[:200])
    (damaged,) = check(root, world=2)
    assert damaged.value == str(state) and "is damaged and cannot be read" in str(damaged)
    # Step 3 is the only checkpoint: no earlier step is offered; reset and a new directory are.
    assert "earlier checkpoint" not in str(damaged)
    assert f"{PREFIX}.clip_config.resume_mismatch=reset" in str(
        damaged
    ) and "new trainer.default_local_dir" in str(damaged)

    save_checkpoint(root, 1, world=2)
    (root / "latest_checkpointed_iteration.txt").write_text("3")
    (damaged,) = check(root, world=2)
    assert f"trainer.resume_from_path={root / 'global_step_1'}" in str(damaged)  # now it exists
    (mismatch,) = check(root, world=2, aggc={"beta": 0.9})
    # The run's earlier steps share its settings: not a way out of a mismatch.
    assert "resume with the checkpoint's settings" in str(mismatch) and "earlier checkpoint" not in str(
        mismatch
    )

    for path in engine_dir.glob("clip_state_*"):
        path.unlink()
    (missing,) = check(root, world=2)
    assert "holds no clipper state" in str(missing) and "checkpoint step 3" in str(missing)


def test_files_of_one_checkpoint_that_disagree_are_refused(tmp_path):
    root = tmp_path / "ckpt"
    engine_dir = save_checkpoint(root, 1, world=2)
    other = torch.load(engine_dir / CLIP_STATE_PATTERN.format(world=2, rank=1), weights_only=True)
    other["groups"] = list(reversed(other["groups"]))
    torch.save(other, engine_dir / CLIP_STATE_PATTERN.format(world=2, rank=1))
    (problem,) = check(root, world=2)
    assert "disagree on the groups" in str(problem)


@pytest.mark.parametrize(("total", "finished"), [(2, True), (3, False), (None, False)])
def test_a_checkpoint_at_the_last_step_is_a_finished_run(tmp_path, total, finished):
    root = tmp_path / "ckpt"
    save_checkpoint(root, 2)
    message = finished_message(resume_of(root), {"total_training_steps": total})
    assert (message is not None) == finished
    if finished:
        assert "the run is finished" in message and "nothing is trained or saved" in message
