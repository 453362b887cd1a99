"""Batched KV-cache decoding for the ``hf_cpu`` rollout: many requests, one forward per token, a sampler per row.

Prompts are left-padded to one width with an attention mask and positions counted from each prompt's first real
token, so a row sees exactly the tokens and positions it would see alone. Every step runs one forward over the
rows still decoding; a row leaves the batch (its KV cache rows dropped) at its own end-of-sequence token or
budget. Each request samples from its own ``torch.Generator`` with its own temperature, top-k and top-p, calling
``torch.multinomial`` on its own row exactly as batch-of-one decoding does: the same seed consumes the same
random stream. What batching can change is the logits' last bits (float32 sums over a padded batch run in
another order), so a sampled token can differ from batch-of-one decoding where two tokens' cumulative
probabilities straddle the draw; greedy tokens differ only on a near-tie of the top two logits.

Written against transformers' ``DynamicCache`` (``batch_select_indices``) and the ``logits_to_keep`` argument of
its causal LMs; no verl here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecodeRequest:
    """One request's prompt and sampling settings; ``temperature <= 0`` is greedy."""

    prompt_ids: tuple[int, ...]
    max_new: int
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    logprobs: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("a request needs at least one prompt token")
        if self.max_new < 1:
            raise ValueError(f"max_new={self.max_new} must be >= 1")


@dataclass(frozen=True)
class Decoded:
    """The generated tokens (the end-of-sequence token included when one ended it) and, if asked, the log-prob
    of each under the request's temperature (before top-k/top-p), as verl's vLLM server reports them."""

    token_ids: list[int]
    log_probs: list[float] | None


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask everything outside the top-k tokens and outside the top-p nucleus (with -inf), row by row."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids left-padded to the longest prompt, the attention mask, and positions counted from each
    prompt's first token (pads at position 0, masked)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class _Row:
    """One request while it decodes: its sampler and what it has generated."""

    def __init__(self, request: DecodeRequest) -> None:
        self.request = request
        self.generator = torch.Generator().manual_seed(request.seed)
        self.tokens: list[int] = []
        self.log_probs: list[float] = []

    @property
    def settings(self) -> tuple[float, int, float]:
        r = self.request
        return (r.temperature, r.top_k, r.top_p) if r.temperature > 0 else (0.0, -1, 1.0)


def _next_tokens(logits: torch.Tensor, rows: Sequence[_Row]) -> list[int]:
    """Each row's next token from its own logits row: rows with equal settings share the masking and softmax,
    and every sampling row draws with its own generator on its own (1, vocab) row, as batch-of-one does."""
    chosen = [0] * len(rows)
    by_settings: dict[tuple[float, int, float], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_settings[row.settings].append(i)
    for (temperature, top_k, top_p), members in by_settings.items():
        part = logits[members]
        if temperature <= 0:
            scaled = part
            tokens = part.argmax(-1).tolist()
        else:
            scaled = part / temperature
            probs = torch.softmax(filter_logits(scaled, top_k, top_p), dim=-1)
            tokens = [
                int(torch.multinomial(probs[j : j + 1], 1, generator=rows[i].generator))
                for j, i in enumerate(members)
            ]
        want = [j for j, i in enumerate(members) if rows[i].request.logprobs]
        if want:
            logp = torch.log_softmax(scaled[want].float(), dim=-1)
            picked = logp.gather(-1, torch.tensor([tokens[j] for j in want])[:, None]).squeeze(-1).tolist()
            for j, value in zip(want, picked, strict=True):
                rows[members[j]].log_probs.append(value)
        for j, i in enumerate(members):
            chosen[i] = tokens[j]
    return chosen


@torch.no_grad()
def decode(model, requests: Sequence[DecodeRequest], eos_ids: set[int], pad_id: int) -> list[Decoded]:
    """Generate every request in one batch; results in request order."""
    if not requests:
        return []
    rows = [_Row(r) for r in requests]
    ids, mask, positions = left_pad([r.prompt_ids for r in requests], pad_id)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    past, logits = out.past_key_values, out.logits[:, -1, :]
    active = list(range(len(rows)))  # indices into rows of the batch's rows, in batch order
    next_pos = positions[:, -1] + 1
    while True:
        tokens = _next_tokens(logits, [rows[i] for i in active])
        keep = []
        for slot, (i, token) in enumerate(zip(active, tokens, strict=True)):
            row = rows[i]
            row.tokens.append(token)
            if token not in eos_ids and len(row.tokens) < row.request.max_new:
                keep.append(slot)
        if not keep:
            break
        if len(keep) < len(active):  # rows that ended leave the batch and its cache
            index = torch.tensor(keep, dtype=torch.long)
            past.batch_select_indices(index)
            mask, next_pos = mask[index], next_pos[index]
            active = [active[s] for s in keep]
            tokens = [tokens[s] for s in keep]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype)], dim=1)
        out = model(
            input_ids=torch.tensor(tokens, dtype=torch.long)[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            past_key_values=past,
            use_cache=True,
        )
        past, logits = out.past_key_values, out.logits[:, -1, :]
        next_pos = next_pos + 1
    return [Decoded(row.tokens, row.log_probs if row.request.logprobs else None) for row in rows]
