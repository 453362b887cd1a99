"""verl's CPU platform (verl_cpu.platform): selection, registrations, and verl's own engine and worker on it.

Fast tests check the device module and the platform object in this process. Platform selection
runs in fresh interpreters, since verl fixes its platform once per process: once through a verl
plugin entry point, as in production, once by explicit calls. The slow tests run verl's stock
FSDP2 engine (world size 1, 2 and 2 as HSDP; gloo) through PPO steps, log-prob and checkpoint
round-trip checks, an engine subclass under its own backend name through the same harness, and
the real ``ActorRolloutRefWorker`` as Ray actors with fake GPUs.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.distributed import run_distributed

from verl_cpu import device as cpu_device
from verl_cpu import harness

REPO_ROOT = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 96  # random token ids are drawn below this (the tiny vocabulary is larger)


# --- the device module and the platform object --------------------------------------------------------


def test_device_module_answers_the_queries_verl_sends_to_torch_device():
    assert cpu_device.is_available() and cpu_device.device_count() == 1
    assert cpu_device.current_device() == "cpu"
    assert torch.zeros(1).to(cpu_device.current_device()).device.type == "cpu"
    cpu_device.set_device(3)
    cpu_device.synchronize()
    cpu_device.empty_cache()
    cpu_device.reset_peak_memory_stats()
    assert cpu_device.max_memory_allocated() >= cpu_device.memory_allocated() > 0
    assert cpu_device.max_memory_reserved() >= cpu_device.memory_reserved() > 0
    free, total = cpu_device.mem_get_info()
    assert 0 < free <= total == cpu_device.get_device_properties().total_memory
    assert cpu_device.get_device_name() == "CPU"

    state = cpu_device.get_rng_state()
    first = torch.rand(4)
    cpu_device.set_rng_state(state)
    assert torch.equal(torch.rand(4), first)
    cpu_device.manual_seed_all(7)
    seeded = torch.rand(4)
    cpu_device.manual_seed(7)
    assert torch.equal(torch.rand(4), seeded)
    event = cpu_device.Event()
    event.record(cpu_device.current_stream())
    event.synchronize()
    assert event.query()


def test_device_module_fails_loudly_on_queries_it_does_not_implement():
    assert not hasattr(cpu_device, "cudart")
    with pytest.raises(AttributeError, match=r"CPU device module .* 'graph_pool_handle'"):
        cpu_device.graph_pool_handle  # noqa: B018


def test_platform_answers_for_cpu_gloo_and_fake_gpu_resources():
    from verl_cpu.platform import PlatformCPU

    platform = PlatformCPU()
    assert (platform.device_name, platform.vendor_name) == ("cpu", "cpu")
    assert platform.device_module is cpu_device
    assert platform.communication_backend_name() == "gloo"
    assert platform.current_device() == "cpu"
    assert platform.is_available()
    assert not platform.is_platform_available(use_smi_check=True)  # never auto-detected
    assert platform.ray_resource_name() == "GPU"
    assert platform.ray_resource_options(1) == {"num_gpus": 1}
    assert platform.get_device_capability() == (None, None)
    with platform.nvtx_range("step"):
        pass


def test_a_setup_failure_swallowed_by_verls_plugin_loader_resurfaces_on_use(monkeypatch):
    from verl_cpu import platform as cpu_platform

    def broken() -> None:
        raise RuntimeError("registry exploded")

    platform = cpu_platform.PlatformCPU()
    monkeypatch.setattr(cpu_platform, "_setup_error", None)
    monkeypatch.setattr(cpu_platform, "_register_platform", broken)
    with pytest.raises(RuntimeError, match="registry exploded"):
        cpu_platform.register_cpu_platform()
    with pytest.raises(cpu_platform.CPUPlatformSetupError, match="registry exploded") as raised:
        cpu_platform.PlatformCPU()
    assert isinstance(raised.value.__cause__, RuntimeError)
    with pytest.raises(cpu_platform.CPUPlatformSetupError):
        platform.communication_backend_name()


# --- selection, in fresh interpreters -------------------------------------------------------------------

_PROBE = """
import json

import verl
from verl.plugin.platform import PlatformRegistry, get_platform
from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device
import torch.distributed as dist

loaded_at_import = "cpu" in PlatformRegistry.registered_names()
platform = get_platform()
from verl.workers.engine import EngineRegistry
import verl.workers.engine_workers as engine_workers

engine_workers.initialize_global_process_group_ray(timeout_second=None)
print(json.dumps({
    "loaded_at_import": loaded_at_import,
    "platform": type(platform).__module__ + "." + type(platform).__name__,
    "device": get_device_name(),
    "backend": get_nccl_backend(),
    "device_module": get_torch_device().__name__,
    "process_group": dist.get_backend(),
    "engines": {f"{m}/{b}": EngineRegistry.get_engine_cls(m, b).__name__
                for m in ("language_model", "value_model") for b in ("fsdp", "fsdp2")},
}))
dist.destroy_process_group()
"""


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _process_group_env() -> dict[str, str]:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": _free_port(), "RANK": "0", "WORLD_SIZE": "1"}


def _fake_plugin_distribution(root: Path) -> None:
    """A distribution whose ``verl.plugins`` entry point imports a module that calls ``register_cpu_platform``."""
    (root / "cpu_plugin_probe.py").write_text(
        "from verl_cpu.platform import register_cpu_platform\n\nregister_cpu_platform()\n"
    )
    dist_info = root / "cpu_plugin_probe-0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: cpu-plugin-probe\nVersion: 0.0\n")
    (dist_info / "entry_points.txt").write_text("[verl.plugins]\naggc_cpu_probe = cpu_plugin_probe\n")


def test_verl_plugin_entry_point_selects_the_cpu_platform_with_verl_platform_cpu(tmp_path):
    """The production path: verl loads the plugin on ``import verl`` and everything is in place on first use."""
    _fake_plugin_distribution(tmp_path)
    env = {
        **os.environ,
        **_process_group_env(),
        "VERL_PLATFORM": "cpu",
        "VERL_USE_EXTERNAL_PLUGINS": "aggc_cpu_probe",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["loaded_at_import"]
    assert seen["platform"] == "verl_cpu.platform.PlatformCPU"
    assert (seen["device"], seen["backend"], seen["process_group"]) == ("cpu", "gloo", "gloo")
    assert seen["device_module"] == "verl_cpu.device"
    assert seen["engines"] == {
        "language_model/fsdp": "FSDPEngineWithLMHead",
        "language_model/fsdp2": "FSDPEngineWithLMHead",
        "value_model/fsdp": "FSDPEngineWithValueHead",
        "value_model/fsdp2": "FSDPEngineWithValueHead",
    }


def _register_before_and_after_selecting() -> dict[str, object]:
    """Explicit calls: first without VERL_PLATFORM (as a plugin on a GPU host), then after selecting the CPU."""
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.utils import distributed

    from verl_cpu.platform import PlatformCPU, register_cpu_platform

    register_cpu_platform()
    register_cpu_platform()
    unselected = {
        "registered": PlatformRegistry.get("cpu") is PlatformCPU,
        "engine_module_imported": "verl.workers.engine" in sys.modules,
        "patched": hasattr(distributed.initialize_global_process_group_ray, "__verl_cpu__"),
    }
    os.environ["VERL_PLATFORM"] = "cpu"
    register_cpu_platform()
    register_cpu_platform()  # idempotent: registering an engine twice would raise in verl
    import verl.workers.engine_workers as engine_workers

    return {
        "unselected": unselected,
        "platform_is_cpu": isinstance(get_platform(), PlatformCPU),
        "worker_init_patched": hasattr(engine_workers.initialize_global_process_group_ray, "__verl_cpu__"),
    }


def test_explicit_registration_is_idempotent_and_inert_until_selected():
    seen = harness.run_in_fresh_process(_register_before_and_after_selecting, env={"VERL_PLATFORM": None})
    assert seen["unselected"] == {"registered": True, "engine_module_imported": False, "patched": False}
    assert seen["platform_is_cpu"]
    assert seen["worker_init_patched"]


# --- verl's FSDP2 engine, gloo ----------------------------------------------------------------------------


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[name].float() - b[name].float()).abs().max().item() for name in a)


def _engine_round_trip(rank: int, world: int, model_path: str, ckpt_dir: str, overrides: list[str]) -> None:
    from transformers import AutoModelForCausalLM
    from verl.workers.utils.padding import no_padding_2_padding

    harness.use_cpu_platform()
    cfg = harness.ppo_config(model_path, overrides=overrides)
    setup = harness.engine_setup(cfg)
    engine = harness.build_engine(setup)
    assert type(engine).__name__ == "FSDPEngineWithLMHead"
    fsdp_size = setup.engine_config.fsdp_size
    assert engine.device_mesh.ndim == (1 if fsdp_size < 0 or fsdp_size >= world else 2)  # 2: HSDP
    loss_fn = harness.ppo_loss_fn(setup)
    padded = harness.make_padded_batch(VOCAB_SIZE, batch_size=4, seed=rank)

    # Log-probs of the sharded, padding-free engine equal the plain HF model's on the padded batch.
    with engine.eval_mode():
        output = engine.infer_batch(harness.make_ppo_batch(setup, cfg, padded))
    log_probs = no_padding_2_padding(output["model_output"]["log_probs"], padded.clone())
    reference = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="eager")
    with torch.no_grad():
        logits = reference(
            input_ids=padded["input_ids"],
            attention_mask=padded["attention_mask"],
            position_ids=padded["position_ids"],
        ).logits
    response_len = padded["responses"].shape[1]
    expected = torch.log_softmax(logits[:, -response_len - 1 : -1].float(), dim=-1)
    expected = expected.gather(-1, padded["responses"].unsqueeze(-1)).squeeze(-1)
    mask = padded["response_mask"].bool()
    torch.testing.assert_close(log_probs[mask], expected[mask], atol=1e-5, rtol=1e-5)

    initial = harness.full_params(engine)
    for _ in range(2):
        metrics = harness.train_step(engine, harness.make_ppo_batch(setup, cfg, padded), loss_fn)
        assert math.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0
        assert metrics["lr"] == pytest.approx(cfg.actor_rollout_ref.actor.optim.lr)
        assert {"actor/pg_loss", "actor/ppo_kl", "actor/pg_clipfrac"} <= metrics.keys()
    trained = harness.full_params(engine)
    assert _max_abs_diff(trained, initial) > 1e-4

    engine.save_checkpoint(ckpt_dir, global_step=2)
    for kind in ("model", "optim", "extra_state"):
        assert os.path.exists(os.path.join(ckpt_dir, f"{kind}_world_size_{world}_rank_{rank}.pt"))

    fresh = harness.build_engine(harness.engine_setup(cfg))
    assert _max_abs_diff(harness.full_params(fresh), trained) > 1e-4
    fresh.load_checkpoint(ckpt_dir)
    assert _max_abs_diff(harness.full_params(fresh), trained) == 0.0

    # Optimizer state came back too: one more identical step keeps both engines identical.
    harness.train_step(engine, harness.make_ppo_batch(setup, cfg, padded), loss_fn)
    harness.train_step(fresh, harness.make_ppo_batch(setup, cfg, padded), loss_fn)
    assert _max_abs_diff(harness.full_params(fresh), harness.full_params(engine)) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("world", "fsdp_size"), [(1, -1), (2, -1), (2, 1)], ids=["world1", "world2-fsdp", "world2-hsdp"]
)
def test_fsdp2_engine_trains_with_ppo_loss_and_round_trips_a_checkpoint(
    world, fsdp_size, tmp_path, monkeypatch
):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")  # inherited by the spawned ranks
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    overrides = [f"actor_rollout_ref.actor.fsdp_config.fsdp_size={fsdp_size}"]
    run_distributed(_engine_round_trip, world, model_path, str(tmp_path / "ckpt"), overrides)


def _engine_subclass_under_its_own_backend(rank: int, world: int, model_path: str) -> None:
    harness.use_cpu_platform()
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    from verl_patches.engine.registry import EngineRegistrationError, register_engine

    class StepRecordingEngine(FSDPEngineWithLMHead):
        """Stands in for an engine that overrides ``optimizer_step`` (e.g. another gradient clipper)."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.grad_norms: list[float] = []

        def optimizer_step(self) -> float:
            grad_norm = super().optimizer_step()
            self.grad_norms.append(grad_norm)
            return grad_norm

    probe = {"model_type": "language_model", "backends": ["cpu_probe_fsdp2"], "devices": ["cpu"]}
    register_engine(StepRecordingEngine, **probe)
    register_engine(StepRecordingEngine, **probe)  # idempotent
    with pytest.raises(EngineRegistrationError, match="already registered"):
        register_engine(FSDPEngineWithLMHead, **probe)

    cfg = harness.ppo_config(model_path)
    setup = harness.engine_setup(cfg)
    engine = harness.build_engine(setup, backend="cpu_probe_fsdp2")
    assert type(engine) is StepRecordingEngine
    batch = harness.make_ppo_batch(setup, cfg, harness.make_padded_batch(VOCAB_SIZE))
    metrics = harness.train_step(engine, batch, harness.ppo_loss_fn(setup))
    assert engine.grad_norms == [metrics["grad_norm"]]


@pytest.mark.slow
def test_harness_builds_an_engine_subclass_registered_under_another_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    run_distributed(_engine_subclass_under_its_own_backend, 1, model_path)


# --- the real ActorRolloutRefWorker on Ray ------------------------------------------------------------------


def _actor_worker_update(model_path: str, ckpt_dir: str, world: int) -> dict[str, list[float]]:
    import ray
    from verl.utils import tensordict_utils as tu

    harness.use_cpu_platform()
    cfg = harness.ppo_config(model_path)
    harness.start_ray_on_cpu(num_workers=world)
    try:
        group = harness.actor_worker_group(cfg, world)
        group.init_model()
        padded = harness.make_padded_batch(
            VOCAB_SIZE, batch_size=cfg.actor_rollout_ref.actor.ppo_mini_batch_size
        )
        output = group.update_actor(harness.to_update_actor_batch(padded, cfg))
        group.save_checkpoint(ckpt_dir, global_step=1)
        return {key: [float(v) for v in value] for key, value in tu.get(output, "metrics").items()}
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_actor_rollout_ref_worker_updates_on_ray_with_fake_gpus(tmp_path):
    world = 2
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    ckpt_dir = tmp_path / "ckpt"
    metrics = harness.run_in_fresh_process(
        _actor_worker_update, model_path, str(ckpt_dir), world, env={"VERL_PLATFORM": "cpu"}
    )
    assert (
        len(metrics["grad_norm"]) == 1
        and math.isfinite(metrics["grad_norm"][0])
        and metrics["grad_norm"][0] > 0
    )
    assert math.isfinite(metrics["actor/pg_loss"][0])
    assert metrics["perf/max_memory_allocated_gb"][0] > 0  # answered by the CPU device module
    for rank in range(world):
        assert (ckpt_dir / f"model_world_size_{world}_rank_{rank}.pt").exists()
