"""patch_after_import: a module is patched right after its first import, or at once when already imported."""

from __future__ import annotations

import importlib
import sys

from verl_patches.import_hooks import AfterImport, patch_after_import


def test_a_module_is_patched_after_its_import_once(tmp_path, monkeypatch):
    (tmp_path / "hooked_probe.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    def patch(module):
        seen.append(module.__name__)
        module.VALUE += 10

    try:
        patch_after_import("hooked_probe", patch, imported=lambda m: hasattr(m, "VALUE"))
        patch_after_import("hooked_probe", patch, imported=lambda m: hasattr(m, "VALUE"))  # one finder
        assert sum(isinstance(f, AfterImport) and f.fullname == "hooked_probe" for f in sys.meta_path) == 1
        assert "hooked_probe" not in sys.modules and seen == []  # nothing imported by installing
        module = importlib.import_module("hooked_probe")
        assert module.VALUE == 11 and seen == ["hooked_probe"]
        patch_after_import("hooked_probe", patch, imported=lambda m: hasattr(m, "VALUE"))  # imported: at once
        assert seen == ["hooked_probe", "hooked_probe"]
        # Two patches for one module: one finder, both run, in the order installed.
        del sys.modules["hooked_probe"]
        seen.clear()
        patch_after_import("hooked_probe", patch, imported=lambda m: hasattr(m, "VALUE"))
        patch_after_import(
            "hooked_probe", lambda m: seen.append("second"), imported=lambda m: hasattr(m, "VALUE")
        )
        assert sum(isinstance(f, AfterImport) and f.fullname == "hooked_probe" for f in sys.meta_path) == 1
        importlib.import_module("hooked_probe")
        assert seen == ["hooked_probe", "second"]
    finally:
        sys.meta_path[:] = [
            f for f in sys.meta_path if not (isinstance(f, AfterImport) and f.fullname == "hooked_probe")
        ]
        sys.modules.pop("hooked_probe", None)
