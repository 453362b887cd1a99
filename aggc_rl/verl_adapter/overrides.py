"""Check command-line overrides of the clip keys before Hydra sees them.

Hydra refuses an unknown key with "Key 'x' is not in struct", which names the key but not what is
allowed; for our keys we say both, before any config is composed or worker started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from aggc_rl.clipping import RULE_NAMES, rule_knobs
from aggc_rl.verl_adapter.clip_config import BLOCK_METHODS, CLIP_CONFIG_KEY, CLIP_KEY, ClipConfig


def check_clip_overrides(argv: Sequence[str]) -> None:
    """Raise ValueError for an override of an unknown clip key or method."""
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key == CLIP_KEY:
            if value not in RULE_NAMES:
                raise ValueError(f"{CLIP_KEY}={value!r} is invalid; allowed: {', '.join(RULE_NAMES)}")
        elif key.startswith(CLIP_CONFIG_KEY + "."):
            _check_clip_config_key(key, key[len(CLIP_CONFIG_KEY) + 1 :].split("."))


def _check_clip_config_key(full_key: str, parts: list[str]) -> None:
    top = [f.name for f in fields(ClipConfig)]
    if parts[0] not in top:
        raise ValueError(f"unknown key {full_key!r}; allowed under {CLIP_CONFIG_KEY}: {', '.join(top)}")
    if parts[0] in BLOCK_METHODS and len(parts) > 1:
        knobs = list(rule_knobs(parts[0]))
        if parts[1] not in knobs or len(parts) > 2:
            raise ValueError(f"unknown knob {full_key!r}; allowed for {parts[0]}: {', '.join(knobs)}")
