"""The attention check of the preflight: verl's default ``flash_attention_2`` needs ``flash_attn``."""

from __future__ import annotations

import pytest

from aggc_rl.preflight import MISSING, VALUE, PreflightError, Problem, attention
from aggc_rl.preflight.attention import check_attention

GPU: dict[str, str] = {}  # no VERL_PLATFORM: verl picks the GPU platform
CPU = {"VERL_PLATFORM": "cpu"}


def _model(implementation: str | None) -> dict:
    return {"override_config": {} if implementation is None else {"attn_implementation": implementation}}


@pytest.fixture
def no_flash_attn(monkeypatch):
    monkeypatch.setattr(attention, "importable", lambda package: False)


def test_verl_default_without_flash_attn_is_a_missing_prerequisite(no_flash_attn):
    (problem,) = check_attention("actor_rollout_ref.model", _model(None), GPU, alternative="ATTN=sdpa")
    assert problem.kind == MISSING and problem.value == "flash_attention_2"
    assert problem.key == "actor_rollout_ref.model.override_config.attn_implementation"
    assert "verl's default" in problem.what
    assert "pip install flash-attn" in problem.fix and "ATTN=sdpa" in problem.fix
    assert PreflightError([problem]).exit_code == 1  # install something
    assert PreflightError([problem, Problem("k", 1, "bad", "", VALUE)]).exit_code == 2  # and a bad setting


def test_flash_attention_3_needs_its_own_package(no_flash_attn):
    (problem,) = check_attention("model", _model("flash_attention_3"), GPU, alternative="x")
    assert "flash_attn_interface" in problem.what


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_pytorch_attention_needs_nothing(no_flash_attn, implementation):
    assert check_attention("model", _model(implementation), GPU, alternative="x") == []


def test_the_cpu_platform_is_not_checked(no_flash_attn):
    assert check_attention("model", _model(None), CPU, alternative="x") == []


def test_an_importable_flash_attn_passes(monkeypatch):
    monkeypatch.setattr(attention, "importable", lambda package: package == "flash_attn")
    assert check_attention("model", _model(None), GPU, alternative="x") == []


def test_importable_finds_without_importing():
    assert attention.importable("json") and not attention.importable("surely_not_a_package_xyz")
