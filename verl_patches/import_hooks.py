"""Patch a module right after its first import, or at once when it is already imported.

The plugins run in every process on ``import verl``, and the verl modules we patch are heavy (Ray, TransferQueue,
the agent loop), so a plugin must not import them: it installs a finder that lets the real loader run, then calls
the patch on the fresh module. One finder per module, holding every patch for it; installing a patch again is a no-op.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

Patch = Callable[[ModuleType], None]


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then the patches in the order they were installed."""

    def __init__(self, loader: importlib.abc.Loader, patches: list[Patch]) -> None:
        self._loader = loader
        self._patches = patches

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for patch in self._patches:
            patch(module)

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, is_package, ...
        return getattr(self._loader, name)


class AfterImport(importlib.abc.MetaPathFinder):
    """Finds ``fullname`` with the other finders and hands back a spec whose loader runs its patches."""

    def __init__(self, fullname: str) -> None:
        self.fullname = fullname
        self.patches: list[Patch] = []

    def find_spec(self, fullname, path, target=None):
        if fullname != self.fullname:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, AfterImport) or not hasattr(finder, "find_spec"):
                continue  # one AfterImport per module: the others are for other modules
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, list(self.patches))
                return spec
        return None


def patch_after_import(fullname: str, patch: Patch, imported: Callable[[ModuleType], bool]) -> None:
    """``patch(module)`` now if ``fullname`` is imported (``imported(module)``: fully, not mid-import), else right
    after its import. One finder per module holds every patch for it; installing the same ``patch`` again is a
    no-op, and ``patch`` itself must be idempotent (it may also run at once, then again never)."""
    module = sys.modules.get(fullname)
    if module is not None and imported(module):
        patch(module)
        return
    finder = next((f for f in sys.meta_path if isinstance(f, AfterImport) and f.fullname == fullname), None)
    if finder is None:
        finder = AfterImport(fullname)
        sys.meta_path.insert(0, finder)
    if patch not in finder.patches:
        finder.patches.append(patch)
