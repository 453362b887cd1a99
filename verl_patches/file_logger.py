"""verl's file logger appends instead of truncating, so a resumed run keeps the metrics of its first part.

Written for verl 0.9.1: ``verl.utils.tracking.FileLogger.__init__`` opens its JSONL with mode ``"wb"``,
so ``trainer.resume_mode=auto`` silently erased every step logged before the restart. Readers of the
log (``aggc_rl.report``) take the last record of a step that appears twice (a step re-run after a crash).
"""

from __future__ import annotations

from verl_patches.version import require_verl

require_verl(__name__)

import os  # noqa: E402

from verl.utils import tracking  # noqa: E402

_PATCHED = "_aggc_rl_appends"


def append_file_logger() -> None:
    """Make ``FileLogger`` open its file in append mode; idempotent."""
    cls = tracking.FileLogger
    if getattr(cls, _PATCHED, False):
        return

    def __init__(self, project_name: str, experiment_name: str) -> None:
        # The same path rules as verl's: $VERL_FILE_LOGGER_PATH, else $VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl.
        self.project_name, self.experiment_name = project_name, experiment_name
        path = os.getenv("VERL_FILE_LOGGER_PATH")
        if path is None:
            root = os.path.expanduser(os.getenv("VERL_FILE_LOGGER_ROOT", "."))
            path = os.path.join(root, project_name, f"{experiment_name}.jsonl")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.filepath = path
        print(f"Appending file logger records to {os.path.abspath(path)}")
        self.fp = open(path, "ab", buffering=0)  # noqa: SIM115 - closed by FileLogger.finish

    cls.__init__ = __init__
    setattr(cls, _PATCHED, True)
