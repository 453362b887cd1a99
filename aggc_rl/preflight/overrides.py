"""Spellings of a Hydra override that the command line takes before Hydra sees it.

The short form ``actor.<key>=...`` (the project's own docs say "``actor.clip=aggc``") means
``actor_rollout_ref.actor.<key>``: Hydra would refuse it, and its advice, ``+actor.clip=aggc``, adds a
top-level ``actor`` block that nothing reads, so the run would train with ``clip=global``. The entry point
rewrites the short form (and says so on the console) and refuses any other spelling of the switch: a
``clip`` or ``clip_config`` key anywhere but in its real place.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

#: Where the RL actor lives in verl's config; ``actor.<key>`` is short for ``<RL_ACTOR>.<key>``.
RL_ACTOR = "actor_rollout_ref.actor"
SHORT_ACTOR = "actor"
#: Keys that only ever mean the clip switch, wherever they appear in an override.
SWITCH_KEYS = ("clip", "clip_config")
#: Hydra flags followed by a value (the value is not an override).
FLAGS_WITH_VALUE = (
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
)


def split_override(arg: str) -> tuple[str, str, str]:
    """``"+a.b=1"`` -> ``("+", "a.b", "=1")``: Hydra's prefix (``+``, ``++``, ``~`` or none), key and rest."""
    head, eq, value = arg.partition("=")
    prefix = head[: len(head) - len(head.lstrip("+~"))]
    return prefix, head[len(prefix) :], eq + value


def override_positions(argv: Sequence[str]) -> list[int]:
    """Indices of the Hydra overrides in ``argv`` (not flags, not a flag's value)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in FLAGS_WITH_VALUE
            continue
        out.append(i)
    return out


def expand_short_form(argv: Sequence[str], say: TextIO | None = None) -> list[str]:
    """``actor.<key>`` -> ``actor_rollout_ref.actor.<key>``, each rewrite said once on ``say`` (stderr).

    ``+actor.<key>=v`` becomes ``++actor_rollout_ref.actor.<key>=v`` (set it, or add it if absent): the
    ``+`` was typed to make Hydra accept the short key, and the full key usually exists already.
    """
    out = list(argv)
    for i in override_positions(argv):
        prefix, key, rest = split_override(argv[i])
        if key != SHORT_ACTOR and not key.startswith(SHORT_ACTOR + "."):
            continue
        full_prefix = "++" if prefix in ("+", "++") else prefix
        out[i] = f"{full_prefix}{RL_ACTOR}{key[len(SHORT_ACTOR) :]}{rest}"
        print(f"{argv[i]} -> {out[i]}", file=say or sys.stderr, flush=True)
    return out


def misplaced_switch(argv: Sequence[str], home: str) -> str | None:
    """Why an override names ``clip``/``clip_config`` outside ``home`` (the switch's real place), or None."""
    for i in override_positions(argv):
        _, key, rest = split_override(argv[i])
        parts = key.split(".")
        hit = next((j for j, part in enumerate(parts) if part in SWITCH_KEYS), None)
        if hit is None or ".".join(parts[:hit]) == home:
            continue
        where = f"{home}.{'.'.join(parts[hit:])}"
        short = f" (short form: actor.{'.'.join(parts[hit:])}{rest})" if home == RL_ACTOR else ""
        return (
            f"{argv[i]}: {key!r} is not a setting of this config, and the clip switch would stay at its "
            f"default; the switch is {where}{rest}{short}"
        )
    return None
