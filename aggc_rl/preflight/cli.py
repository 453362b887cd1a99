"""The command-line side of the preflight, shared by every entry point (train, sft).

Hydra answers ``--cfg job`` without calling ``main``, and its own errors name a key but not what is allowed,
so each entry point looks at ``argv`` itself before Hydra (and verl) run: :func:`check_before_start` composes
the config without verl, runs the entry point's checks, and exits with :data:`REFUSED` and every problem.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from aggc_rl.preflight.problems import PreflightError, Problem

#: Exit status of a run refused before it started (as the cluster scripts' bad settings).
REFUSED = 2
_CFG_FLAGS = ("--cfg", "-c")
_FLAGS_WITH_VALUE = (
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
#: Flags that select another primary config or search path: the preflight's own compose would check the wrong one.
OTHER_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def refuse(err: Exception, code: int = REFUSED) -> NoReturn:
    print(f"error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def overrides_of(argv: Sequence[str]) -> list[str]:
    """The Hydra overrides in ``argv``, without Hydra's flags and the ``hydra.*`` settings."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE
            continue
        if not arg.lstrip("+~").startswith("hydra"):
            out.append(arg)
    return out


#: Hydra answers these and exits without calling ``main``: nothing runs, so there is nothing to check.
HELP_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc")


def nothing_runs(argv: Sequence[str]) -> bool:
    """``--help``, ``--hydra-help``, ``--info`` ...: Hydra prints and exits; the preflight must not refuse that."""
    return any(a.split("=", 1)[0] in HELP_FLAGS for a in argv)


def other_config(argv: Sequence[str]) -> bool:
    """``-cn`` / ``-cp`` / ``-cd`` (or ``--flag=value``): the run composes a config the preflight does not know."""
    return any(a in OTHER_CONFIG_FLAGS or a.split("=", 1)[0] in OTHER_CONFIG_FLAGS for a in argv)


def wants_cfg(argv: Sequence[str]) -> bool:
    """A ``--cfg job`` (or ``-c``) run: Hydra prints the config and never calls ``main``."""
    return any(a in _CFG_FLAGS or a.startswith("--cfg=") for a in argv)


def check_before_start(
    plain: Mapping[str, Any],
    argv: Sequence[str],
    checks: Callable[[Mapping[str, Any]], list[Problem]],
    split: Callable[[list[Problem]], tuple[list[Problem], list[Problem]]],
) -> None:
    """Refuse every problem ``checks`` finds; a ``--cfg job`` run only warns about files not made yet."""
    problems = checks(plain)
    if wants_cfg(argv):
        problems, files = split(problems)
        for problem in files:
            print(f"warning: a real start would refuse: {problem}", file=sys.stderr)
    if problems:
        error = PreflightError(problems)
        refuse(error, error.exit_code)
