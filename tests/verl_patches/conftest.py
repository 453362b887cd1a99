"""Make ``import verl_patches`` find the package, not this test directory, however pytest is started.

The root conftest puts ``tests/`` on ``sys.path``, where this directory (no ``__init__.py``) is a
namespace package called ``verl_patches``. Python prefers a regular package anywhere on
``sys.path`` over a namespace one, but the editable install finds ``verl_patches`` through an
import hook consulted only after ``sys.path``; so a bare ``pytest`` (no repo root on ``sys.path``,
unlike ``python -m pytest``) imported this directory instead. Spawned workers copy ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)
_shadow = sys.modules.get("verl_patches")
if _shadow is not None and getattr(_shadow, "__file__", None) is None:
    del sys.modules["verl_patches"]  # the namespace package imported before this conftest ran
