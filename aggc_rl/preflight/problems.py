"""What a preflight check finds: a :class:`Problem` names the key, the value, what is wrong and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: ``kind`` of a problem that only a real start can judge: files that a dry run (``--cfg job``) or the
#: cluster scripts may not have made yet. A value problem is wrong whatever is on disk.
FILES = "files"
VALUE = "value"
#: ``kind`` of a problem that a missing package causes (a prerequisite, not a setting): a dry run warns, a
#: real start exits 1 when every problem is of this kind (the cluster scripts' "missing prerequisite").
MISSING = "missing"


@dataclass(frozen=True)
class Problem:
    """One refused setting: ``key=value: what. fix``."""

    key: str
    value: object
    what: str
    fix: str
    kind: str = FILES

    def __str__(self) -> str:
        fix = f" {self.fix}" if self.fix else ""
        return f"{self.key}={self.value!r}: {self.what}.{fix}"


class PreflightError(ValueError):
    """Every problem found before Ray started; the message lists each on its own line."""

    def __init__(self, problems: Sequence[Problem], what: str = "the run") -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:  # one problem, one line
            super().__init__(f"preflight refused {what} before starting anything: {self.problems[0]}")
            return
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"preflight refused {what} before starting anything ({len(self.problems)} problem(s)):\n{lines}"
        )

    @property
    def exit_code(self) -> int:
        """1 when only prerequisites are missing (install something), else 2 (a bad setting or file)."""
        return 1 if all(p.kind == MISSING for p in self.problems) else 2


def raise_if_any(problems: Sequence[Problem], what: str = "the run") -> None:
    if problems:
        raise PreflightError(problems, what)
