"""GradClipper on one process: exact group norms, the rule's scales applied, skips, state and metrics."""

from __future__ import annotations

import re

import pytest
import torch
from reference import ref_adagc, ref_aggc

from aggc_rl.clipping import GradClipper, group_of, make_rule
from aggc_rl.tiny import lm_loss, tiny_qwen2


def model_with_grads(seed: int = 0, scale: float = 1.0, **overrides) -> torch.nn.Module:
    model = tiny_qwen2(seed=0, **overrides)
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(seed))
    (scale * lm_loss(model, ids)).backward()
    return model


def independent_group_norms(model: torch.nn.Module, scheme: str) -> dict[str, float]:
    flat: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is not None:
            flat.setdefault(group_of(name, scheme), []).append(p.grad.detach().double().flatten())
    return {k: float(torch.cat(v).norm()) for k, v in flat.items()}


def grads_of(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("max_norm", [0.05, 1.0, 1e4])
def test_global_rule_equals_torch_clip_grad_norm(max_norm):
    ours, theirs = model_with_grads(), model_with_grads()
    result = GradClipper(ours.named_parameters(), make_rule("global", max_norm=max_norm)).clip_()
    torch_total = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm, foreach=True)
    assert result.total_norm == pytest.approx(float(torch_total), rel=1e-6)
    for (name, a), b in zip(grads_of(ours).items(), grads_of(theirs).values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=name)


@pytest.mark.parametrize("scheme", ["module_type", "module_type_per_layer", "tensor", "global"])
def test_group_norms_are_exact(scheme):
    model = model_with_grads()
    want = independent_group_norms(model, scheme)
    result = GradClipper(model.named_parameters(), "aggc", grouping=scheme).clip_()
    assert list(result.groups) == list(want)
    assert result.norms.tolist() == pytest.approx(list(want.values()), rel=1e-6)
    assert result.total_norm == pytest.approx(float(torch.tensor(list(want.values())).norm()), rel=1e-6)


@pytest.mark.parametrize(
    ("name", "knobs"), [("aggc", {}), ("aggc", {"ema_init": "first"}), ("adagc", {"warmup": 2})]
)
def test_rule_scales_are_applied_to_every_gradient_of_the_group(name, knobs):
    model = tiny_qwen2()
    clipper = GradClipper(model.named_parameters(), make_rule(name, **knobs))
    history, progress = [], []
    for step in range(6):
        model.zero_grad()
        ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(step))
        ((1 + 3 * (step == 4)) * lm_loss(model, ids)).backward()  # a spike at step 4
        before = grads_of(model)
        history.append(list(independent_group_norms(model, clipper.grouping.scheme).values()))
        progress.append(step / 5)
        result = clipper.clip_(progress=progress[-1])
        want = (ref_aggc(history, progress, **knobs) if name == "aggc" else ref_adagc(history, **knobs))[0][
            -1
        ]
        assert result.scales.tolist() == pytest.approx(want, rel=1e-5)
        for pname, grad in grads_of(model).items():
            j = clipper.groups.index(group_of(pname, clipper.grouping.scheme))
            torch.testing.assert_close(grad, before[pname] * want[j], rtol=1e-6, atol=0, msg=pname)
    assert result.step == 6 and int(clipper.state["step"]) == 6


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("rule", ["global", "aggc", "adagc"])
def test_non_finite_gradient_skips_and_leaves_everything_untouched(bad, rule):
    model = model_with_grads()
    clipper = GradClipper(model.named_parameters(), rule)
    clipper.clip_(progress=0.1)
    state_before = {k: v.clone() for k, v in clipper.state.items()}
    model.model.layers[1].mlp.up_proj.weight.grad[0, 0] = bad
    before = grads_of(model)
    result = clipper.clip_(progress=0.2)
    assert result.skipped
    assert result.metrics()["clip/skipped"] == 1.0
    for name, grad in grads_of(model).items():
        assert torch.equal(grad.nan_to_num(), before[name].nan_to_num()), name
    for k, v in clipper.state.items():
        assert torch.equal(v, state_before[k]), k
    up = (
        clipper.groups.index("up_proj")
        if rule != "adagc"
        else clipper.groups.index("model.layers.1.mlp.up_proj.weight")
    )
    assert not torch.isfinite(result.norms[up])
    assert torch.isfinite(result.norms[[j for j in range(len(result.groups)) if j != up]]).all()


def test_state_round_trip_continues_exactly(tmp_path):
    a_model, b_model = tiny_qwen2(), tiny_qwen2()
    a = GradClipper(a_model.named_parameters(), "aggc")
    for step in range(3):
        a_model.zero_grad()
        lm_loss(
            a_model, torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(step))
        ).backward()
        a.clip_(progress=step / 10)
    torch.save(a.state_dict(), tmp_path / "clip.pt")
    b = GradClipper(b_model.named_parameters(), "aggc")
    b.load_state_dict(torch.load(tmp_path / "clip.pt"))
    for k, v in a.state.items():
        assert torch.equal(b.state[k], v)
    ids = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(99))
    for model in (a_model, b_model):
        model.zero_grad()
        lm_loss(model, ids).backward()
    ra, rb = a.clip_(progress=0.5), b.clip_(progress=0.5)
    assert torch.equal(ra.scales, rb.scales) and ra.step == rb.step == 4
    assert torch.equal(a.state["ema"], b.state["ema"])


def test_load_state_refuses_other_groups_and_rules():
    model = model_with_grads()
    saved = GradClipper(model.named_parameters(), "aggc").state_dict()
    with pytest.raises(ValueError, match="saved for 12 groups but this model has 21"):
        GradClipper(model.named_parameters(), "aggc", grouping="module_type_per_layer").load_state_dict(saved)
    with pytest.raises(
        ValueError, match=r"rule 'aggc' holds \['ema', 'step'\], but rule 'global' needs \['step'\]"
    ):
        GradClipper(model.named_parameters(), "global").load_state_dict(saved)
    with pytest.raises(ValueError, match="format"):
        GradClipper(model.named_parameters(), "aggc").load_state_dict({**saved, "format": 99})
    reordered = {**saved, "groups": list(reversed(saved["groups"]))}
    with pytest.raises(ValueError, match="different order"):
        GradClipper(model.named_parameters(), "aggc").load_state_dict(reordered)


def test_metrics_are_complete_and_never_max_or_min_reduced():
    model = tiny_qwen2()
    model.add_module("maxpool_min", torch.nn.Linear(2, 2))  # hostile module name
    model.zero_grad()
    lm_loss(model, torch.randint(0, 96, (2, 8))).backward()
    model.maxpool_min.weight.grad = torch.ones(2, 2)
    clipper = GradClipper(model.named_parameters(), "aggc", grouping="tensor")
    clipper.clip_()
    metrics = clipper.clip_(progress=0.3).metrics()
    assert not [k for k in metrics if re.search("max|min", k, re.IGNORECASE)]
    for group in ("q_proj", "down_proj", "norm", "lm_head"):
        assert {f"clip/norm/{group}", f"clip/scale/{group}", f"clip/ema/{group}"} <= set(
            GradClipper(model.named_parameters(), "aggc").clip_().metrics()
        )
    for key in ("total_norm_pre", "total_norm_post", "frac_scaled_down", "frac_scaled_up", "skipped"):
        assert f"clip/{key}" in metrics
    scales = [v for k, v in metrics.items() if k.startswith("clip/scale/")]
    assert metrics["clip/frac_scaled_down"] == pytest.approx(sum(s < 1 for s in scales) / len(scales))
    assert metrics["clip/total_norm_post"] < metrics["clip/total_norm_pre"]  # the steady state scales down


def test_only_trainable_parameters_are_grouped_and_scaled():
    model = model_with_grads()
    for p in model.model.embed_tokens.parameters():
        p.requires_grad_(False)
    frozen_grad = model.model.embed_tokens.weight.grad.clone()
    clipper = GradClipper(model.named_parameters(), make_rule("global", max_norm=1e-3))
    assert "embed_tokens" not in clipper.groups
    clipper.clip_()
    assert torch.equal(model.model.embed_tokens.weight.grad, frozen_grad)


def test_missing_gradients_count_as_zero():
    model = model_with_grads()
    model.lm_head.weight.grad = None
    result = GradClipper(model.named_parameters(), "aggc").clip_()
    assert result.norms[result.groups.index("lm_head")] == 0.0
    assert model.lm_head.weight.grad is None


def test_bfloat16_gradients_are_measured_in_float32():
    model = model_with_grads().to(torch.bfloat16)
    model.zero_grad()
    lm_loss(model, torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))).backward()
    assert model.lm_head.weight.grad.dtype == torch.bfloat16
    want = independent_group_norms(model, "module_type")
    result = GradClipper(model.named_parameters(), "aggc").clip_()
    assert result.norms.tolist() == pytest.approx(list(want.values()), rel=1e-5)


def test_bad_arguments():
    model = tiny_qwen2()
    with pytest.raises(ValueError, match="unknown clip rule"):
        GradClipper(model.named_parameters(), "aggcc")
    with pytest.raises(TypeError, match="rule must be"):
        GradClipper(model.named_parameters(), 3)
    with pytest.raises(ValueError, match="no trainable parameters"):
        GradClipper([(n, p.requires_grad_(False)) for n, p in model.named_parameters()], "aggc")
    with pytest.raises(ValueError, match="progress"):
        GradClipper(tiny_qwen2().named_parameters(), "aggc").clip_(progress=2.0)


def test_a_skipped_step_reports_what_the_optimizer_got():
    """Nothing was applied on a skipped step: no post-clip norm, no group scaled, whatever the rule computed."""
    model = model_with_grads()
    clipper = GradClipper(model.named_parameters(), "aggc_official")
    clipper.clip_()  # a normal step gives every group an EMA, so a x100 step is far above its band
    for p in model.parameters():
        p.grad.mul_(100.0)
    model.lm_head.weight.grad[0, 0] = float("nan")
    result = clipper.clip_()
    assert result.skipped and (result.scales < 1).sum() >= len(result.groups) - 1  # the rule would have cut
    metrics = result.metrics()
    assert metrics["clip/skipped"] == 1.0
    assert metrics["clip/total_norm_post"] == 0.0
    assert metrics["clip/frac_scaled_down"] == 0.0 and metrics["clip/frac_scaled_up"] == 0.0


def test_a_gradient_that_changes_dtype_gets_a_new_layout_and_exact_norms():
    model = model_with_grads()
    clipper = GradClipper(model.named_parameters(), make_rule("global", max_norm=1e9))
    clipper.clip_()
    assert len(clipper._layout.buckets) == 1  # every gradient fp32: one bucket
    first = next(p for p in model.parameters() if p.grad is not None)
    grad = first.grad.to(torch.float64)  # the same parameters have gradients; one changed dtype
    first.data, first.grad = first.data.to(torch.float64), grad
    want = independent_group_norms(model, "module_type")
    result = clipper.clip_()
    assert {dtype for _, dtype in clipper._layout.kinds} == {torch.float32, torch.float64}
    assert len(clipper._layout.buckets) == 2  # a cache keyed on "which gradients exist" alone keeps 1
    assert result.norms.tolist() == pytest.approx([want[g] for g in result.groups], rel=1e-6)
