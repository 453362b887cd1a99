"""What a real start checks in its run directory before Ray (or the SFT ranks) start.

In order: the directory's lock (one run per directory, :mod:`aggc_rl.preflight.run_lock`); whether the
checkpoint verl would resume is already at ``trainer.total_training_steps`` (a finished run stays finished:
nothing is trained or saved); and the clipper state of that checkpoint
(:mod:`aggc_rl.preflight.clip_state`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aggc_rl.preflight.clip_state import check_clip_state
from aggc_rl.preflight.problems import Problem, raise_if_any
from aggc_rl.preflight.resume import Resume, find_resume, local_dir
from aggc_rl.preflight.run_lock import hold


@dataclass(frozen=True)
class ClipSettings:
    """Where the switch lives in a composed config (``actor_rollout_ref.actor`` or ``engine``)."""

    prefix: str
    method: str
    clip_config: Mapping[str, Any] | None
    max_norm: float


def finished_message(resume: Resume, trainer: Mapping[str, Any]) -> str | None:
    """The "nothing to do" line when the resumed checkpoint is at ``trainer.total_training_steps``."""
    total = trainer.get("total_training_steps")
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0 or resume.step < total:
        return None
    return (
        f"the run is finished: the checkpoint it would resume ({resume.step_dir}, from {resume.how}) is at step "
        f"{resume.step}, and trainer.total_training_steps={total}; nothing is trained or saved. Raise "
        "trainer.total_training_steps to train on, or give a new run another trainer.default_local_dir."
    )


def prepare_run_dir(
    config: Mapping[str, Any], clip: ClipSettings, *, sft: bool, world: int, lock: bool, what: str
) -> str | None:
    """Lock the run directory (when ``lock``), then return the finished message or None to go on.

    Raises :class:`~aggc_rl.preflight.run_lock.RunDirLocked` for a directory in use and
    :class:`~aggc_rl.preflight.problems.PreflightError` for a resume that cannot work.
    """
    trainer = config.get("trainer") or {}
    root = local_dir(trainer)
    if lock and root is not None:
        hold(root, what)
    resume = find_resume(trainer, sft=sft)
    if isinstance(resume, Problem):
        raise_if_any([resume], what)
    if resume is None:
        return None
    done = finished_message(resume, trainer)
    if done is not None:
        return done
    raise_if_any(
        check_clip_state(resume, world, clip.method, clip.clip_config, clip.max_norm, clip.prefix), what
    )
    return None
