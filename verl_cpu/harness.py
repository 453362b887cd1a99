"""Run verl's own FSDP engine and workers on the CPU platform (gloo) with a tiny local Qwen2.

Everything here goes through verl's real entry points with the config objects verl's workers
build, so a test that passes here exercises the code path the trainer takes:

* :func:`make_tiny_model_dir` (from :mod:`aggc_rl.tiny`) writes a random tiny Qwen2 and its tokenizer;
* :func:`ppo_config` composes verl's own ``ppo_trainer`` Hydra config with CPU-friendly overrides;
* :func:`engine_setup` turns its ``actor_rollout_ref`` section into the four engine configs exactly
  as ``ActorRolloutRefWorker.init_model`` / ``TrainingWorker.__init__`` do;
* :func:`build_engine` calls ``EngineRegistry.new`` with them. For an engine subclass registered
  under another backend name, either compose with ``ppo_config(backend=name)`` (what the trainer
  does: ``actor.strategy`` becomes the engine config's strategy) or keep "fsdp2" configs and pass
  ``build_engine(setup, backend=name)``;
* :func:`make_ppo_batch` / :func:`train_step` reproduce the batch the PPO trainer sends to
  ``update_actor`` and the steps ``TrainingWorker.train_batch`` takes with verl's ``ppo_loss``;
* :func:`start_ray_on_cpu` / :func:`actor_worker_group` start the real ``ActorRolloutRefWorker``
  as Ray actors.

verl is imported inside the functions: importing verl's engine resolves verl's platform, which must
happen only after :func:`use_cpu_platform` (in each process, spawned ones included).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.multiprocessing as mp
from tensordict import TensorDict

from aggc_rl.tiny import make_tiny_model_dir  # noqa: F401  (re-exported for the tests)
from verl_cpu.recipe import CPU_ACTOR_OVERRIDES

if TYPE_CHECKING:
    from collections.abc import Callable

    from omegaconf import DictConfig


def use_cpu_platform() -> None:
    """Select and register verl's CPU platform in this process (before anything resolves verl's platform)."""
    selected = os.environ.setdefault("VERL_PLATFORM", "cpu")
    if selected != "cpu":
        raise RuntimeError(f"VERL_PLATFORM={selected!r} in this process; the CPU harness needs 'cpu'")
    from verl_cpu.platform import register_cpu_platform

    register_cpu_platform()


def _set_environment(env: dict[str, str | None]) -> None:
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_in_fresh_process(fn: Callable[..., Any], *args: Any, env: dict[str, str | None] | None = None) -> Any:
    """``fn(*args)`` in a new (spawned) interpreter; returns its result or raises its exception here.

    verl's platform is a per-process singleton fixed on first use, so checks of platform selection
    need a process of their own. ``env`` is applied first; a ``None`` value unsets the variable.
    ``fn`` must be a module-level function (it is pickled).
    """
    with ProcessPoolExecutor(
        max_workers=1, mp_context=mp.get_context("spawn"), initializer=_set_environment, initargs=(env or {},)
    ) as pool:
        return pool.submit(fn, *args).result()


def ppo_config(
    model_path: str,
    backend: str | None = "fsdp2",
    overrides: list[str] | tuple[str, ...] = (),
    config_dir: str | None = None,
    config_name: str = "ppo_trainer",
) -> DictConfig:
    """verl's ``ppo_trainer`` config for ``model_path`` with CPU settings; ``overrides`` are Hydra overrides.

    CPU settings: :data:`verl_cpu.recipe.CPU_ACTOR_OVERRIDES` (sdpa, no compile, fp32, no gradient
    checkpointing). Mini-batches of 4 in micro-batches of 2 (so gradients accumulate) and a large
    learning rate, so that two steps move the weights measurably. ``backend`` goes into
    ``actor.strategy``, from where verl copies it into the engine config and ``TrainingWorker``
    looks the engine up by it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from verl.trainer import config as verl_config

    cpu_overrides = [
        f"actor_rollout_ref.model.path={model_path}",
        *CPU_ACTOR_OVERRIDES,
        *([f"actor_rollout_ref.actor.strategy={backend}"] if backend is not None else []),
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.optim.lr=1e-2",
    ]
    GlobalHydra.instance().clear()
    config_dir = config_dir or os.path.dirname(verl_config.__file__)
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name=config_name, overrides=[*cpu_overrides, *overrides])


def clip_ppo_config(model_path: str, total_training_steps: int, *overrides: str) -> DictConfig:
    """Our primary config (``python -m aggc_rl.train``'s) with the CPU settings: ``actor.clip`` selects the engine."""
    from verl_patches.config_files import CONFIG_DIR, PPO_CONFIG_NAME

    return ppo_config(
        model_path,
        backend=None,
        config_dir=CONFIG_DIR,
        config_name=PPO_CONFIG_NAME,
        overrides=[f"actor_rollout_ref.actor.optim.total_training_steps={total_training_steps}", *overrides],
    )


@dataclass
class EngineSetup:
    """The configs ``TrainingWorker`` hands to ``EngineRegistry.new``, plus the actor config ``ppo_loss`` reads."""

    model_type: str
    backend: str
    model_config: Any
    engine_config: Any
    optimizer_config: Any
    checkpoint_config: Any
    actor_config: Any


def engine_setup(cfg: DictConfig) -> EngineSetup:
    """Build the engine configs from ``cfg.actor_rollout_ref`` the way ``ActorRolloutRefWorker.init_model`` does."""
    from verl.utils.config import omega_conf_to_dataclass

    arr = cfg.actor_rollout_ref
    model_config = omega_conf_to_dataclass(arr.model)
    actor_config = omega_conf_to_dataclass(arr.actor)
    actor_config.model_config = model_config
    engine_config = actor_config.engine
    # ActorRolloutRefWorker.init_model copies the batch sizes into the engine config ...
    engine_config.use_dynamic_bsz = arr.actor.use_dynamic_bsz
    engine_config.infer_max_token_len_per_gpu = arr.rollout.log_prob_max_token_len_per_gpu
    engine_config.infer_micro_batch_size_per_gpu = arr.rollout.log_prob_micro_batch_size_per_gpu
    engine_config.max_token_len_per_gpu = arr.actor.ppo_max_token_len_per_gpu
    engine_config.micro_batch_size_per_gpu = arr.actor.ppo_micro_batch_size_per_gpu
    # ... and TrainingWorker.__init__ takes these from the model config.
    engine_config.use_remove_padding = model_config.get("use_remove_padding", False)
    engine_config.use_fused_kernels = model_config.get("use_fused_kernels", False)
    model_type = model_config.get("model_type", "language_model")
    model_config.model_type = model_type
    return EngineSetup(
        model_type=model_type,
        backend=engine_config.strategy,
        model_config=model_config,
        engine_config=engine_config,
        optimizer_config=actor_config.optim,
        checkpoint_config=actor_config.checkpoint,
        actor_config=actor_config,
    )


def build_engine(setup: EngineSetup, backend: str | None = None, initialize: bool = True) -> Any:
    """``EngineRegistry.new`` as ``TrainingWorker`` calls it, then ``initialize`` (its ``reset``).

    ``backend`` is the registry key to build, by default ``setup.backend`` (the config's
    ``actor.strategy``, as in ``TrainingWorker``). Passing another one builds an engine subclass
    registered under that name from configs whose strategy stays e.g. "fsdp2" (verl's
    ``_build_fsdp_module`` only knows "fsdp"/"fsdp2"); build the configs with
    ``ppo_config(backend=...)`` instead to reproduce exactly what the trainer would do.
    """
    from verl.workers.engine import EngineRegistry

    engine = EngineRegistry.new(
        model_type=setup.model_type,
        backend=setup.backend if backend is None else backend,
        model_config=setup.model_config,
        engine_config=setup.engine_config,
        optimizer_config=setup.optimizer_config,
        checkpoint_config=setup.checkpoint_config,
    )
    if initialize:
        engine.initialize()
    return engine


def ppo_loss_fn(setup: EngineSetup) -> Callable[..., Any]:
    """verl's PPO policy loss bound to the actor config, as ``ActorRolloutRefWorker.init_model`` binds it."""
    from verl.workers.utils.losses import ppo_loss

    return partial(ppo_loss, config=setup.actor_config)


def make_padded_batch(
    vocab_size: int, batch_size: int = 4, prompt_len: int = 6, response_len: int = 6, seed: int = 0
) -> TensorDict:
    """A left/right-padded rollout batch in the layout verl's rollout produces, with PPO fields.

    Prompts are left-padded and responses right-padded (random lengths, at least 2 tokens each);
    ``old_log_probs`` and ``advantages`` are random, as they would come from rollout and GRPO.
    """
    from verl.utils.model import compute_position_id_with_mask

    gen = torch.Generator().manual_seed(seed)
    prompt_lens = torch.randint(2, prompt_len + 1, (batch_size,), generator=gen)
    response_lens = torch.randint(2, response_len + 1, (batch_size,), generator=gen)
    positions = torch.arange(prompt_len + response_len)
    prompt_mask = positions[:prompt_len] >= (prompt_len - prompt_lens)[:, None]
    response_mask = positions[:response_len] < response_lens[:, None]
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1).long()
    input_ids = torch.randint(4, vocab_size, (batch_size, prompt_len + response_len), generator=gen)
    input_ids = input_ids * attention_mask  # pad id 0
    position_ids = compute_position_id_with_mask(attention_mask)
    return TensorDict(
        {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "prompts": input_ids[:, :prompt_len],
            "responses": input_ids[:, prompt_len:],
            "response_mask": response_mask.long(),
            "old_log_probs": -torch.rand(batch_size, response_len, generator=gen) - 3.0,
            "advantages": torch.randn(batch_size, response_len, generator=gen),
        },
        batch_size=[batch_size],
    )


def to_update_actor_batch(padded: TensorDict, cfg: DictConfig) -> TensorDict:
    """What the PPO trainer's ``_update_actor`` sends to ``update_actor``: no-padding layout plus meta keys."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    arr = cfg.actor_rollout_ref
    batch = left_right_2_no_padding(padded.clone())
    mini_batch_size = arr.actor.ppo_mini_batch_size * arr.rollout.n
    tu.assign_non_tensor(
        batch,
        temperature=arr.rollout.temperature,
        calculate_entropy=arr.actor.calculate_entropy or arr.actor.entropy_coeff != 0.0,
        distillation_use_topk=False,
        distillation_only=False,
        global_batch_size=mini_batch_size,
        mini_batch_size=mini_batch_size,
        epochs=arr.actor.ppo_epochs,
        seed=arr.actor.data_loader_seed,
        dataloader_kwargs={"shuffle": arr.actor.shuffle},
        compute_loss=True,
    )
    return batch


def make_ppo_batch(setup: EngineSetup, cfg: DictConfig, padded: TensorDict) -> TensorDict:
    """One mini-batch as ``TrainingWorker.train_batch`` hands it to ``engine.train_batch``."""
    from verl.utils import tensordict_utils as tu

    batch = to_update_actor_batch(padded, cfg)
    for key in ("mini_batch_size", "epochs", "seed", "dataloader_kwargs"):  # consumed by train_mini_batch
        tu.pop(batch, key=key)
    tu.assign_non_tensor(
        batch,
        use_remove_padding=setup.model_config.get("use_remove_padding", False),
        use_dynamic_bsz=setup.engine_config.use_dynamic_bsz,
        max_token_len_per_gpu=setup.engine_config.max_token_len_per_gpu,
        micro_batch_size_per_gpu=setup.engine_config.micro_batch_size_per_gpu,
        use_fused_kernels=setup.engine_config.use_fused_kernels,
    )
    return batch


def train_step(engine: Any, batch: TensorDict, loss_fn: Callable[..., Any]) -> dict[str, Any]:
    """``engine.train_batch`` in train mode, then the LR scheduler step (``TrainingWorker.train_batch`` on a last mini-batch)."""
    with engine.train_mode():
        output = engine.train_batch(batch, loss_function=loss_fn)
    output["metrics"]["lr"] = engine.lr_scheduler_step()
    return output["metrics"]


def full_params(engine: Any) -> dict[str, torch.Tensor]:
    """Unsharded copies of the engine's parameters (a collective: every rank must call it)."""
    params, _ = engine.get_per_tensor_param()
    return {name: tensor.detach().clone() for name, tensor in params}


# --- Ray: the real ActorRolloutRefWorker --------------------------------------------------------------


def start_ray_on_cpu(num_workers: int, num_cpus: int = 4) -> None:
    """Start a local Ray whose workers use the CPU platform; ``num_gpus`` is fake, one per verl worker.

    verl's resource pools request one accelerator per worker, which the CPU platform names "GPU".
    Workers get ``VERL_PLATFORM=cpu`` and call ``register_cpu_platform`` at start-up (Ray's
    ``worker_process_setup_hook``), so this works whether or not the verl plugin entry point is installed.
    """
    import ray

    repo_root = Path(__file__).resolve().parents[1]
    python_path = os.pathsep.join(
        p for p in (str(repo_root), str(repo_root / "tests"), os.environ.get("PYTHONPATH", "")) if p
    )
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_workers,
        include_dashboard=False,
        runtime_env={
            "env_vars": {
                "VERL_PLATFORM": "cpu",
                "OMP_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": python_path,
            },
            "worker_process_setup_hook": "verl_cpu.platform.register_cpu_platform",
        },
    )


def actor_worker_group(cfg: DictConfig, world: int, role: str = "actor") -> Any:
    """verl's ``ActorRolloutRefWorker`` (role ``actor``) as ``world`` Ray actors in one resource pool."""
    import ray
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.workers.engine_workers import ActorRolloutRefWorker

    pool = RayResourcePool(process_on_nodes=[world], use_gpu=True, max_colocate_count=1)
    worker = RayClassWithInitArgs(
        cls=ray.remote(ActorRolloutRefWorker), config=cfg.actor_rollout_ref, role=role
    )
    return RayWorkerGroup(resource_pool=pool, ray_cls_with_init=worker, device_name=cfg.trainer.device)
