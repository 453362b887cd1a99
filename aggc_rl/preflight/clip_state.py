"""The clipper state of the checkpoint a run will resume, checked before Ray starts.

The ``aggc_fsdp2`` engine writes ``clip_state_world_size_W_rank_R.pt`` beside verl's per-rank files and
refuses, when it loads them, a missing, damaged or mismatched one -- but only after Ray, the workers and
the model are up. The same check needs only the tracker and one small file per rank, so it runs here
first; the engine's check stays as the last line of defence (and is the only one that sees the model's
groups: here the rule, its knobs and the grouping are compared, and each file's groups with the others').
"""

from __future__ import annotations

import re
from pathlib import Path

from aggc_rl.preflight.problems import Problem
from aggc_rl.preflight.resume import Resume, earlier_steps

CLIP_STATE_PATTERN = "clip_state_world_size_{world}_rank_{rank}.pt"
CHECKPOINT = "checkpoint"


def state_files(engine_dir: Path, world: int) -> list[Path | None]:
    """Per rank, the file its engine will read: its own, else (another world size) the first one found."""
    others = sorted(engine_dir.glob(CLIP_STATE_PATTERN.format(world="*", rank="*")))
    out: list[Path | None] = []
    for rank in range(world):
        own = engine_dir / CLIP_STATE_PATTERN.format(world=world, rank=rank)
        out.append(own if own.is_file() else (others[0] if others else None))
    return out


def step_folder(path: str | Path) -> Path:
    """The ``global_step_N`` folder that holds ``path`` (the GRPO actor's files are one level down)."""
    path = Path(path)
    for folder in (path, *path.parents):
        if re.fullmatch(r"global_step_\d+", folder.name):
            return folder
    return path


def ways_out(step_dir: Path, reset_key: str, earlier: bool = True, first: str | None = None) -> str:
    """What the user can do about an unusable state: only ways that exist for this checkpoint folder.

    ``earlier``: an earlier checkpoint with a clipper state is a way out (a damaged or missing file; not
    other settings, which the earlier steps of the same run share). ``first``: a way out to offer first.
    """
    options = [first] if first else []
    pattern = CLIP_STATE_PATTERN.format(world="*", rank="*")
    usable = [p for p in earlier_steps(step_dir) if any(p.rglob(pattern))] if earlier else []
    if usable:
        options.append(
            f"resume from an earlier checkpoint (trainer.resume_mode=resume_path trainer.resume_from_path={usable[0]}"
            + (f"; also {', '.join(p.name for p in usable[1:4])}" if len(usable) > 1 else "")
            + ")"
        )
    options.append(f"set {reset_key}=reset to start a fresh clipper state on purpose")
    options.append("train from scratch in a new trainer.default_local_dir")
    return "Either " + ", or ".join(options) + "."


def check_clip_state(
    resume: Resume, world: int, method: str, clip_config, max_norm: float, prefix: str
) -> list[Problem]:
    """Problems of the clipper state ``resume`` holds for a run of ``world`` ranks with these clip settings."""
    import torch

    from aggc_rl.clipping import resolve_clip
    from aggc_rl.clipping.clipper import state_differences

    spec = resolve_clip(method, clip_config, max_norm, prefix=prefix)
    if spec.resume_mismatch == "reset":
        return []  # the engine starts a fresh state where it cannot use the saved one, and says so
    reset_key = f"{prefix}.clip_config.resume_mismatch"
    where = f"checkpoint step {resume.step} (from {resume.how})"
    files = state_files(resume.engine_dir, world)
    if not any(files):
        return [
            Problem(
                CHECKPOINT,
                str(resume.engine_dir),
                f"{where} holds no clipper state ({CLIP_STATE_PATTERN.format(world=world, rank=0)}): it was not "
                "written by the aggc_fsdp2 engine, and resuming without it would restart the clip statistics at 0",
                ways_out(resume.step_dir, reset_key),
            )
        ]
    rule = spec.build_rule()
    scheme = rule.default_scheme if spec.grouping is None else spec.grouping
    groups_seen: list[str] | None = None
    for path in dict.fromkeys(f for f in files if f is not None):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            differences = state_differences(saved, rule, scheme)
        except Exception as err:  # a truncated zip, a pickle error, a dict that is not ours: all "damaged"
            reason = " ".join(str(err).split())[:300]
            return [
                Problem(CHECKPOINT, str(path), f"the clipper state of {where} is damaged and cannot be read "
                        f"({type(err).__name__}: {reason})", ways_out(resume.step_dir, reset_key))
            ]  # fmt: skip
        if differences:
            return [
                Problem(CHECKPOINT, str(path), f"the clipper state of {where} was saved for other clip settings "
                        f"than this run's ({prefix}.clip={method}): {'; '.join(differences)}",
                        ways_out(resume.step_dir, reset_key, earlier=False,
                                 first="resume with the checkpoint's settings"))
            ]  # fmt: skip
        if groups_seen is None:
            groups_seen = list(saved["groups"])
        elif list(saved["groups"]) != groups_seen:
            return [
                Problem(CHECKPOINT, str(path), f"the clipper states of {where} disagree on the groups between "
                        "ranks (the state is replicated, so the files are not from one run)",
                        ways_out(resume.step_dir, reset_key))
            ]  # fmt: skip
    return []
