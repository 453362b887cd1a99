"""Lab v2's measurements: what a fault changed, as errors of a faulted twin against its clean twin.

Sizes are blind to direction (a x100 spike can change an update by ~100% while its norm ratio reads 1.14), so
every measure here is a difference of two trajectories that share everything but the fault
(:mod:`aggc_rl.lab.replay`). Per group (``groups``: name -> parameter names) and in total ("all"):

* ``fault_error``: ||Δθ_f - Δθ_c|| / ||Δθ_c|| at the fault step (Δθ: the update the optimizer applied);
* ``fault_cosine``: cos(Δθ_f, Δθ_c) at the fault step;
* ``drift``: ||θ_f(t) - θ_c(t)|| / ||Δθ_c(fault step)|| after each step t (in clean fault-step updates);
* ``m_error``: ||m_f(t) - m_c(t)|| / ||m_c(t)|| (Adam's first moment) after each step;
* ``v_ratio``: the median over elements of v_f(t) / v_c(t) (Adam's second moment) after each step.

Pure functions of tensors: no engine, no verl.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

ALL = "all"
#: Below this, a clean fault-step update counts as zero (the fault had nothing to act on: a null fault).
NULL_UPDATE = 1e-12


def _sq(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    return sum(float(tensors[n].double().pow(2).sum()) for n in names)


def _dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    return sum(float((a[n].double() * b[n].double()).sum()) for n in names)


def _diff(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names) -> dict[str, torch.Tensor]:
    return {n: a[n].double() - b[n].double() for n in names}


def with_total(groups: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``groups`` plus ``"all"``: every parameter of every group."""
    out = {g: list(names) for g, names in groups.items()}
    out[ALL] = [n for names in groups.values() for n in names]
    return out


def update(trajectory: Sequence[Mapping[str, Any]], t: int) -> dict[str, torch.Tensor]:
    """The weight change of step ``t`` (1-based position in the trajectory: after minus before)."""
    after, before = trajectory[t]["params"], trajectory[t - 1]["params"]
    return {n: after[n].double() - before[n].double() for n in after}


def fault_step(clean: Sequence, faulted: Sequence, groups: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """Per group: error and cosine of the faulted update against the clean one at the fault step (t = 1).
    A group whose clean update is zero gets ``None`` (nothing to compare against)."""
    dc, df = update(clean, 1), update(faulted, 1)
    out = {}
    for g, names in with_total(groups).items():
        base = _sq(dc, names) ** 0.5
        if base < NULL_UPDATE:
            out[g] = {"error": None, "cosine": None}
            continue
        err = _sq(_diff(df, dc, names), names) ** 0.5 / base
        size_f = _sq(df, names) ** 0.5
        cos = _dot(df, dc, names) / (size_f * base) if size_f > 0 else 0.0
        out[g] = {"error": err, "cosine": cos}
    return out


def drift(
    clean: Sequence, faulted: Sequence, groups: Mapping[str, Sequence[str]]
) -> dict[str, list[float | None]]:
    """Per group: ||θ_f(t) - θ_c(t)|| after every step, in units of the clean fault-step update's norm."""
    dc = update(clean, 1)
    out = {}
    for g, names in with_total(groups).items():
        unit = _sq(dc, names) ** 0.5
        out[g] = [
            (_sq(_diff(f["params"], c["params"], names), names) ** 0.5 / unit)
            if unit >= NULL_UPDATE
            else None
            for c, f in zip(clean[1:], faulted[1:], strict=True)
        ]
    return out


def moments(clean: Sequence, faulted: Sequence, groups: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """Per group, after every step: ``m_error`` (relative L2) and ``v_ratio`` (median of elementwise v_f/v_c)."""
    out = {}
    for g, names in with_total(groups).items():
        m_err, v_med = [], []
        for c, f in zip(clean[1:], faulted[1:], strict=True):
            mc = {n: c["adam"][n]["exp_avg"] for n in names}
            mf = {n: f["adam"][n]["exp_avg"] for n in names}
            base = _sq(mc, names) ** 0.5
            m_err.append(_sq(_diff(mf, mc, names), names) ** 0.5 / base if base > 0 else None)
            vc = torch.cat([c["adam"][n]["exp_avg_sq"].double().flatten() for n in names])
            vf = torch.cat([f["adam"][n]["exp_avg_sq"].double().flatten() for n in names])
            keep = vc > 0
            v_med.append(float((vf[keep] / vc[keep]).median()) if bool(keep.any()) else None)
        out[g] = {"m_error": m_err, "v_ratio": v_med}
    return out


def is_null(clean: Sequence[Mapping[str, Any]], target: str = ALL) -> bool:
    """True when the clean twin's pre-clip gradient at the fault step is zero for ``target`` (a group, or
    ``"all"``): a fault that scales it changes nothing (e.g. every GRPO group at that step had uniform
    rewards). Adam still moves on momentum then, so the update cannot tell; the gradient can. Such a fault
    is excluded and reported as null."""
    norms = clean[1]["pre_norm"]
    value = (sum(v * v for v in norms.values()) ** 0.5) if target == ALL else norms[target]
    return value < NULL_UPDATE
