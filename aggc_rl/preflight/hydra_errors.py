"""Hydra's composition errors as one line that names the override and, for an unknown key, what is allowed.

Hydra raises them with a multi-line message (and a traceback when they escape), and its advice for an
unknown key is to add it with ``+``, which for our configs means a setting that nothing reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aggc_rl.preflight.compose import compose_plain

_NOISE = (
    "To append to your config",
    "See https://",
    "object_type=",
    "full_key:",
    "Either remove + prefix",
    "Or add a second +",
)
#: At most this many allowed keys are listed.
MAX_KEYS = 40


class BadOverride(ValueError):
    """An override that Hydra cannot apply; the message is one line."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` and its causes, on one line, without Hydra's search path and advice."""
    parts: list[str] = []
    seen: BaseException | None = err
    while seen is not None and len(parts) < 3:
        text = str(seen).split("Config search path:")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith(_NOISE)]
        if lines:
            parts.append(" ".join(lines).rstrip("."))
        seen = seen.__cause__
    return ": ".join(parts) or type(err).__name__


def _full_key(err: BaseException) -> str | None:
    for seen in (err, err.__cause__):
        if seen is not None and "not in struct" in str(seen):
            for line in str(seen).splitlines():
                if line.strip().startswith("full_key:"):
                    return line.split(":", 1)[1].strip()
    return None


def allowed_keys(config: Any, full_key: str) -> tuple[str, list[str]]:
    """The deepest existing parent of ``full_key`` in ``config`` and its keys."""
    node, parent = config, []
    for part in full_key.split(".")[:-1]:
        if not isinstance(node, dict) or part not in node:
            break
        node, parent = node[part], [*parent, part]
    return ".".join(parent) or "<top level>", sorted(map(str, node)) if isinstance(node, dict) else []


def compose_or_refuse(config_dir: str, config_name: str, overrides: Sequence[str]) -> dict[str, Any]:
    """:func:`compose_plain`, raising :class:`BadOverride` with one line when Hydra or OmegaConf refuses."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose_plain(config_dir, config_name, overrides)
    except (HydraException, OmegaConfBaseException) as err:
        message = one_line(err)
        key = _full_key(err)
        if key is not None:
            parent, keys = allowed_keys(compose_plain(config_dir, config_name, []), key)
            more = f", ... ({len(keys)} in all)" if len(keys) > MAX_KEYS else ""
            message += f"; allowed under {parent}: {', '.join(keys[:MAX_KEYS])}{more}"
        raise BadOverride(f"bad override: {message}") from err
