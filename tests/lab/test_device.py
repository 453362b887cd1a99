"""``python -m aggc_rl.lab --device``: the platform the lab selects is one verl registers, and a missing GPU
is said in one line before any work."""

from __future__ import annotations

import torch

from aggc_rl.inprocess.loop import VERL_PLATFORMS
from aggc_rl.lab import __main__ as lab_main


def test_every_device_maps_to_a_platform_verl_registers():
    import verl  # noqa: F401  (verl's platforms register on import; ours through its plugin entry point)
    from verl.plugin.platform.platform_manager import PlatformRegistry

    registered = PlatformRegistry.registered_names()
    assert VERL_PLATFORMS["cuda"] == "nvidia"
    for device, name in VERL_PLATFORMS.items():
        assert name in registered, (device, name, registered)


def test_cuda_without_a_gpu_is_refused_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "lab"
    assert lab_main.main(["--device", "cuda", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: no CUDA device is visible" in err and "allowed here: --device cpu" in err
    assert not out.exists()  # nothing was built
