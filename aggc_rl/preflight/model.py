"""Is a model path something verl can load: an existing model directory or a well-formed hub id?

verl hands ``model.path`` to ``transformers``/``huggingface_hub``, which read a local directory or else
treat the string as a hub repo id; a path that is neither fails only inside the workers, after Ray started,
with "Repo id must be in the form ..." (naming neither the key nor the path).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from aggc_rl.preflight.problems import Problem

_TRUE = frozenset({"1", "true", "yes", "on"})
#: Remote schemes verl copies itself (``verl.utils.fs.copy_to_local``); not checked here.
REMOTE_PREFIXES = ("hdfs://",)


def is_offline(env: Mapping[str, str]) -> bool:
    """``HF_HUB_OFFLINE`` (or transformers' older ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(
        env.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir(env: Mapping[str, str]) -> Path:
    """Where huggingface_hub caches models under this environment."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_id_error(value: str) -> str | None:
    """Why ``value`` is not a well-formed hub repo id (huggingface_hub's own rule), or None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as err:
        return str(err).split(". ")[0]
    return None


def in_hub_cache(repo_id: str, env: Mapping[str, str]) -> bool:
    """The model's config.json is in the local hub cache (so an offline run can load it)."""
    snapshots = hub_cache_dir(env) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any((s / "config.json").exists() for s in snapshots.iterdir())


def check_model_path(key: str, value: object, env: Mapping[str, str]) -> list[Problem]:
    """Problems of one model path setting (an empty list when verl can load it)."""
    if not isinstance(value, str) or not value.strip():
        return [
            Problem(
                key, value, "no model is set", "Set it to a model directory or a hub id (org/name).", "value"
            )
        ]
    if value.startswith(REMOTE_PREFIXES):
        return []
    path = Path(value).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return []
        return [
            Problem(
                key,
                value,
                f"the directory {path} holds no config.json, so it is not a Hugging Face model",
                "Point it at the directory that holds config.json (a merged checkpoint: "
                "my_scripts/merge_ckpt/merge.sh), or use a hub id (org/name).",
            )
        ]
    if path.exists():
        return [Problem(key, value, f"{path} is a file, not a model directory", "Point it at the directory.")]
    bad_id = hub_id_error(value)
    if bad_id is not None:
        return [
            Problem(
                key,
                value,
                f"no such directory, and not a hub id either ({bad_id})",
                "Fix the path (it is resolved from the directory the run starts in) or use a hub id (org/name).",
            )
        ]
    first = Path(value).parts[0]
    if "/" in value and Path(first).is_dir():
        return [
            Problem(
                key,
                value,
                f"no such directory (./{first} exists, so this reads as a local path rather than a hub id)",
                "Fix the path, or make the model there first.",
            )
        ]
    if is_offline(env) and not in_hub_cache(value, env):
        return [
            Problem(
                key,
                value,
                f"HF_HUB_OFFLINE is set and the model is not in the local hub cache ({hub_cache_dir(env)})",
                f"Download it first (huggingface-cli download {value}), unset HF_HUB_OFFLINE, or point HF_HUB_CACHE "
                "at the cache that holds it.",
            )
        ]
    return []
