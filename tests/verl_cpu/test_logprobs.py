"""The CPU platform's chunked log-probabilities agree with verl's per-row loop, values and gradients."""

from __future__ import annotations

import pytest
import torch
import verl.utils.torch_functional as tf

from verl_cpu import logprobs


@pytest.fixture
def installed(monkeypatch):
    """Installed from verl's own function (whether or not the CPU platform installed it already in this
    process); ``monkeypatch`` puts both attributes back after the test."""
    patched = tf.logprobs_from_logits_v2 is logprobs.logprobs_chunked
    original = logprobs._original if patched else tf.logprobs_from_logits_v2
    monkeypatch.setattr(tf, "logprobs_from_logits_v2", original)
    monkeypatch.setattr(logprobs, "_original", None)
    logprobs.install()
    logprobs.install()  # idempotent: the original is kept, not the replacement
    assert tf.logprobs_from_logits_v2 is logprobs.logprobs_chunked
    assert logprobs._original is original
    return original


@pytest.mark.parametrize("shape", [(37,), (3, 11)])
@pytest.mark.parametrize("chunk", [1 << 24, 50])  # one chunk; several chunks (50 elements = 5 rows of 10)
def test_matches_verl_row_loop(installed, monkeypatch, shape, chunk):
    monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", chunk)
    gen = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(*shape, 10, generator=gen, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 10, shape, generator=gen)
    weights = torch.randn(shape, generator=gen, dtype=torch.float64)

    ours = tf.logprobs_from_logits(logits, labels)  # no flash-attn here: routed to the replacement
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    ref = installed(logits, labels)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)

    assert ours.shape == labels.shape
    assert not torch.equal(ours, torch.zeros_like(ours))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-12)


def test_other_dtypes_go_to_verl(installed):
    calls = []

    def spy(logits, labels):
        calls.append(logits.dtype)
        return installed(logits, labels)

    logprobs._original = spy
    logits = torch.randn(4, 10).to(torch.bfloat16)
    labels = torch.randint(0, 10, (4,))
    tf.logprobs_from_logits(logits, labels)
    assert calls == [torch.bfloat16]
