"""A CPU rollout backend for verl 0.9.1: Hugging Face transformers generation behind verl's server protocol.

verl 0.9.1 registers only vLLM, SGLang and TensorRT-LLM rollouts, so its trainer cannot run without a
GPU. This module adds ``actor_rollout_ref.rollout.name=hf_cpu`` through verl's two rollout registries
(``RolloutReplicaRegistry`` for the replica/server side, the rollout class registry
``verl.workers.rollout.base._ROLLOUT_REGISTRY`` for the adapter living in each trainer worker):

- :class:`HFGenerationServer` (one Ray actor per replica) holds an HF model on the CPU and answers
  verl's token-in/token-out ``generate`` with temperature, top-p, top-k, a max-new-token budget and
  per-token log-probabilities, like verl's vLLM server; ``update_weights`` loads the actor's weights.
  The requests that arrive together (a step's, sent concurrently by verl's agent loop) are decoded as one
  batch (:mod:`verl_cpu.decoding`), at most ``rollout.max_num_seqs`` rows; ``max_num_seqs=1`` decodes each
  request alone, as this server did before batching.
- :class:`HFRolloutReplica` launches that server for each replica (hybrid mode: colocated with the
  trainer workers, weights synchronised after every update with verl's ``naive`` checkpoint engine).
- :class:`HFServerAdapter` is what verl's ``ActorRolloutRefWorker`` builds as ``self.rollout``: it
  forwards the actor's weights to its replica's server.

Written for verl 0.9.1 (workers/rollout/replica.py, base.py, llm_server.py); the server mirrors the
method set verl calls on ``vLLMHttpServer``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
import torch

from aggc_rl.preflight.problems import raise_if_any
from aggc_rl.preflight.values import check_hf_cpu_rollout
from verl_cpu.decoding import DecodeBatch, Decoded, DecodeRequest
from verl_patches.version import require_verl

require_verl(__name__)

from verl.utils.config import omega_conf_to_dataclass  # noqa: E402
from verl.workers.config import HFModelConfig  # noqa: E402
from verl.workers.rollout import base as rollout_base  # noqa: E402
from verl.workers.rollout.base import BaseRollout  # noqa: E402
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput  # noqa: E402

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf_cpu"
SERVER_NAME = "hf_cpu_server_{replica}"


#: How long the server waits for more requests before it starts a batch: until none arrived for ``GATHER_QUIET_S``,
#: at most ``GATHER_LIMIT_S``. Later requests join the running batch between tokens (verl's agent loop sends a
#: step's 128 requests over ~0.5 s on two cores, in bursts).
GATHER_QUIET_S = 0.005
GATHER_LIMIT_S = 0.05


def _server_name(replica_rank: int) -> str:
    return SERVER_NAME.format(replica=replica_rank)


@dataclass
class _Pending:
    """A request waiting for its batch: what verl sent, and where its answer goes."""

    prompt_ids: list[int]
    params: dict[str, Any]
    future: asyncio.Future


class HFGenerationServer:
    """An HF causal LM on the CPU that answers verl's rollout-server calls (one per replica)."""

    def __init__(
        self,
        model_path: str,
        prompt_length: int,
        response_length: int,
        max_model_len: int | None,
        max_num_seqs: int = 1024,
        num_threads: int | None = None,
    ) -> None:
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs={max_num_seqs} must be >= 1 (1: every request decoded alone)")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"engine_kwargs.{ROLLOUT_NAME}.num_threads={num_threads} must be >= 1 (or null)")
        from transformers import AutoModelForCausalLM

        # verl's sync trainer leaves the actor idle while the rollout runs, so the rollout may use every core.
        torch.set_num_threads(num_threads or max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.model.config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = self.model.config.pad_token_id
        # Left padding is masked out, so its id never matters; an end-of-sequence id is always a valid one.
        self.pad_id = int(pad) if pad is not None else min(self.eos_ids, default=0)
        self.max_num_seqs = max_num_seqs
        self.response_length = response_length
        self.max_model_len = max_model_len or (prompt_length + response_length)
        # The trainer step whose weights are loaded (verl tags each trajectory with it); 0 = initial weights.
        self.global_steps = 0
        self.weight_version = 0
        self._lock = asyncio.Lock()
        self._waiting: list[_Pending] = []
        self._serving: asyncio.Task | None = None
        self._updates_waiting = 0  # weight updates waiting for the batch: no request joins it meanwhile
        # How often each (prompt, weights) pair was sampled: with it, seeds do not depend on arrival order.
        self._draws: dict[tuple[int, int], int] = {}

    # -- generation ------------------------------------------------------------------------------------------

    async def generate(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str, **kwargs: Any
    ):
        """Token-in/token-out generation, as verl's ``vLLMHttpServer.generate``.

        The request joins the running batch at the next token (:class:`verl_cpu.decoding.DecodeBatch`; verl's agent
        loop sends a step's requests concurrently), at most ``max_num_seqs`` rows at a time, with its own seed, and
        is answered as soon as it ends. A request whose settings are refused fails alone.
        """
        unsupported = {k for k in ("image_data", "video_data", "audio_data") if kwargs.get(k) is not None}
        if unsupported:
            raise NotImplementedError(f"the {ROLLOUT_NAME} rollout is text-only; got {sorted(unsupported)}")
        pending = _Pending(
            list(prompt_ids), dict(sampling_params), asyncio.get_running_loop().create_future()
        )
        self._waiting.append(pending)
        if self._serving is None or self._serving.done():
            self._serving = asyncio.create_task(self._serve())
        return await pending.future

    async def _serve(self) -> None:
        """Run a batch while requests wait: they join between tokens, and each is answered when it ends."""
        while self._waiting:
            await self._let_arrive()
            async with self._lock:  # weights never change while a batch runs
                batch = DecodeBatch(self.model, self.eos_ids, self.pad_id)
                while True:
                    room = self.max_num_seqs - len(batch)
                    admit = [] if self._updates_waiting else self._waiting[:room]
                    del self._waiting[: len(admit)]
                    admit = [p for p in admit if not p.future.done()]  # a caller that gave up takes no row
                    if not admit and not len(batch):
                        break
                    for pending, result in await asyncio.to_thread(self._advance, batch, admit):
                        if pending.future.done():  # the caller gave up (cancelled)
                            continue
                        if isinstance(result, Exception):
                            pending.future.set_exception(result)
                        else:
                            pending.future.set_result(result)

    async def _let_arrive(self) -> None:
        """Before a batch starts, wait while requests are still arriving (until none came for
        ``GATHER_QUIET_S``, at most ``GATHER_LIMIT_S``), so its first rows are prefilled together."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_LIMIT_S
        seen = -1
        while (
            seen != len(self._waiting) and len(self._waiting) < self.max_num_seqs and loop.time() < deadline
        ):
            seen = len(self._waiting)
            await asyncio.sleep(GATHER_QUIET_S)

    def _advance(
        self, batch: DecodeBatch, admit: list[_Pending]
    ) -> list[tuple[_Pending, TokenOutput | Exception]]:
        """In the worker thread: check, seed (in arrival order) and prefill the newcomers, then tokens for every row
        until one ends or a newcomer can join. Returns the requests answered: the refused ones, the ones that
        ended, or every request of the batch with the error of a forward that failed."""
        answered: list[tuple[_Pending, TokenOutput | Exception]] = []
        members: dict[int, _Pending] = {}  # every request of the batch in this call, answered or not
        try:
            joining: list[tuple[_Pending, DecodeRequest]] = []
            for pending in admit:
                try:
                    joining.append((pending, self._request(pending.prompt_ids, pending.params)))
                except (ValueError, TypeError) as err:
                    answered.append((pending, err))
            # Newcomers in a canonical order (prompt, then seed): the same requests admitted together in another
            # order are prefilled and placed the same way.
            joining.sort(key=lambda item: (item[1].prompt_ids, item[1].seed))
            members.update({id(p): p for p, _ in joining})
            batch.add(joining)
            # Tokens until a row ends or a newcomer can join: one hop to the event loop per event, not per token.
            while len(batch):
                members.update({id(row.key): row.key for row in batch.rows})
                answered += [(pending, self._output(decoded)) for pending, decoded in batch.step()]
                if answered or self._can_admit(batch):
                    break
        except (
            Exception
        ) as err:  # a forward failed: every request of the batch not yet answered fails with it
            done = {id(p) for p, _ in answered}
            answered += [(p, err) for key, p in members.items() if key not in done]
            batch.clear()
        return answered

    def _can_admit(self, batch: DecodeBatch) -> bool:
        """A request waits, the batch has room, and no weight update waits (read from the worker thread)."""
        return bool(self._waiting) and len(batch) < self.max_num_seqs and not self._updates_waiting

    def _output(self, decoded: Decoded) -> TokenOutput:
        return TokenOutput(
            token_ids=decoded.token_ids,
            log_probs=decoded.log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _request(self, prompt_ids: list[int], params: dict[str, Any]) -> DecodeRequest:
        """verl's sampling parameters as one decode request; a prompt that leaves no room is refused."""
        budget = self.max_model_len - len(prompt_ids)
        if budget < 1:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens leaves no room to generate within max_model_len={self.max_model_len}"
            )
        max_new = params.get("max_tokens", params.get("max_new_tokens", self.response_length))
        return DecodeRequest(
            prompt_ids=tuple(prompt_ids),
            max_new=max(1, min(int(max_new), budget)),
            temperature=float(params.get("temperature", 1.0)),
            top_k=int(params.get("top_k", -1) or -1),
            top_p=float(params.get("top_p", 1.0)),
            logprobs=params.get("logprobs") not in (None, False),
            seed=self._seed_for(prompt_ids, params.get("seed")),
        )

    def _seed_for(self, prompt_ids: list[int], seed: int | None) -> int:
        """The caller's seed, else one derived from (prompt, weights version, k-th draw of that pair).

        Two runs from the same weights and data then sample the same responses, whatever order the
        agent loop's concurrent requests arrive in: the arms of a comparison start identically.
        """
        if seed is not None:
            return int(seed)
        key = (hash(tuple(prompt_ids)), self.global_steps)
        k = self._draws.get(key, 0)
        self._draws[key] = k + 1
        return hash((*key, k)) % (2**63)

    # -- weights -----------------------------------------------------------------------------------------------

    async def update_weights(self, state: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Load the actor's (full, HF-named) weights once the running batch has ended (no request joins it while
        an update waits); every name must be known to the model."""
        self._updates_waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._updates_waiting -= 1
        try:
            own = dict(self.model.named_parameters())
            unknown = sorted(set(state) - set(own) - {n for n, _ in self.model.named_buffers()})
            if unknown:
                raise KeyError(f"weights not in the rollout model: {unknown[:5]}")
            missing = sorted(set(own) - set(state))
            tied = getattr(self.model.config, "tie_word_embeddings", False)
            if missing and not (tied and missing == ["lm_head.weight"]):
                raise KeyError(f"weight update is missing {missing[:5]}")
            with torch.no_grad():
                for name, tensor in state.items():
                    own[name].copy_(tensor.to(own[name].dtype))
            self.weight_version += 1
            self._draws.clear()
            if global_steps is not None:
                self.global_steps = global_steps
            return self.weight_version
        finally:
            self._lock.release()

    async def get_weight_version(self) -> int:
        return self.weight_version

    # -- what verl's replica/manager calls on a server; nothing to free on the CPU --------------------------------

    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def wait_for_requests_to_drain(self) -> None:
        while self._serving is not None and not self._serving.done():
            await asyncio.shield(self._serving)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


class HFRolloutReplica(RolloutReplica):
    """One CPU generation server per replica, launched beside the (hybrid) trainer workers."""

    async def launch_servers(self) -> None:
        if self.world_size != 1:
            raise ValueError(
                f"{ROLLOUT_NAME}: one process per replica only; set actor_rollout_ref.rollout.tensor_model_parallel_size=1 "
                f"(and data/pipeline parallel 1), got a replica world size of {self.world_size}"
            )
        # aggc_rl.train checked these before Ray started; verl's own entry points reach here unchecked.
        settings = {
            "name": ROLLOUT_NAME,
            "max_num_seqs": self.config.max_num_seqs,
            "engine_kwargs": {ROLLOUT_NAME: dict(self.config.engine_kwargs.get(ROLLOUT_NAME) or {})},
        }
        raise_if_any(check_hf_cpu_rollout(settings), f"the {ROLLOUT_NAME} rollout")
        options = settings["engine_kwargs"][ROLLOUT_NAME]
        name = _server_name(self.replica_rank)
        server_cls = ray.remote(HFGenerationServer)
        model_config = omega_conf_to_dataclass(self.model_config, dataclass_type=HFModelConfig)
        server = server_cls.options(name=name, num_cpus=0, max_concurrency=self.max_concurrency).remote(
            model_path=model_config.local_path,
            prompt_length=self.config.prompt_length,
            response_length=self.config.response_length,
            max_model_len=self.config.max_model_len,
            max_num_seqs=self.config.max_num_seqs,
            num_threads=options.get("num_threads"),
        )
        await server.get_weight_version.remote()  # surfaces a failed model load here
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}://replica-{self.replica_rank}"

    def rollout_worker_use_gpu(self) -> bool:
        return False


class HFServerAdapter(BaseRollout):
    """Lives in each trainer worker (``ActorRolloutRefWorker.rollout``); forwards weight updates to the server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        per_replica = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // per_replica if replica_rank == -1 else replica_rank
        self.is_leader_rank = rank % per_replica == 0
        self._server: ray.actor.ActorHandle | None = None

    def _server_handle(self) -> ray.actor.ActorHandle:
        if self._server is None:
            self._server = ray.get_actor(_server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs: Any) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(
                f"{ROLLOUT_NAME}: wire_format={wire_format!r}; allowed: 'named_tensors'"
            )
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError(
                f"{ROLLOUT_NAME}: LoRA adapters are not synced to the CPU rollout; set actor_rollout_ref.model.lora.merge=true"
            )
        # Every rank drains the generator: for FSDP it gathers full tensors collectively.
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        if self.is_leader_rank:
            await self._server_handle().update_weights.remote(state, kwargs.get("global_steps"))


def _load_replica() -> type[RolloutReplica]:
    return HFRolloutReplica


def register_cpu_rollout() -> None:
    """Make ``actor_rollout_ref.rollout.name=hf_cpu`` resolvable by verl; idempotent."""
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"
