"""The lab-only engine: the project's ``aggc_fsdp2`` engine with fault hooks and a per-group recorder.

:class:`LabClipEngine` subclasses :class:`ClipFSDPEngine` and is registered under its own backend name
:data:`LAB_BACKEND` by :func:`register_lab_engine`, which only the lab calls. A normal training run never
builds it (``actor.strategy`` selects ``aggc_fsdp2``, and nothing outside this package registers the
lab's name), so nothing in production can trigger a fault. The hooks act only on the step armed with
:meth:`LabClipEngine.arm`:

* ``loss_spike``: the loss of every micro-batch of that optimizer step is multiplied by ``scale``
  (a wrapper around verl's PPO loss, inside ``train_batch``);
* ``group_spike``: after backward, before the clipper, the gradient of every parameter of one
  functional group is multiplied by ``scale``.

On every step the engine also records the pre-clip L2 norm of each ``module_type`` group (after the
injection, before the clipper), so every arm is measured in the same groups whatever its own grouping
(AdaGC clips per tensor). World size 1 only: the local shard is the whole gradient.

Import it only after verl's platform is chosen (``VERL_PLATFORM=cpu`` on a CPU machine).
"""

from __future__ import annotations

import torch

from aggc_rl.clipping import group_of
from aggc_rl.inprocess.faults import MEASURE_SCHEME, Fault
from aggc_rl.inprocess.shards import local
from verl_patches.engine.clip_engine import DEVICES, ClipFSDPEngine
from verl_patches.engine.registry import register_engine

#: The lab's own engine backend name (never set by a training config).
LAB_BACKEND = "aggc_fsdp2_lab"


class LabClipEngine(ClipFSDPEngine):
    """``aggc_fsdp2`` plus fault hooks for one armed step and per-group pre-clip norms (lab only)."""

    def initialize(self) -> None:
        super().initialize()
        self.fault: Fault | None = None
        self.steps_done = 0  # optimizer steps taken through train_batch
        self.fault_fired = False
        self.measure_groups: dict[str, list[str]] = {}
        for name, param in self.module.named_parameters():
            if not param.requires_grad:  # frozen (the base weights under LoRA): never a gradient
                continue
            self.measure_groups.setdefault(group_of(name, MEASURE_SCHEME), []).append(name)
        self.pre_norms: dict[str, float] = {}  # the last step's pre-clip norms, measured groups
        # A list: every step's pre-clip gradients are appended to it (lab v2's warm-up); None: not recorded.
        self.record_grads: list[dict[str, torch.Tensor]] | None = None

    def arm(self, fault: Fault | None) -> None:
        """Inject ``fault`` when the engine reaches its step (None or kind 'none': nothing)."""
        if (
            fault is not None
            and fault.kind in ("group_spike", "inf_group")
            and fault.group not in self.measure_groups
        ):
            raise ValueError(
                f"group_spike on {fault.group!r}: no such group; groups: {', '.join(self.measure_groups)}"
            )
        self.fault = fault if fault is not None and fault.in_engine else None
        self.fault_fired = False

    def _armed(self, kind: str) -> bool:
        f = self.fault
        return f is not None and f.kind == kind and f.active(self.steps_done)

    def train_batch(self, data, loss_function):
        self.fault_fired = False  # per step: did the fault hit this one
        if self._armed("loss_spike"):
            scale = self.fault.scale

            def spiked_loss(*args, **kwargs):
                loss, metrics = loss_function(*args, **kwargs)
                return loss * scale, metrics

            self.fault_fired = True
            outputs = super().train_batch(data, spiked_loss)
        else:
            outputs = super().train_batch(data, loss_function)
        self.steps_done += 1
        return outputs

    @torch.no_grad()
    def optimizer_step(self) -> float:
        params = dict(self.module.named_parameters())
        if self._armed("group_spike"):
            grads = [local(params[n].grad) for n in self.measure_groups[self.fault.group]]
            torch._foreach_mul_([g for g in grads if g is not None], self.fault.scale)
            self.fault_fired = True
        elif self._armed("random_direction"):
            grads = [local(p.grad) for p in params.values() if p.grad is not None]
            total = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g.double()) for g in grads])
            )
            gen = torch.Generator().manual_seed(self.fault.seed * 1_000_003 + self.steps_done)
            noise = [torch.randn(g.shape, generator=gen, dtype=torch.float64) for g in grads]
            size = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in noise]))
            for g, x in zip(grads, noise, strict=True):
                g.add_((x * (self.fault.scale * total / size)).to(g.dtype))
            self.fault_fired = True
        elif self._armed("inf_group"):
            first = next(n for n in self.measure_groups[self.fault.group] if params[n].grad is not None)
            local(params[first].grad).view(-1)[0] = float("inf")
            self.fault_fired = True
        if self.record_grads is not None:
            self.record_grads.append(
                {n: local(p.grad).detach().clone() for n, p in params.items() if p.grad is not None}
            )
        self.pre_norms = {
            group: float(
                torch.linalg.vector_norm(
                    torch.stack(
                        [
                            torch.linalg.vector_norm(local(params[n].grad).double())
                            for n in names
                            if params[n].grad is not None
                        ]
                    )
                )
            )
            for group, names in self.measure_groups.items()
        }
        return super().optimizer_step()


def register_lab_engine() -> None:
    """Make :data:`LAB_BACKEND` buildable; only the lab calls this (idempotent)."""
    register_engine(LabClipEngine, model_type="language_model", backends=(LAB_BACKEND,), devices=DEVICES)
