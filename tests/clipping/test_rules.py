"""The pure rules against the scalar reference, plus properties and every bad-config path."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import ref_adagc, ref_aggc, ref_global

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
    with pytest.raises(ValueError, match=r"unknown clip rule 'agc'.*global, aggc, aggc_official, adagc"):
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
    assert isinstance(make_rule("aggc"), AGGCRule)
