"""The pure rules against the scalar reference, plus properties and every bad-config path."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import ref_adagc, ref_aggc, ref_global, ref_zclip

from aggc_rl.clipping import RULE_NAMES, AGGCRule, make_rule, rule_knobs


def run_rule(rule, history, progress=None, dtype=torch.float64):
    state = rule.init(len(history[0]), dtype=dtype)
    progress = progress or [0.0] * len(history)
    scales = []
    for norms, p in zip(history, progress, strict=True):
        s, state = rule.update(torch.tensor(norms, dtype=dtype), state, progress=p)
        scales.append(s.tolist())
    return scales, state


def assert_rows_close(got, want, rel=1e-12):
    torch.testing.assert_close(
        torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64), rtol=rel, atol=1e-15
    )


def random_history(seed, steps, groups, spike_every=7):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(groups, generator=gen, dtype=torch.float64) * 3 + 0.1
    hist = []
    for t in range(steps):
        noise = 1 + 0.5 * (torch.rand(groups, generator=gen, dtype=torch.float64) - 0.5)
        n = base * noise * (8.0 if t % spike_every == spike_every - 1 else 1.0)
        hist.append(n.tolist())
    return hist


# -- global --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_norm", [1.0, 0.3, 100.0])
def test_global_matches_reference(max_norm):
    hist = random_history(0, 5, 6)
    scales, state = run_rule(make_rule("global", max_norm=max_norm), hist)
    for got, norms in zip(scales, hist, strict=True):
        assert got == pytest.approx(ref_global(norms, max_norm), rel=1e-12)
    assert int(state["step"]) == 5


# -- aggc ----------------------------------------------------------------------------------------------------

AGGC_VARIANTS = [
    {},
    {"schedule": "none"},
    {"ema_init": "first"},
    {"raise_small": False},
    {"max_up": 0.0, "max_down": 0.0},
    {"min_norm": 0.5, "beta": 0.9},
    {"global_max_norm": 2.0},
    # The official LoRA scripts' knobs.
    {
        "beta": 0.95,
        "low": 0.95,
        "low_late": 0.98,
        "high": 0.6,
        "high_late": 0.7,
        "switch": 0.4,
        "transition": 0.3,
        "min_norm": 0.01,
        "raise_small": False,
    },
    {"high": 1.5, "low": 0.5, "high_late": 0.0, "low_late": -1.0, "transition": 0.0},
]


@pytest.mark.parametrize(
    "knobs", AGGC_VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default"
)
def test_aggc_matches_reference(knobs):
    steps = 60
    hist = random_history(1, steps, 5)
    hist[10][2] = 0.0  # a zero norm must not divide by zero
    progress = [t / (steps - 1) for t in range(steps)]
    scales, state = run_rule(make_rule("aggc", **knobs), hist, progress)
    ref_scales, ref_ema = ref_aggc(hist, progress, **knobs)
    for t, (got, want) in enumerate(zip(scales, ref_scales, strict=True)):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), f"step {t}"
    assert state["ema"].tolist() == pytest.approx(ref_ema, rel=1e-12)
    assert int(state["step"]) == steps


def test_aggc_official_is_aggc_without_schedule():
    hist = random_history(2, 40, 4)
    progress = [t / 39 for t in range(40)]
    official, _ = run_rule(make_rule("aggc_official"), hist, progress)
    ref, _ = ref_aggc(hist, progress, schedule="none")
    assert_rows_close(official, ref)
    assert make_rule("aggc_official").schedule == "none"


def test_aggc_schedule_moves_the_band_across_training():
    rule = make_rule("aggc")
    assert rule.multipliers(0.0) == (0.98, 0.7)
    assert rule.multipliers(0.6) == (0.98, 0.7)
    lo, hi = rule.multipliers(0.7)
    assert lo == pytest.approx(0.98) and hi == pytest.approx(0.7 + 0.5 * (0.999 - 0.7))
    assert rule.multipliers(0.8) == pytest.approx((0.98, 0.999))
    assert rule.multipliers(1.0) == pytest.approx((0.98, 0.999))
    assert make_rule("aggc_official").multipliers(1.0) == (0.98, 0.7)


def test_aggc_late_phase_changes_scales():
    """With the schedule on, the same norms are treated differently late in training."""
    hist = [[1.0, 2.0]] * 30
    early, _ = run_rule(make_rule("aggc", max_down=0.0), hist, [0.0] * 30)
    late, _ = run_rule(make_rule("aggc", max_down=0.0), hist, [1.0] * 30)
    assert early[-1] != pytest.approx(late[-1])


def test_aggc_first_step_from_zero_ema_does_nothing():
    scales, state = run_rule(make_rule("aggc"), [[3.0, 4.0]])
    assert scales == [[1.0, 1.0]]
    assert state["ema"].tolist() == pytest.approx([0.03, 0.04])


def test_aggc_ema_first_seeds_with_norm():
    scales, state = run_rule(make_rule("aggc", ema_init="first"), [[3.0, 4.0]])
    assert scales == [[1.0, 1.0]]
    assert state["ema"].tolist() == [3.0, 4.0]


def test_aggc_spike_is_cut_by_at_most_the_down_cap():
    rule = make_rule("aggc", ema_init="first")
    scales, _ = run_rule(rule, [[1.0]] * 5 + [[100.0]])
    assert scales[-1] == [pytest.approx(0.9)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.floats(0.01, 1e3), min_size=3, max_size=3), min_size=2, max_size=25),
    st.floats(1e-3, 1e3),
    st.sampled_from(AGGC_VARIANTS[:-1]),
)
def test_aggc_scales_are_invariant_to_a_common_norm_scale(history, const, knobs):
    """AGGC only compares a group with its own history: multiplying every norm by c changes no scale."""
    knobs = {
        k: v for k, v in knobs.items() if k not in ("min_norm", "global_max_norm")
    }  # absolute thresholds
    rule = make_rule("aggc", **knobs)
    progress = [t / max(len(history) - 1, 1) for t in range(len(history))]
    a, sa = run_rule(rule, history, progress)
    b, sb = run_rule(rule, [[n * const for n in row] for row in history], progress)
    assert_rows_close(b, a, rel=1e-6)  # equal up to the eps guard
    assert (sb["ema"] / const).tolist() == pytest.approx(sa["ema"].tolist(), rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(0.0, 1e4), min_size=4, max_size=4), min_size=1, max_size=20))
def test_aggc_scales_stay_inside_the_caps(history):
    scales, _ = run_rule(make_rule("aggc"), history, [t / 20 for t in range(len(history))])
    flat = [c for row in scales for c in row]
    assert all(0.9 - 1e-12 <= c <= 1.1 + 1e-12 for c in flat)


# -- adagc ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "knobs", [{"warmup": 5}, {"warmup": 0}, {"warmup": 3, "lambda_rel": 1.03, "beta": 0.98, "eps": 1e-8}, {}]
)
def test_adagc_matches_reference(knobs):
    hist = random_history(3, 30, 6)
    scales, state = run_rule(make_rule("adagc", **knobs), hist)
    ref_scales, ref_gamma = ref_adagc(hist, **knobs)
    for t, (got, want) in enumerate(zip(scales, ref_scales, strict=True)):
        assert got == pytest.approx(want, rel=1e-12), f"step {t}"
    assert state["gamma"].tolist() == pytest.approx(ref_gamma, rel=1e-12)


def test_adagc_warmup_is_global_clipping_then_per_group():
    rule = make_rule("adagc", warmup=2, lambda_abs=1.0)
    scales, _state = run_rule(rule, [[3.0, 4.0], [6.0, 8.0], [6.0, 8.0]])
    assert scales[0] == pytest.approx([1 / (5 + 1e-6)] * 2)
    assert scales[1] == pytest.approx([1 / (10 + 1e-6)] * 2)
    # gamma = running min of clipped norms = [0.6, 0.8]; then h = 1.04 * gamma / n
    assert scales[2] == pytest.approx([1.04 * 0.6 / 6, 1.04 * 0.8 / 8], rel=1e-5)


@pytest.mark.parametrize("norm", [1e-6, 1e-5])
def test_adagc_small_steady_norm_keeps_scale_one(norm):
    """The old trigger min(1, t/(n+eps)) with an EMA of h*n drove these to 0.004 after 1,000 updates."""
    scales, state = run_rule(make_rule("adagc"), [[norm, 0.5]] * 1000)
    assert all(row == [1.0, 1.0] for row in scales)
    assert float(state["gamma"][0]) == pytest.approx(norm, rel=1e-12)
    spike, _ = make_rule("adagc").update(torch.tensor([10 * norm, 0.5], dtype=torch.float64), state)
    assert float(spike[0]) == pytest.approx(1.04 * norm / (10 * norm + 1e-6), rel=1e-9)  # still cut
    # The old rule on the same input (the defect this guards against): far below 1.
    old_gamma, old_scale = norm, None
    for _ in range(900):
        old_scale = min(1.0, 1.04 * old_gamma / (norm + 1e-6))
        old_gamma = 0.99 * old_gamma + 0.01 * old_scale * norm
    assert old_scale < 0.9


def test_adagc_norm_exactly_at_the_threshold_is_not_clipped():
    rule = make_rule("adagc", warmup=1, lambda_abs=1e9)
    gamma = 1.0  # the warm-up norm, unclipped (lambda_abs is huge)
    at = rule.lambda_rel * gamma
    scales, _ = run_rule(rule, [[gamma], [at]])
    assert scales[1] == [1.0]  # the old trigger gave 1.04 / (1.04 + 1e-6) here
    above = at * (1 + 1e-6)
    scales, _ = run_rule(rule, [[gamma], [above]])
    assert scales[1][0] == pytest.approx(at / (above + 1e-6), rel=1e-12) and scales[1][0] < 1.0


def test_adagc_without_warmup_first_update_has_scale_one():
    scales, state = run_rule(make_rule("adagc", warmup=0), [[3.0, 0.5], [3.0, 0.5]])
    assert scales == [[1.0, 1.0], [1.0, 1.0]]
    assert state["gamma"].tolist() == pytest.approx([3.0, 0.5])


def test_adagc_tensor_at_zero_during_warmup_is_not_frozen():
    """LoRA A has a zero gradient while B is still zero: the official code gives it gamma 0, scale 0 for ever."""
    hist = [[0.0, 1.0]] * 3 + [[1.0, 1.0]] * 20
    scales, state = run_rule(make_rule("adagc", warmup=3), hist)
    assert [row[0] for row in scales[3:]] == [1.0] * 20
    assert float(state["gamma"][0]) == pytest.approx(1.0)
    # A zero norm after warm-up is no evidence either: gamma stays, scale 1.
    scales, state2 = run_rule(make_rule("adagc", warmup=3), [*hist, [0.0, 1.0]])
    assert scales[-1] == [1.0, 1.0] and float(state2["gamma"][0]) == float(state["gamma"][0])
    # ... and its threshold works: a x10 spike is cut to lambda * gamma.
    spike, _ = make_rule("adagc", warmup=3).update(torch.tensor([10.0, 1.0], dtype=torch.float64), state)
    assert float(spike[0]) * 10.0 == pytest.approx(1.04 * float(state["gamma"][0]), rel=1e-6)


def test_adagc_spike_is_cut_to_the_threshold():
    rule = make_rule("adagc", warmup=5, lambda_abs=10.0)
    hist = [[1.0, 2.0]] * 30
    _, state = run_rule(rule, hist)
    gamma = state["gamma"].clone()
    spike = torch.tensor([10.0, 2.0], dtype=torch.float64)
    scales, _ = rule.update(spike, state)
    clipped = scales * spike
    assert float(clipped[0]) == pytest.approx(1.04 * float(gamma[0]), rel=1e-6)  # cut to lambda * gamma
    assert float(scales[1]) == 1.0
    want, _ = ref_adagc([*hist, spike.tolist()], warmup=5, lambda_abs=10.0)
    assert scales.tolist() == pytest.approx(want[-1], rel=1e-12)


# -- zclip ---------------------------------------------------------------------------------------------------


def zclip_series(seed: int, steps: int = 80, base: float = 0.8) -> list[float]:
    """Noisy norms around ``base`` with spikes of x3 to x40, so every branch is exercised."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        n = base * (1 + 0.2 * (float(torch.rand((), generator=gen, dtype=torch.float64)) - 0.5))
        if t % 11 == 10:
            n *= 3 + 37 * float(torch.rand((), generator=gen, dtype=torch.float64))
        out.append(n)
    return out


ZCLIP_VARIANTS = [
    {},
    {"warmup_steps": 5},
    {"mode": "percentile"},
    {"clip_option": "mean"},
    {"clip_factor": 0.7},
    {"skip_update_on_spike": True},
    {"max_grad_norm": None},
    {"max_grad_norm": 0.5, "warmup_steps": 3},  # the cap binds on most steps
    {"mode": "percentile", "z_thresh": 1.0, "skip_update_on_spike": True, "max_grad_norm": None},
    {"alpha": 0.9, "z_thresh": 2.0, "eps": 1e-8, "warmup_steps": 1},
]


@pytest.mark.parametrize(
    "knobs", ZCLIP_VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default"
)
def test_zclip_matches_reference_per_group(knobs):
    """Each group is an independent ZClip; with one group it is the official rule on the total norm."""
    series = [zclip_series(seed) for seed in range(3)]
    series[2] = [2.0 * n for n in series[2]]  # groups at different scales do not interact
    hist = [list(row) for row in zip(*series, strict=True)]
    scales, state = run_rule(make_rule("zclip", **knobs), hist)
    for j in range(3):
        want, (mean, var) = ref_zclip(series[j], **knobs)
        got = [row[j] for row in scales]
        for t, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == pytest.approx(w, rel=1e-10, abs=1e-15), f"group {j} step {t}"
        assert float(state["mean"][j]) == pytest.approx(mean, rel=1e-10)
        assert float(state["var"][j]) == pytest.approx(var, rel=1e-10, abs=1e-18)
    assert any(c < 1.0 for row in scales[knobs.get("warmup_steps", 25) :] for c in row), "no step was clipped"


def test_zclip_warmup_only_caps_then_cuts_a_spike():
    rule = make_rule("zclip", warmup_steps=4, max_grad_norm=10.0)
    scales, state = run_rule(rule, [[1.0], [1.2], [0.8], [1.0]])
    assert scales == [[1.0]] * 4  # below the cap: untouched while the buffer fills
    assert float(state["mean"]) == pytest.approx(1.0) and float(state["var"]) == pytest.approx(0.02)
    spike, _ = rule.update(torch.tensor([9.0], dtype=torch.float64), state)
    std = math.sqrt(0.02)
    z = (9.0 - 1.0) / (std + 1e-6)
    threshold = 1.0 + 2.5 * std / (z / 2.5)
    assert float(spike) == pytest.approx(threshold / (9.0 + 1e-6), rel=1e-9)
    capped, _ = run_rule(make_rule("zclip", warmup_steps=2, max_grad_norm=0.5), [[2.0], [2.0]])
    assert capped[0] == [pytest.approx(0.5 / (2.0 + 1e-6))]


def test_zclip_skip_update_on_spike_keeps_the_statistics():
    for skip in (False, True):
        rule = make_rule("zclip", warmup_steps=3, skip_update_on_spike=skip)
        _, state = run_rule(rule, [[1.0], [1.1], [0.9]])
        scale, after = rule.update(torch.tensor([50.0], dtype=torch.float64), state)
        assert float(scale) < 0.1
        assert torch.equal(after["mean"], state["mean"]) is skip


def test_zclip_default_grouping_is_global():
    from aggc_rl.clipping import ZClipRule

    assert make_rule("zclip").default_scheme == "global" and isinstance(make_rule("zclip"), ZClipRule)


# -- shared contract -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RULE_NAMES)
def test_update_does_not_mutate_inputs(name):
    rule = make_rule(name, **({"warmup": 1} if name == "adagc" else {}))
    state = rule.init(3)
    norms = torch.tensor([1.0, 2.0, 3.0])
    for _ in range(3):
        norms_before = norms.clone()
        state_before = {k: v.clone() for k, v in state.items()}
        _, new_state = rule.update(norms, state, progress=0.7)
        assert torch.equal(norms, norms_before)
        for k, v in state.items():
            assert torch.equal(v, state_before[k]), k
        assert new_state is not state
        state = new_state
    assert int(state["step"]) == 3


@pytest.mark.parametrize("name", RULE_NAMES)
def test_state_has_step_counter_and_keeps_dtype(name):
    rule = make_rule(name)
    state = rule.init(4)
    assert state["step"].dtype == torch.int64 and int(state["step"]) == 0
    scales, new = rule.update(torch.ones(4, dtype=torch.float32), state, progress=0.0)
    assert scales.dtype == torch.float32 and scales.shape == (4,)
    for k in state:
        assert new[k].dtype == state[k].dtype


@pytest.mark.parametrize("name", RULE_NAMES)
@pytest.mark.parametrize("progress", [-0.1, 1.5, math.nan])
def test_progress_out_of_range_is_refused(name, progress):
    rule = make_rule(name)
    with pytest.raises(ValueError, match="progress"):
        rule.update(torch.ones(2), rule.init(2), progress=progress)


def test_wrong_number_of_norms_is_refused():
    rule = make_rule("aggc")
    with pytest.raises(ValueError, match="3 entries but the state holds 2"):
        rule.update(torch.ones(3), rule.init(2))


# -- make_rule: names, knobs, values -------------------------------------------------------------------------


def test_unknown_rule_name_lists_allowed():
    with pytest.raises(
        ValueError, match=r"unknown clip rule 'agc'.*global, aggc, aggc_official, aggc_lora, adagc, zclip"
    ):
        make_rule("agc")


@pytest.mark.parametrize("name", RULE_NAMES)
def test_unknown_knob_names_it_and_lists_allowed(name):
    with pytest.raises(TypeError, match=rf"'{name}' has no knob 'bogus'; allowed: "):
        make_rule(name, bogus=1)


def test_name_is_not_a_knob():
    with pytest.raises(TypeError, match="no knob 'name'"):
        make_rule("aggc", name="x")


BAD_VALUES = [
    ("global", "max_norm", 0.0),
    ("global", "max_norm", -1.0),
    ("global", "max_norm", math.inf),
    ("aggc", "beta", 1.0),
    ("aggc", "beta", -0.01),
    ("aggc", "schedule", "cosine"),
    ("aggc", "ema_init", "ones"),
    ("aggc", "max_up", 0.5),
    ("aggc", "max_down", 1.5),
    ("aggc", "min_norm", -1.0),
    ("aggc", "switch", 1.2),
    ("aggc", "transition", -0.1),
    ("aggc", "low", -0.5),
    ("aggc", "high", math.nan),
    ("aggc", "global_max_norm", 0.0),
    ("aggc", "raise_small", "yes"),
    ("aggc_official", "beta", 1.0),
    ("adagc", "beta", 1.0),
    ("adagc", "warmup", -1),
    ("adagc", "warmup", 2.5),
    ("adagc", "lambda_rel", 0.0),
    ("adagc", "lambda_abs", -1.0),
    ("adagc", "eps", 0.0),
    ("zclip", "alpha", 1.0),
    ("zclip", "z_thresh", 0.0),
    ("zclip", "max_grad_norm", 0.0),
    ("zclip", "max_grad_norm", math.nan),
    ("zclip", "max_grad_norm", math.inf),
    ("zclip", "eps", 0.0),
    ("zclip", "warmup_steps", 0),
    ("zclip", "warmup_steps", 2.5),
    ("zclip", "mode", "median"),
    ("zclip", "clip_option", "max"),
    ("zclip", "clip_factor", -1.0),
    ("zclip", "skip_update_on_spike", "yes"),
]


@pytest.mark.parametrize(("name", "knob", "value"), BAD_VALUES)
def test_bad_value_names_knob_and_allowed(name, knob, value):
    with pytest.raises(ValueError, match=rf"{knob}=.*is invalid; allowed: "):
        make_rule(name, **{knob: value})


def test_rule_knobs_document_defaults():
    assert rule_knobs("aggc_official")["schedule"] == "none"
    assert rule_knobs("aggc")["high_late"] == 0.999
    assert rule_knobs("adagc") == {
        "lambda_rel": 1.04,
        "beta": 0.99,
        "warmup": 100,
        "lambda_abs": 1.0,
        "eps": 1e-6,
    }
    assert rule_knobs("global") == {"max_norm": 1.0}
    assert rule_knobs("zclip") == {
        "alpha": 0.97,
        "z_thresh": 2.5,
        "max_grad_norm": 1.0,
        "eps": 1e-6,
        "warmup_steps": 25,
        "mode": "zscore",
        "clip_option": "adaptive_scaling",
        "clip_factor": 1.0,
        "skip_update_on_spike": False,
    }
    assert isinstance(make_rule("aggc"), AGGCRule)
