"""One host sync per taken clip step, for every rule and with the guard (modelled on CPU: bench.host_syncs).

The clipper moves norms, scales, step counters and the rule's statistics to the host in one transfer; any
other read of a device tensor (``int(step)``, a band multiplier made with ``torch.tensor(..., device=)``)
would stall a GPU step. The first step builds the layout (index tensors), so the count is of the second.
"""

from __future__ import annotations

import pytest
import torch

from aggc_rl.clipping import RULE_NAMES, GradClipper, make_rule
from aggc_rl.clipping.guard import GuardConfig
from aggc_rl.tiny import lm_loss, tiny_qwen2
from bench.host_syncs import model_host_syncs


def clipper_with_grads(rule: str, guard: GuardConfig | None = None) -> tuple[GradClipper, list[torch.Tensor]]:
    model = tiny_qwen2()
    lm_loss(model, torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))).backward()
    for p in model.parameters():
        p.grad.mul_(100.0)  # far above every threshold: the rules scale, so the scaling path runs too
    clipper = GradClipper(model.named_parameters(), make_rule(rule), guard=guard)
    return clipper, [p.grad for p in clipper.params]


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("guard", [None, GuardConfig(skip_sigma=6.0, window=4)], ids=["plain", "guarded"])
def test_one_host_sync_per_step(rule, guard):
    clipper, grads = clipper_with_grads(rule, guard)
    clipper.clip_()
    saved = [g.clone() for g in grads]
    for g, s in zip(grads, saved, strict=True):
        g.copy_(s)
    # After the first step the rule's state lives on the device too (moving it there is then a no-op).
    on_device = [*grads, *clipper.state.values()]
    counted = model_host_syncs(lambda: clipper.clip_(progress=0.5), on_device)
    assert counted["count"] == 1, counted["sites"]
    assert not torch.equal(grads[0], saved[0]) or rule == "adagc"  # the step scaled (adagc warms up at 1.0)
