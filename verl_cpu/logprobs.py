"""Token log-probabilities without verl's per-row loop, on the CPU platform.

Patch for verl 0.9.1, applied only when ``VERL_PLATFORM=cpu``. ``verl.utils.torch_functional.logprobs_from_logits``
uses flash-attn's cross-entropy kernel where it is installed (every GPU run) and otherwise
``logprobs_from_logits_v2``, which takes one ``logsumexp`` per row of the logits to keep the peak memory of a
150k-word vocabulary down. With padding removed a row is a token, so on the CPU that is a Python loop of
~1,700 calls per step on the lab's proxy, forward and backward: 70 ms of a 200 ms train step at vocabulary
264 (measured 2026-12-03, one thread). The replacement computes the same quantity, ``x[label] -
logsumexp(x)``, over chunks of rows bounded in elements, so the peak memory stays bounded and the loop runs a
few times per step instead of once per token. Results agree with verl's to float rounding (the sums are the
same reductions, grouped differently). Dtypes other than float32/float64 go to verl's function unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: Elements of logits per chunk (64 MiB of float32): one chunk for a tiny vocabulary, ~100 rows per chunk at
#: a 150k vocabulary.
CHUNK_ELEMENTS = 1 << 24

_original: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def logprobs_chunked(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[labels]`` for float32/float64 logits of shape (..., vocab); labels (...)."""
    if logits.dtype not in (torch.float32, torch.float64):
        assert _original is not None, "logprobs_chunked on a non-float32 dtype before the patch was installed"
        return _original(logits, labels)
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    rows = max(1, CHUNK_ELEMENTS // vocab)
    lse = torch.cat([torch.logsumexp(chunk, dim=-1) for chunk in flat.split(rows)])
    picked = torch.gather(flat, -1, labels.reshape(-1, 1)).squeeze(-1)
    return (picked - lse).reshape(labels.shape)


def install() -> None:
    """Rebind ``verl.utils.torch_functional.logprobs_from_logits_v2`` (looked up by global name at each call
    of ``logprobs_from_logits``). Idempotent."""
    global _original
    import verl.utils.torch_functional as tf

    if tf.logprobs_from_logits_v2 is logprobs_chunked:
        return
    _original = tf.logprobs_from_logits_v2
    tf.logprobs_from_logits_v2 = logprobs_chunked
