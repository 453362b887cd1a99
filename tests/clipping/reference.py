"""Independent scalar reference implementations of the rules in docs/algorithms.md.

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
    """AdaGC as the official code runs it, with a zero norm treated as no evidence.

    gamma[i] is None until tensor i has shown a positive norm; such a tensor is never clipped after warm-up.
    """
    gamma: list[float | None] = [None] * len(history[0])
    out = []
    for t, norms in enumerate(history, start=1):
        if t <= warmup:
            total = math.sqrt(sum(n * n for n in norms))
            g = min(1.0, lambda_abs / (total + eps))
            for i, n in enumerate(norms):
                if n > 0:
                    gamma[i] = g * n if gamma[i] is None else min(gamma[i], g * n)
            out.append([g] * len(norms))
            continue
        scales = []
        for i, n in enumerate(norms):
            if gamma[i] is None:
                scales.append(1.0)
                if n > 0:
                    gamma[i] = n
                continue
            threshold = lambda_rel * gamma[i]
            scales.append(threshold / (n + eps) if n > threshold else 1.0)
            if n > 0:
                gamma[i] = beta * gamma[i] + (1 - beta) * min(n, threshold)
        out.append(scales)
    return out, [0.0 if g is None else g for g in gamma]


def ref_zclip(
    history: list[float],
    alpha=0.97,
    z_thresh=2.5,
    max_grad_norm=1.0,
    eps=1e-6,
    warmup_steps=25,
    mode="zscore",
    clip_option="adaptive_scaling",
    clip_factor=1.0,
    skip_update_on_spike=False,
):
    """ZClip on one norm series (one group): the scale of every step, and the final (mean, var)."""
    buffer: list[float] = []
    mean = var = None
    out = []
    for n in history:
        if mean is None:
            buffer.append(n)
            if len(buffer) >= warmup_steps:
                mean = sum(buffer) / len(buffer)
                var = sum((x - mean) ** 2 for x in buffer) / len(buffer)
            out.append(1.0 if max_grad_norm is None else min(1.0, max_grad_norm / (n + 1e-6)))
            continue
        std = math.sqrt(var)
        threshold = None
        if mode == "percentile":
            if n > mean + z_thresh * std:
                threshold = mean + z_thresh * std
        else:
            z = (n - mean) / (std + eps)
            if z > z_thresh:
                if clip_option == "adaptive_scaling":
                    threshold = (mean + z_thresh * std / (z / z_thresh)) * clip_factor
                else:
                    threshold = mean
        clip = n if threshold is None else threshold
        if max_grad_norm is not None:
            clip = min(clip, max_grad_norm)
        out.append(clip / (n + 1e-6) if n > clip else 1.0)
        if threshold is not None and skip_update_on_spike:
            continue
        x = n if threshold is None else threshold
        mean = alpha * mean + (1 - alpha) * x
        var = alpha * var + (1 - alpha) * (x - mean) ** 2
    return out, (0.0 if mean is None else mean, 0.0 if var is None else var)
