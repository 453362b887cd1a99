"""The aggc_fsdp2 engine: verl's FSDP2 engine with GradClipper, through our config, on CPU (gloo).

Configs are composed from ``configs/aggc_ppo_trainer.yaml`` exactly as ``python -m aggc_rl.train``
would, so ``actor.clip=...`` selects the engine the way the trainer does. Checked at world sizes 1
and 2: training steps run with verl's PPO loss; ``actor/clip/*`` metrics exist; per-group norms equal
an independent computation on the gathered (unsharded) gradients; ``grad_norm`` is the pre-clip
total in every method; AGGC's band moves with training progress; a stopped-and-resumed run
continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import pytest
import torch
from support.distributed import run_distributed
from verl.utils.metric.utils import Metric

from aggc_rl.clipping import RULE_NAMES, group_of
from verl_cpu import harness

pytestmark = pytest.mark.slow

VOCAB_SIZE = 96
STEPS = 3


def build(model_path: str, *overrides: str):
    cfg = harness.clip_ppo_config(model_path, STEPS, *overrides)
    setup = harness.engine_setup(cfg)
    assert setup.backend == "aggc_fsdp2"
    return cfg, setup, harness.build_engine(setup)


def batch_for(step: int, setup, cfg):
    return harness.make_ppo_batch(setup, cfg, harness.make_padded_batch(VOCAB_SIZE, seed=step))


def value(metric) -> float:
    return float(metric.aggregate()) if isinstance(metric, Metric) else float(metric)


def record_full_grads(engine) -> list[dict[str, torch.Tensor]]:
    """Wrap the clipper so each step first gathers the unsharded pre-clip gradients (a collective)."""
    seen: list[dict[str, torch.Tensor]] = []
    clip = engine.clipper.clip_

    def recording_clip(progress: float = 0.0):
        seen.append(
            {
                name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad)
                .detach()
                .double()
                .clone()
                for name, p in engine.module.named_parameters()
                if p.grad is not None
            }
        )
        return clip(progress=progress)

    engine.clipper.clip_ = recording_clip
    return seen


def _each_method_trains(rank: int, world: int, model_path: str) -> None:
    harness.use_cpu_platform()
    for method in RULE_NAMES:
        extra = [
            "actor_rollout_ref.actor.clip_config.aggc.switch=0.3",
            "actor_rollout_ref.actor.clip_config.aggc.transition=0.4",
        ]
        cfg, setup, engine = build(model_path, f"actor_rollout_ref.actor.clip={method}", *extra)
        assert type(engine).__name__ == "ClipFSDPEngine"
        scheme = engine.clipper.grouping.scheme
        grads = record_full_grads(engine)
        loss_fn = harness.ppo_loss_fn(setup)
        history = []
        for step in range(STEPS):
            metrics = harness.train_step(engine, batch_for(step, setup, cfg), loss_fn)
            history.append(metrics)
            result = engine.last_clip
            # Independent, unsharded group norms from the gathered gradients.
            want: dict[str, list[torch.Tensor]] = {}
            for name, g in grads[-1].items():
                want.setdefault(group_of(name, scheme), []).append(g.flatten())
            want_norms = {k: torch.cat(v).norm() for k, v in want.items()}
            assert list(want_norms) == list(result.groups), method
            torch.testing.assert_close(
                result.norms, torch.stack(list(want_norms.values())), rtol=1e-5, atol=1e-9
            )
            total = torch.stack(list(want_norms.values())).norm()
            assert metrics["grad_norm"] == pytest.approx(float(total), rel=1e-5), (
                f"{method}: grad_norm is pre-clip"
            )
            assert value(metrics["clip/total_norm_pre"]) == pytest.approx(float(total), rel=1e-5)
            for group in result.groups[:3]:
                key = group.replace("max", "m_ax").replace("min", "m_in")
                for kind in ("norm", "scale"):
                    assert f"clip/{kind}/{key}" in metrics, f"{method}: clip/{kind}/{key} missing"
            assert value(metrics["clip/progress"]) == pytest.approx(step / STEPS)
        if method == "aggc":
            highs = [value(m["clip/band_high"]) for m in history]
            assert highs[0] == pytest.approx(0.7) and highs[0] < highs[1] < highs[2], highs
            assert "clip/ema/q_proj" in history[-1]
        if method == "aggc_official":
            assert {value(m["clip/band_high"]) for m in history} == {0.7}
        if method == "global":
            post = value(history[-1]["clip/total_norm_post"])
            assert post <= engine.optimizer_config.clip_grad * (1 + 1e-5)
        assert int(engine.clipper.state["step"]) == STEPS


@pytest.mark.parametrize("world", [1, 2])
def test_each_method_trains_with_exact_group_norms(world, tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    run_distributed(_each_method_trains, world, model_path)


def _resume_is_exact(rank: int, world: int, model_path: str, ckpt: str) -> None:
    harness.use_cpu_platform()
    overrides = [
        "actor_rollout_ref.actor.clip=aggc",
        "actor_rollout_ref.actor.clip_config.aggc.ema_init=first",
    ]
    k, more = 2, 2
    overrides.append(f"actor_rollout_ref.actor.optim.total_training_steps={k + more}")

    cfg, setup, straight = build(model_path, *overrides)
    loss_fn = harness.ppo_loss_fn(setup)
    for step in range(k):
        harness.train_step(straight, batch_for(step, setup, cfg), loss_fn)
    straight.save_checkpoint(ckpt, global_step=k)
    saved_state = {key: v.clone() for key, v in straight.clipper.state.items()}
    for step in range(k, k + more):
        harness.train_step(straight, batch_for(step, setup, cfg), loss_fn)

    cfg, setup, resumed = build(model_path, *overrides)
    resumed.load_checkpoint(ckpt, del_local_after_load=False)
    for key, v in saved_state.items():
        assert torch.equal(resumed.clipper.state[key], v), key
    assert int(resumed.clipper.state["step"]) == k and resumed.training_progress() == pytest.approx(
        k / (k + more)
    )
    loss_fn = harness.ppo_loss_fn(setup)
    for step in range(k, k + more):
        harness.train_step(resumed, batch_for(step, setup, cfg), loss_fn)

    for key, v in straight.clipper.state.items():
        torch.testing.assert_close(resumed.clipper.state[key], v, rtol=1e-6, atol=0)
    a, b = harness.full_params(straight), harness.full_params(resumed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("world", [1, 2])
def test_stopped_and_resumed_run_continues_exactly(world, tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    ckpt = tmp_path / "global_step_2" / "actor"
    run_distributed(_resume_is_exact, world, model_path, str(ckpt))
    files = sorted(p.name for p in ckpt.iterdir() if p.name.startswith("clip_state"))
    assert files == [f"clip_state_world_size_{world}_rank_{r}.pt" for r in range(world)]


def _missing_state_is_refused(rank: int, world: int, model_path: str, ckpt: str) -> None:
    harness.use_cpu_platform()
    cfg, setup, engine = build(model_path, "actor_rollout_ref.actor.clip=aggc")
    harness.train_step(engine, batch_for(0, setup, cfg), harness.ppo_loss_fn(setup))
    engine.save_checkpoint(ckpt, global_step=1)
    import os

    os.remove(os.path.join(ckpt, "clip_state_world_size_1_rank_0.pt"))
    with pytest.raises(FileNotFoundError, match=r"no clipper state.*restart the clip EMA at 0"):
        engine.load_checkpoint(ckpt, del_local_after_load=False)


def test_checkpoint_without_clip_state_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    run_distributed(_missing_state_is_refused, 1, model_path, str(tmp_path / "ckpt"))


def _worker_round_trip(model_path: str, ckpt_root: str, world: int) -> dict:
    import ray

    harness.use_cpu_platform()
    cfg = harness.clip_ppo_config(model_path, STEPS, "actor_rollout_ref.actor.clip=aggc")
    harness.start_ray_on_cpu(num_workers=world)
    try:
        group = harness.actor_worker_group(cfg, world)
        group.init_model()
        batch = lambda seed: harness.to_update_actor_batch(  # noqa: E731
            harness.make_padded_batch(
                VOCAB_SIZE, batch_size=cfg.actor_rollout_ref.actor.ppo_mini_batch_size, seed=seed
            ),
            cfg,
        )
        from verl.utils import tensordict_utils as tu

        metrics = tu.get(group.update_actor(batch(0)), "metrics")
        group.save_checkpoint(f"{ckpt_root}/saved", global_step=1)
        group.update_actor(batch(1))
        group.save_checkpoint(f"{ckpt_root}/after_update", global_step=2)
        group.load_checkpoint(f"{ckpt_root}/saved")
        group.save_checkpoint(f"{ckpt_root}/restored", global_step=1)
        return {
            key: [float(v) for v in val]
            for key, val in metrics.items()
            if key.startswith(("clip/", "grad_norm"))
        }
    finally:
        ray.shutdown()


def test_actor_rollout_ref_worker_saves_and_restores_the_clipper_state(tmp_path):
    world = 2
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    metrics = harness.run_in_fresh_process(
        _worker_round_trip, model_path, str(tmp_path), world, env={"VERL_PLATFORM": "cpu"}
    )
    # The worker returns them unprefixed; the trainer logs them as actor/clip/...
    assert "clip/norm/q_proj" in metrics and "clip/scale/down_proj" in metrics and "clip/band_high" in metrics
    assert metrics["grad_norm"][0] == pytest.approx(metrics["clip/total_norm_pre"][0], rel=1e-6)
    for rank in range(world):
        name = f"clip_state_world_size_{world}_rank_{rank}.pt"
        saved, after, restored = (
            torch.load(tmp_path / d / name) for d in ("saved", "after_update", "restored")
        )
        assert saved["groups"] == restored["groups"] and "q_proj" in saved["groups"]
        for key, tensor in saved["state"].items():
            assert torch.equal(restored["state"][key], tensor), key
        assert int(after["state"]["step"]) == int(saved["state"]["step"]) + 1
        assert not torch.equal(after["state"]["ema"], saved["state"]["ema"])


def _lora_groups(rank: int, world: int, model_path: str) -> None:
    harness.use_cpu_platform()
    cfg, setup, engine = build(
        model_path,
        "actor_rollout_ref.actor.clip=aggc",
        "actor_rollout_ref.model.lora_rank=4",
        "actor_rollout_ref.model.lora_alpha=8",
    )
    projections = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert set(engine.clipper.groups) == projections
    assert all(".lora_" in name for name in engine.clipper.param_names)
    metrics = harness.train_step(engine, batch_for(0, setup, cfg), harness.ppo_loss_fn(setup))
    assert {k.split("/")[-1] for k in metrics if k.startswith("clip/norm/")} == projections


def test_lora_groups_are_the_adapted_projections(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    run_distributed(_lora_groups, 1, model_path)


def _non_finite_step_is_skipped(rank: int, world: int, model_path: str) -> None:
    harness.use_cpu_platform()
    cfg, setup, engine = build(model_path, "actor_rollout_ref.actor.clip=aggc")
    loss_fn = harness.ppo_loss_fn(setup)
    harness.train_step(engine, batch_for(0, setup, cfg), loss_fn)
    before = harness.full_params(engine)
    state = {k: v.clone() for k, v in engine.clipper.state.items()}
    clip = engine.clipper.clip_

    def poisoned_clip(progress: float = 0.0):
        grad = dict(engine.module.named_parameters())["model.layers.0.mlp.up_proj.weight"].grad
        grad.to_local().view(-1)[0] = float("nan")
        return clip(progress=progress)

    engine.clipper.clip_ = poisoned_clip
    metrics = harness.train_step(engine, batch_for(1, setup, cfg), loss_fn)
    assert value(metrics["clip/skipped"]) == 1.0
    assert not torch.isfinite(torch.tensor(metrics["grad_norm"]))
    after = harness.full_params(engine)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), f"{name} changed on a skipped step"
    for key, tensor in state.items():
        assert torch.equal(engine.clipper.state[key], tensor), key


def test_non_finite_gradient_skips_the_optimizer_step(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    run_distributed(_non_finite_step_is_skipped, 1, model_path)


# -- step guard and resume checks (issue 12) -----------------------------------------------------------------


def optimizer_moments(engine) -> dict[str, dict[str, torch.Tensor]]:
    """This rank's Adam state: exp_avg, exp_avg_sq and step of every parameter (local shards)."""
    names = {id(p): n for n, p in engine.module.named_parameters()}
    out = {}
    for p, state in engine.optimizer.state.items():
        out[names[id(p)]] = {
            k: (v.to_local() if hasattr(v, "to_local") else v).detach().clone() for k, v in state.items()
        }
    return out


def _non_finite_on_one_rank(rank: int, world: int, model_path: str, ckpt: str) -> None:
    """DeepSpeed-style fault injection: inf, -inf, NaN in one group on rank 0 only; both ranks skip."""
    harness.use_cpu_platform()
    overrides = ["actor_rollout_ref.actor.clip=aggc"]
    cfg, setup, engine = build(model_path, *overrides)
    loss_fn = harness.ppo_loss_fn(setup)
    harness.train_step(engine, batch_for(0, setup, cfg), loss_fn)
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(next(iter(optimizer_moments(engine).values())))
    clip = engine.clipper.clip_
    for i, bad in enumerate((float("inf"), float("-inf"), float("nan"))):
        params, moments = harness.full_params(engine), optimizer_moments(engine)
        rule_state = {k: v.clone() for k, v in engine.clipper.state.items()}

        def poisoned_clip(progress: float = 0.0, bad=bad):
            if rank == 0:
                grad = dict(engine.module.named_parameters())["model.layers.1.mlp.up_proj.weight"].grad
                grad.to_local().view(-1)[0] = bad
            return clip(progress=progress)

        engine.clipper.clip_ = poisoned_clip
        metrics = harness.train_step(engine, batch_for(1 + i, setup, cfg), loss_fn)
        result = engine.last_clip
        assert value(metrics["clip/skipped"]) == 1.0, f"rank {rank} did not skip {bad}"
        assert result.non_finite_groups == ["up_proj"]
        assert result.non_finite_total == i + 1 and value(metrics["clip/skips_non_finite_total"]) == i + 1
        for name, tensor in harness.full_params(engine).items():
            assert torch.equal(tensor, params[name]), f"{name} changed on a skipped step ({bad})"
        for name, state in optimizer_moments(engine).items():
            for key, tensor in state.items():
                assert torch.equal(tensor, moments[name][key]), f"Adam {key} of {name} changed ({bad})"
        for key, tensor in rule_state.items():
            assert torch.equal(engine.clipper.state[key], tensor), key
        assert all(p.grad is None or not p.grad.to_local().any() for p in engine.module.parameters())
    engine.clipper.clip_ = clip
    params = harness.full_params(engine)
    metrics = harness.train_step(engine, batch_for(9, setup, cfg), loss_fn)
    assert value(metrics["clip/skipped"]) == 0.0 and value(metrics["clip/consecutive_skips"]) == 0.0
    assert any(not torch.equal(t, params[n]) for n, t in harness.full_params(engine).items())
    engine.save_checkpoint(ckpt, global_step=5)
    guard_state = engine.clipper.guard_state

    cfg, setup, resumed = build(model_path, *overrides)
    resumed.load_checkpoint(ckpt, del_local_after_load=False)
    assert resumed.clipper.guard_state == guard_state and guard_state.non_finite_total == 3


@pytest.mark.parametrize("world", [2])
def test_non_finite_on_one_rank_skips_on_every_rank_and_keeps_adam_state(world, tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    run_distributed(_non_finite_on_one_rank, world, model_path, str(tmp_path / "global_step_5" / "actor"))


def _resume_checks(rank: int, world: int, model_path: str, ckpt: str) -> None:
    import os
    import re

    from aggc_rl.clipping import ClipStateDamaged, ClipStateMismatch

    harness.use_cpu_platform()
    cfg, setup, engine = build(model_path, "actor_rollout_ref.actor.clip=aggc")
    harness.train_step(engine, batch_for(0, setup, cfg), harness.ppo_loss_fn(setup))
    engine.save_checkpoint(ckpt, global_step=1)
    state_file = os.path.join(ckpt, "clip_state_world_size_1_rank_0.pt")

    # Another rule (and so another knob value): refused before anything is loaded, every difference named.
    _, _, other = build(model_path, "actor_rollout_ref.actor.clip=aggc_official")
    params = harness.full_params(other)
    with pytest.raises(ClipStateMismatch) as err:
        other.load_checkpoint(ckpt, del_local_after_load=False)
    message = str(err.value)
    for part in (
        f"the clipper state {state_file} of checkpoint step 1 was saved for other clip settings",
        "rule: saved 'aggc', now 'aggc_official'",
        "knob 'schedule': saved 'linear', now 'none'",
        "set actor_rollout_ref.actor.clip_config.resume_mismatch=reset",
    ):
        assert part in message, (part, message)
    assert all(torch.equal(t, params[n]) for n, t in harness.full_params(other).items())

    _, _, knob = build(
        model_path, "actor_rollout_ref.actor.clip=aggc", "actor_rollout_ref.actor.clip_config.aggc.beta=0.9"
    )
    with pytest.raises(ClipStateMismatch, match=re.escape("knob 'beta': saved 0.99, now 0.9")):
        knob.load_checkpoint(ckpt, del_local_after_load=False)
    _, _, grouped = build(
        model_path, "actor_rollout_ref.actor.clip=aggc", "actor_rollout_ref.actor.clip_config.grouping=tensor"
    )
    with pytest.raises(
        ClipStateMismatch, match=r"grouping: saved 'module_type', now 'tensor'[\s\S]*groups: saved for"
    ):
        grouped.load_checkpoint(ckpt, del_local_after_load=False)

    # resume_mismatch=reset: the model resumes, the clipper starts fresh.
    _, _, reset = build(
        model_path,
        "actor_rollout_ref.actor.clip=aggc_official",
        "actor_rollout_ref.actor.clip_config.resume_mismatch=reset",
    )
    reset.load_checkpoint(ckpt, del_local_after_load=False)
    assert int(reset.clipper.state["step"]) == 0
    saved_params = harness.full_params(engine)
    assert all(torch.equal(t, saved_params[n]) for n, t in harness.full_params(reset).items())

    # A truncated clipper-state file: refused, naming the file, the step and the ways out that exist (step 1
    # is the only checkpoint, so an earlier one is not offered).
    with open(state_file, "rb") as f:
        data = f.read()
    with open(state_file, "wb") as f:
        f.write(data[: len(data) // 2])
    _, _, damaged = build(model_path, "actor_rollout_ref.actor.clip=aggc")
    with pytest.raises(ClipStateDamaged) as err:
        damaged.load_checkpoint(ckpt, del_local_after_load=False)
    message = str(err.value)
    for part in (
        f"the clipper state {state_file} of checkpoint step 1 is damaged and cannot be read",
        "actor_rollout_ref.actor.clip_config.resume_mismatch=reset",
        "train from scratch in a new trainer.default_local_dir",
    ):
        assert part in message, (part, message)
    assert "earlier checkpoint" not in message, message


def test_resume_refuses_other_clip_settings_and_damaged_state(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    model_path = harness.make_tiny_model_dir(tmp_path / "model")
    run_distributed(_resume_checks, 1, model_path, str(tmp_path / "ckpt" / "global_step_1" / "actor"))
