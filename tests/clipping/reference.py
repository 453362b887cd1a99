"""Independent scalar reference implementations of the rules in ../shared/docs/algorithms.md.

Written from the rule text with plain Python floats and explicit branches, so a
mistake in the vectorised code does not repeat here.
"""

from __future__ import annotations

import math


def ref_global(norms: list[float], max_norm: float = 1.0) -> list[float]:
    total = math.sqrt(sum(n * n for n in norms))
    return [min(1.0, max_norm / (total + 1e-6))] * len(norms)


def ref_multipliers(p, low, high, low_late, high_late, switch, transition, schedule):
    lo1 = low_late if low_late > 0 else low
    hi1 = high_late if high_late > 0 else high
    if schedule == "none" or p <= switch:
        return low, high
    if p >= switch + transition:
        return lo1, hi1
    w = (p - switch) / transition
    return low + w * (lo1 - low), high + w * (hi1 - high)


def ref_aggc(
    history: list[list[float]], progress: list[float], **knobs
) -> tuple[list[list[float]], list[float]]:
    """Scales for every step of a norm history, and the final EMA."""
    k = dict(
        beta=0.99,
        low=0.98,
        high=0.7,
        low_late=0.98,
        high_late=0.999,
        switch=0.6,
        transition=0.2,
        schedule="linear",
        raise_small=True,
        max_up=1.1,
        max_down=0.9,
        min_norm=0.0,
        ema_init="zero",
        global_max_norm=None,
    )
    k.update(knobs)
    eps = 1e-12
    ema = [0.0] * len(history[0])
    out = []
    for t, (norms, p) in enumerate(zip(history, progress, strict=True)):
        lo, hi = ref_multipliers(
            p, k["low"], k["high"], k["low_late"], k["high_late"], k["switch"], k["transition"], k["schedule"]
        )
        scales, new_ema = [], []
        for n, s in zip(norms, ema, strict=True):
            if k["ema_init"] == "first" and t == 0:
                scales.append(1.0)
                new_ema.append(n)
                continue
            lower = max(k["min_norm"], lo * s)
            upper = max(0.0, hi * s)
            if upper > 0 and n > upper + eps:
                c = upper / (n + eps)
                if k["max_down"] > 0:
                    c = max(c, k["max_down"])
            elif k["raise_small"] and lower > 0 and n < lower - eps:
                c = 1.0 if n == 0 else lower / (n + eps)
                if k["max_up"] > 0:
                    c = min(c, k["max_up"])
            else:
                c = 1.0
            scales.append(c)
            new_ema.append(k["beta"] * s + (1 - k["beta"]) * c * n)
        if k["global_max_norm"] is not None:
            total = math.sqrt(sum((c * n) ** 2 for c, n in zip(scales, norms, strict=True)))
            g = min(1.0, k["global_max_norm"] / (total + 1e-6))
            scales = [c * g for c in scales]
        ema = new_ema
        out.append(scales)
    return out, ema


def ref_adagc(history: list[list[float]], lambda_rel=1.04, beta=0.99, warmup=100, lambda_abs=1.0, eps=1e-6):
    gamma: list[float] | None = None
    out = []
    for t, norms in enumerate(history, start=1):
        if t <= warmup:
            total = math.sqrt(sum(n * n for n in norms))
            g = min(1.0, lambda_abs / (total + eps))
            clipped = [g * n for n in norms]
            gamma = clipped if gamma is None else [min(a, b) for a, b in zip(gamma, clipped, strict=True)]
            out.append([g] * len(norms))
        else:
            if gamma is None:  # warmup == 0: the first norm seeds the threshold
                gamma = list(norms)
            hs = [min(1.0, lambda_rel * gm / (n + eps)) for gm, n in zip(gamma, norms, strict=True)]
            gamma = [beta * gm + (1 - beta) * h * n for gm, h, n in zip(gamma, hs, norms, strict=True)]
            out.append(hs)
    return out, gamma
