"""Which checkpoint verl will resume, found the way verl finds it, without verl.

verl 0.9.1 resumes from ``trainer.default_local_dir/latest_checkpointed_iteration.txt`` (the tracker, a step
number) under ``trainer.resume_mode=auto``, or from ``trainer.resume_from_path`` under ``resume_path``; the
SFT trainer's ``auto`` also takes ``resume_from_path`` when it is set (``CheckpointHandler``), the GRPO
trainer's does not (``RayPPOTrainer._load_checkpoint``). A relative directory is taken from the working
directory. The GRPO actor's files are in ``global_step_N/actor``, SFT's in ``global_step_N`` itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggc_rl.preflight.problems import VALUE, Problem

TRACKER = "latest_checkpointed_iteration.txt"
STEP_DIR = "global_step_{}"
RESUME_MODES = ("auto", "disable", "resume_path")
RL_ACTOR_DIR = "actor"


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run will load: its step, its ``global_step_N`` folder and the engine's folder in it."""

    step: int
    step_dir: Path
    engine_dir: Path
    how: str  # "the tracker <file>" or "trainer.resume_from_path"


def local_dir(trainer: Mapping[str, Any]) -> Path | None:
    """``trainer.default_local_dir`` as verl reads it (relative to the working directory)."""
    value = trainer.get("default_local_dir")
    return None if not value else Path(os.path.abspath(str(value)))


def step_of(path: str | Path) -> int | None:
    found = re.findall(r"global_step_(\d+)", str(path))
    return int(found[-1]) if found else None


def find_resume(trainer: Mapping[str, Any], sft: bool) -> Resume | Problem | None:
    """The checkpoint verl will resume, None when it trains from scratch, or the problem verl would hit."""
    mode = trainer.get("resume_mode", "auto")
    if mode not in RESUME_MODES:
        return Problem(
            "trainer.resume_mode", mode, "unknown resume mode", f"Allowed: {', '.join(RESUME_MODES)}.", VALUE
        )
    if mode == "disable":
        return None
    given = trainer.get("resume_from_path")
    engine_sub = "" if sft else RL_ACTOR_DIR
    if mode == "resume_path" or (sft and given):
        if not given or step_of(given) is None:
            return Problem(
                "trainer.resume_from_path", given, "not a checkpoint folder (verl needs .../global_step_N)",
                "Give a global_step_N folder, or trainer.resume_mode=auto to resume from the latest.",
            )  # fmt: skip
        step_dir = Path(os.path.abspath(str(given)))
        if not step_dir.is_dir():
            return Problem(
                "trainer.resume_from_path", given, "no such folder", "Give an existing global_step_N folder."
            )
        return Resume(step_of(given), step_dir, step_dir / engine_sub, "trainer.resume_from_path")
    root = local_dir(trainer)
    if root is None or not (root / TRACKER).is_file():
        return None  # verl: "Training from scratch"
    text = (root / TRACKER).read_text().strip()
    if not text.isdigit():
        return Problem(
            "trainer.default_local_dir", str(root), f"its {TRACKER} holds {text[:40]!r}, not a step number",
            f"Write the step of the last complete checkpoint into {root / TRACKER}, or delete it to start afresh.",
        )  # fmt: skip
    step_dir = root / STEP_DIR.format(int(text))
    if not step_dir.is_dir():
        return None  # verl prints that the folder is missing and trains from scratch
    return Resume(int(text), step_dir, step_dir / engine_sub, f"the tracker {root / TRACKER}")


def earlier_steps(step_dir: Path) -> list[Path]:
    """Other ``global_step_M`` folders (M smaller) beside ``step_dir``, newest first."""
    step = step_of(step_dir.name)
    if step is None or not step_dir.parent.is_dir():
        return []
    found = [(step_of(p.name), p) for p in step_dir.parent.glob("global_step_*") if p.is_dir()]
    return [p for s, p in sorted(found, key=lambda x: -(x[0] or 0)) if s is not None and s < step]
