"""The step guard inside GradClipper, and resuming a clipper state: on one process, with a real model's gradients.

Every test first takes a step whose norm the rule scales (or the guard skips), so none can pass with the
gradients untouched.
"""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch

from aggc_rl.clipping import (
    ClipStateDamaged,
    ClipStateMismatch,
    GradClipper,
    GuardConfig,
    SkippedStepsError,
    make_rule,
)
from aggc_rl.clipping.guard import STD_FLOOR, GuardState, decide
from aggc_rl.tiny import lm_loss, tiny_qwen2


@pytest.fixture(scope="module")
def base_grads() -> dict[str, torch.Tensor]:
    model = tiny_qwen2(seed=0)
    lm_loss(model, torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def set_grads(model: torch.nn.Module, base: dict[str, torch.Tensor], mult: float) -> None:
    for n, p in model.named_parameters():
        p.grad = base[n] * mult


def grads_of(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def clone_state(clipper):
    return {k: v.clone() for k, v in clipper.state.items()}


def assert_state_equal(clipper, state):
    for k, v in state.items():
        assert torch.equal(clipper.state[k], v), k


# -- spikes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["global", "aggc", "adagc", "zclip"])
def test_a_spike_is_skipped_and_the_next_normal_step_is_taken(rule, base_grads):
    model = tiny_qwen2(seed=0)
    guard = GuardConfig(skip_sigma=6.0, window=8)
    knobs = {"max_norm": 0.05} if rule == "global" else {}
    clipper = GradClipper(model.named_parameters(), make_rule(rule, **knobs), guard=guard)
    gen = torch.Generator().manual_seed(1)
    for _ in range(guard.min_history):
        set_grads(model, base_grads, 1 + 0.05 * float(torch.rand((), generator=gen)))
        assert not clipper.clip_(progress=0.1).skipped
    # A normal step is taken (and clipped: global's max_norm binds).
    set_grads(model, base_grads, 1.0)
    before = grads_of(model)
    taken = clipper.clip_(progress=0.2)
    assert not taken.skipped and taken.spike_z is not None and abs(taken.spike_z) < 6
    if rule == "global":
        assert taken.scales.max() < 1 and not torch.equal(
            grads_of(model)["lm_head.weight"], before["lm_head.weight"]
        )
    # A 1e6x step is skipped: gradients and rule state untouched.
    set_grads(model, base_grads, 1e6)
    before, state = grads_of(model), clone_state(clipper)
    spike = clipper.clip_(progress=0.3)
    assert spike.skipped and spike.skip_reasons == ("sigma",) and spike.spike_z > 1e4
    assert spike.spike_skipped and not spike.non_finite
    for name, grad in grads_of(model).items():
        assert torch.equal(grad, before[name]), name
    assert_state_equal(clipper, state)
    metrics = spike.metrics()
    assert metrics["clip/spike_skipped"] == 1.0 and metrics["clip/skipped"] == 0.0
    assert metrics["clip/skips_spike_total"] == 1.0 and metrics["clip/consecutive_skips"] == 1.0
    assert metrics["clip/spike_z"] == spike.spike_z
    # The next normal step is taken, and the rule state moves again.
    set_grads(model, base_grads, 1.0)
    after = clipper.clip_(progress=0.4)
    assert not after.skipped and after.consecutive_skips == 0 and after.spike_total == 1
    assert after.step == spike.step + 1


def test_skip_above_is_megatrons_threshold(base_grads):
    model = tiny_qwen2(seed=0)
    set_grads(model, base_grads, 1.0)
    total = GradClipper(model.named_parameters(), "global").clip_().total_norm
    clipper = GradClipper(
        model.named_parameters(), make_rule("aggc"), guard=GuardConfig(skip_above=2 * total)
    )
    set_grads(model, base_grads, 1.9)
    assert not clipper.clip_().skipped
    set_grads(model, base_grads, 2.1)
    before = grads_of(model)
    result = clipper.clip_()
    assert result.skip_reasons == ("above",) and result.spike_z is None  # the window is not ready yet
    assert all(torch.equal(g, before[n]) for n, g in grads_of(model).items())
    assert int(clipper.state["step"]) == 1


def test_identical_norms_neither_crash_nor_skip_everything(base_grads):
    model = tiny_qwen2(seed=0)
    clipper = GradClipper(
        model.named_parameters(),
        make_rule("global", max_norm=0.01),
        guard=GuardConfig(skip_sigma=6.0, window=4),
    )
    totals = []
    for _ in range(20):
        set_grads(model, base_grads, 1.0)
        result = clipper.clip_()
        assert not result.skipped and result.scales.max() < 1  # clipped, not skipped
        assert result.spike_z is None or result.spike_z == 0.0
        totals.append(result.total_norm)
    assert len(set(totals)) == 1  # the same gradients give the same total: the window's std is 0
    # 0.1% above a window with std 0: the floor (0.1% of the mean) is the spread, so z is about 1, and taken.
    # The expected z comes from the totals the clipper reports: the float32 norm's last bits depend on the
    # kernel's summation order (AVX2 vs AVX512), and the floor amplifies them a thousandfold.
    set_grads(model, base_grads, 1.0 + STD_FLOOR)
    taken = clipper.clip_()
    expected = (taken.total_norm - totals[-1]) / (STD_FLOOR * totals[-1])
    assert not taken.skipped and taken.spike_z == pytest.approx(expected, rel=1e-9)
    assert taken.spike_z == pytest.approx(1.0, abs=0.01)  # float32 rounding of the norm moves z by ~1e-4
    set_grads(model, base_grads, 1e6)
    assert clipper.clip_().skip_reasons == ("sigma",)


def test_window_statistics_follow_olmo_core():
    """Sample std of the previous totals; starts at max(2, window // 2) values; zeros and NaN stay out."""
    config = GuardConfig(skip_sigma=2.0, window=4)
    state = GuardState()
    for total in (1.0, 2.0):
        decision, state = decide(config, state, total, True)
        assert decision.z is None
    decision, state = decide(config, state, 3.0, True)  # 2 previous values now: the window is ready
    mean, std = 1.5, math.sqrt(0.5)
    assert decision.z == pytest.approx((3.0 - mean) / std)
    _, state = decide(config, state, 0.0, True)
    _, state = decide(config, state, math.nan, False)
    assert state.window == [1.0, 2.0, 3.0] and state.non_finite_total == 1 and state.calls == 5
    for total in (4.0, 5.0, 6.0, 7.0):
        _, state = decide(config, state, total, True)
    assert state.window == [4.0, 5.0, 6.0, 7.0]  # the newest `window` values


# -- non-finite and the stop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["aggc", "zclip"])
def test_non_finite_skips_count_and_stop_after_max_consecutive(rule, base_grads):
    model = tiny_qwen2(seed=0)
    clipper = GradClipper(model.named_parameters(), rule, guard=GuardConfig(max_consecutive_skips=3))
    set_grads(model, base_grads, 1.0)
    clipper.clip_()
    for i, bad in enumerate((math.inf, -math.inf)):
        set_grads(model, base_grads, 1.0)
        model.model.layers[0].mlp.up_proj.weight.grad[0, 0] = bad
        result = clipper.clip_()
        assert result.non_finite and result.metrics()["clip/skipped"] == 1.0
        assert result.non_finite_total == i + 1 and result.consecutive_skips == i + 1
        assert result.metrics()["clip/skips_non_finite_total"] == i + 1
    set_grads(model, base_grads, 1.0)
    model.model.layers[0].mlp.up_proj.weight.grad[0, 0] = math.nan
    up = "up_proj" if rule == "aggc" else "all"
    with pytest.raises(
        SkippedStepsError,
        match=rf"3 optimizer steps in a row were skipped \(guard.max_consecutive_skips=3\); the last, optimizer "
        rf"step 4, was skipped because a gradient norm was not finite .*groups with non-finite norms: {up}\)",
    ) as stopped:
        clipper.clip_()
    assert clipper.guard_state.non_finite_total == 3
    # No threshold lets a NaN through: the advice points at its source, not at skip_above / skip_sigma.
    assert "a non-finite gradient is not a threshold problem" in str(stopped.value)
    assert "skip_above" not in str(stopped.value) and "skip_sigma" not in str(stopped.value)


def test_a_taken_step_resets_the_consecutive_count(base_grads):
    model = tiny_qwen2(seed=0)
    clipper = GradClipper(
        model.named_parameters(), "aggc", guard=GuardConfig(skip_above=1e-9, max_consecutive_skips=2)
    )
    set_grads(model, base_grads, 1.0)
    assert clipper.clip_().skip_reasons == ("above",)
    with pytest.raises(
        SkippedStepsError,
        match=r"because the total norm was above guard.skip_above=1e-09.*non-finite norms: none",
    ) as stopped:
        clipper.clip_()
    assert "or raise guard.skip_above," in str(stopped.value)  # the threshold that caused the skips
    assert "not a threshold problem" not in str(stopped.value) and "skip_sigma" not in str(stopped.value)
    relaxed = GradClipper(model.named_parameters(), "aggc", guard=GuardConfig(max_consecutive_skips=2))
    for _ in range(3):  # skip, take, skip: never two in a row
        model.lm_head.weight.grad[0, 0] = math.nan
        assert relaxed.clip_().skipped
        set_grads(model, base_grads, 1.0)
        assert not relaxed.clip_().skipped


def test_without_a_guard_nothing_stops_but_skips_are_counted(base_grads):
    model = tiny_qwen2(seed=0)
    clipper = GradClipper(model.named_parameters(), "aggc")
    for i in range(12):
        set_grads(model, base_grads, 1.0)
        model.lm_head.weight.grad[0, 0] = math.nan
        assert clipper.clip_().non_finite_total == i + 1


def test_guard_argument_is_checked():
    with pytest.raises(TypeError, match="guard must be a GuardConfig"):
        GradClipper(tiny_qwen2().named_parameters(), "aggc", guard={"skip_above": 1.0})
    with pytest.raises(
        ValueError, match=r"guard.window=1 is invalid; allowed: an integer number of steps >= 2"
    ):
        GuardConfig(window=1)


# -- checkpoints ------------------------------------------------------------------------------------------------


def test_guard_state_survives_a_round_trip_exactly(base_grads, tmp_path):
    guard = GuardConfig(skip_sigma=3.0, window=6, max_consecutive_skips=5)
    a_model, b_model = tiny_qwen2(seed=0), tiny_qwen2(seed=0)
    a = GradClipper(a_model.named_parameters(), "zclip", guard=guard)
    for mult in (1.0, 1.1, 0.9, 1.05, 1e4):
        set_grads(a_model, base_grads, mult)
        a.clip_()
    set_grads(a_model, base_grads, 1.0)
    a_model.lm_head.weight.grad[0, 0] = math.inf
    a.clip_()
    assert a.guard_state.spike_total == 1 and a.guard_state.non_finite_total == 1
    torch.save(a.state_dict(), tmp_path / "clip.pt")
    b = GradClipper(b_model.named_parameters(), "zclip", guard=guard)
    assert b.load_state_dict(torch.load(tmp_path / "clip.pt", weights_only=True)) == []
    assert b.guard_state == a.guard_state
    assert_state_equal(b, a.state)
    for mult in (1.0, 2e4, 1.02):
        for model in (a_model, b_model):
            set_grads(model, base_grads, mult)
        ra, rb = a.clip_(), b.clip_()
        assert ra.skip_reasons == rb.skip_reasons and ra.spike_z == rb.spike_z
        assert torch.equal(ra.scales, rb.scales)
    assert b.guard_state == a.guard_state and b.guard_state.spike_total == 2


def test_format_1_states_still_load_with_a_fresh_guard(base_grads):
    model = tiny_qwen2(seed=0)
    set_grads(model, base_grads, 1.0)
    a = GradClipper(model.named_parameters(), "aggc")
    a.clip_()
    old = {k: v for k, v in a.state_dict().items() if k != "guard"} | {"format": 1}
    b = GradClipper(model.named_parameters(), "aggc")
    b.load_state_dict(old)
    assert_state_equal(b, a.state)
    assert b.guard_state == GuardState()


def saved_state(base_grads, rule="aggc", **kwargs):
    model = tiny_qwen2(seed=0)
    set_grads(model, base_grads, 1.0)
    clipper = GradClipper(model.named_parameters(), rule, **kwargs)
    clipper.clip_()
    return clipper.state_dict()


@pytest.mark.parametrize(
    ("rule", "kwargs", "differences"),
    [
        (
            "aggc_official",
            {},
            [r"rule: saved 'aggc', now 'aggc_official'", r"knob 'schedule': saved 'linear', now 'none'"],
        ),
        (make_rule("aggc", beta=0.95), {}, [r"knob 'beta': saved 0.99, now 0.95"]),
        (
            "aggc",
            {"grouping": "module_type_per_layer"},
            [
                r"grouping: saved 'module_type', now 'module_type_per_layer'",
                r"groups: saved for 12 groups but this model has 21",
            ],
        ),
        (
            "adagc",
            {},
            [
                r"rule 'aggc' holds \['ema', 'step'\], but rule 'adagc' needs \['gamma', 'step'\]",
                "grouping: saved 'module_type', now 'tensor'",
                r"groups: saved for 12 groups but this model has \d+",
            ],
        ),
    ],
)
def test_resume_under_other_settings_is_refused_naming_each_difference(base_grads, rule, kwargs, differences):
    saved = saved_state(base_grads)
    clipper = GradClipper(tiny_qwen2(seed=0).named_parameters(), rule, **kwargs)
    fresh = clone_state(clipper)
    with pytest.raises(ClipStateMismatch, match="on_mismatch='reset'") as err:
        clipper.load_state_dict(saved)
    for difference in differences:
        assert any(re.search(difference, d) for d in err.value.differences), (
            difference,
            err.value.differences,
        )
    assert len(err.value.differences) == len(differences)
    assert_state_equal(clipper, fresh)


def test_reset_starts_a_fresh_state_with_a_warning(base_grads, caplog):
    saved = saved_state(base_grads)
    clipper = GradClipper(tiny_qwen2(seed=0).named_parameters(), make_rule("aggc", beta=0.9))
    with caplog.at_level(logging.WARNING):
        differences = clipper.load_state_dict(saved, on_mismatch="reset")
    assert differences == ["knob 'beta': saved 0.99, now 0.9"]
    assert "starting a fresh clipper state" in caplog.text and "beta" in caplog.text
    assert int(clipper.state["step"]) == 0 and float(clipper.state["ema"].abs().sum()) == 0
    with pytest.raises(ValueError, match=r"on_mismatch='keep' is invalid; allowed: refuse, reset"):
        clipper.load_state_dict(saved, on_mismatch="keep")


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: [s],
        lambda s: {k: v for k, v in s.items() if k != "groups"},
        lambda s: {**s, "state": {"step": 3}},
        lambda s: {**s, "guard": {"window": [1.0]}},
    ],
    ids=["not-a-dict", "no-groups", "state-not-tensors", "guard-incomplete"],
)
def test_a_damaged_state_is_refused(base_grads, damage):
    saved = saved_state(base_grads)
    clipper = GradClipper(tiny_qwen2(seed=0).named_parameters(), "aggc")
    with pytest.raises(ClipStateDamaged, match="not a readable clipper state"):
        clipper.load_state_dict(damage(saved))
