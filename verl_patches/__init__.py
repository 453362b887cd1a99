"""Everything that touches verl internals lives here, each module written for one verl version.

Modules call :func:`require_verl` at import, so a different verl fails at once with a
message that names both versions, instead of misbehaving deep inside a training run.
"""

from __future__ import annotations

#: The verl release every module in this package was written and tested against.
VERL_VERSION = "0.9.1"


class VerlVersionError(RuntimeError):
    """The installed verl is not the version these patches were written for."""


def require_verl(module: str, written_for: str = VERL_VERSION) -> None:
    """Fail with a clear message unless the installed verl is ``written_for``."""
    try:
        import verl
    except ImportError as err:  # pragma: no cover - verl is a hard dependency
        raise VerlVersionError(f"{module} needs verl=={written_for}, but verl is not installed") from err
    installed = getattr(verl, "__version__", "unknown")
    if installed != written_for:
        raise VerlVersionError(
            f"{module} was written for verl=={written_for} and relies on its internals, but verl=={installed} "
            f"is installed. Install verl=={written_for} (pip install -c constraints/cpu.txt -e .) or port {module}."
        )
