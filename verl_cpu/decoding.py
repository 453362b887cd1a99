"""Batched KV-cache decoding for the ``hf_cpu`` rollout: many requests, one forward per token, a sampler per row.

:class:`DecodeBatch` is a running batch that requests join between tokens (continuous batching, as vLLM does):
newcomers are prefilled together, left-padded to one width with an attention mask and positions counted from
each prompt's first real token, and their KV cache is merged into the running one (the shorter side padded on
the left, masked). Every step runs one forward over the rows still decoding; a row leaves the batch (its cache
rows dropped, and the leading columns no live row uses) at its own end-of-sequence token or budget, and its
result is handed back at once. So a row sees exactly the tokens and positions it would see alone. Requests with the same prompt (verl's n samples of one
prompt) share one prefill.

Each request samples from its own ``torch.Generator`` with its own temperature, top-k and top-p, calling
``torch.multinomial`` on its own row as batch-of-one decoding does: the same seed consumes the same random
stream. What batching can change is the logits' last bits (float32 sums over a padded batch run in another
order), so a sampled token can differ from batch-of-one decoding where two tokens' cumulative probabilities
straddle the draw; greedy tokens differ only on a near-tie of the top two logits.

Written against transformers' ``DynamicCache`` (its ``layers``' ``keys``/``values``, ``batch_select_indices``)
and the ``logits_to_keep`` argument of its causal LMs; full-attention caches only. No verl here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
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
    """One request while it decodes: its key, its sampler and what it has generated."""

    def __init__(self, key: Hashable, request: DecodeRequest) -> None:
        self.key = key
        self.request = request
        self.generator = torch.Generator().manual_seed(request.seed)
        self.tokens: list[int] = []
        self.log_probs: list[float] = []

    @property
    def settings(self) -> tuple[float, int, float]:
        r = self.request
        return (r.temperature, r.top_k, r.top_p) if r.temperature > 0 else (0.0, -1, 1.0)

    def result(self) -> Decoded:
        return Decoded(self.tokens, self.log_probs if self.request.logprobs else None)


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


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``t`` with zeros prepended along ``dim`` up to ``width``."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class DecodeBatch:
    """A running batch that requests join between tokens; :meth:`step` returns the rows that finished."""

    def __init__(self, model, eos_ids: set[int], pad_id: int) -> None:
        self.model = model
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.clear()

    def clear(self) -> None:
        """Drop every row (their cache too)."""
        self.rows: list[_Row] = []
        self._past = None  # the rows' KV cache, batch order
        self._mask = torch.zeros((0, 0), dtype=torch.long)  # (rows, cache length): 0 on left padding
        self._next_pos = torch.zeros(0, dtype=torch.long)  # each row's next position
        self._logits = torch.zeros(0)  # (rows, vocab): each row's next-token logits

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def add(self, requests: Sequence[tuple[Hashable, DecodeRequest]]) -> None:
        """Prefill ``(key, request)`` pairs together and merge them into the batch (their rows go last)."""
        if not requests:
            return
        rows = [_Row(key, request) for key, request in requests]
        # One prefill per distinct prompt: the n samples of a prompt share it (their cache rows are copies).
        distinct: dict[tuple[int, ...], int] = {}
        for _, request in requests:
            distinct.setdefault(request.prompt_ids, len(distinct))
        ids, mask, positions = left_pad(list(distinct), self.pad_id)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        past, logits, next_pos = out.past_key_values, out.logits[:, -1, :], positions[:, -1] + 1
        if any(getattr(layer, "is_sliding", False) for layer in past.layers):
            raise ValueError(
                "batched decoding needs full-attention KV caches; this model has sliding-window layers"
            )
        if len(distinct) < len(rows):
            index = torch.tensor([distinct[request.prompt_ids] for _, request in requests], dtype=torch.long)
            past.batch_select_indices(index)
            mask, next_pos, logits = mask[index], next_pos[index], logits[index]
        if not self.rows:
            self._past, self._mask, self._next_pos, self._logits, self.rows = (
                past,
                mask,
                next_pos,
                logits,
                rows,
            )
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self._past.layers, past.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)])
            mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)])
        self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)])
        self._next_pos = torch.cat([self._next_pos, next_pos])
        self._logits = torch.cat([self._logits, logits])
        self.rows += rows

    def _trim(self) -> None:
        """Drop the leading cache columns that are padding in every row left (the rows that needed them have
        ended): the cache is as wide as the longest live sequence, not as old as the batch."""
        used = self._mask.any(0)
        first = int(used.nonzero()[0]) if bool(used.any()) else 0
        if first == 0:
            return
        for layer in self._past.layers:
            layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
        self._mask = self._mask[:, first:]

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, Decoded]]:
        """One token for every row; the rows that ended (EOS or budget) leave the batch and are returned."""
        if not self.rows:
            return []
        tokens = _next_tokens(self._logits, self.rows)
        keep, done = [], []
        for slot, (row, token) in enumerate(zip(self.rows, tokens, strict=True)):
            row.tokens.append(token)
            if token in self.eos_ids or len(row.tokens) >= row.request.max_new:
                done.append(row)
            else:
                keep.append(slot)
        if not keep:
            self.clear()
            return [(row.key, row.result()) for row in done]
        if len(keep) < len(self.rows):  # rows that ended leave the batch and its cache
            index = torch.tensor(keep, dtype=torch.long)
            self._past.batch_select_indices(index)
            self._mask, self._next_pos = self._mask[index], self._next_pos[index]
            self.rows = [self.rows[s] for s in keep]
            self._trim()
        self._mask = torch.cat([self._mask, torch.ones((len(keep), 1), dtype=self._mask.dtype)], dim=1)
        out = self.model(
            input_ids=torch.tensor([tokens[s] for s in keep], dtype=torch.long)[:, None],
            attention_mask=self._mask,
            position_ids=self._next_pos[:, None],
            past_key_values=self._past,
            use_cache=True,
        )
        self._past, self._logits = out.past_key_values, out.logits[:, -1, :]
        self._next_pos = self._next_pos + 1
        return [(row.key, row.result()) for row in done]


def decode(model, requests: Sequence[DecodeRequest], eos_ids: set[int], pad_id: int) -> list[Decoded]:
    """Generate every request in one batch (all joining at once); results in request order."""
    batch = DecodeBatch(model, eos_ids, pad_id)
    batch.add(list(enumerate(requests)))
    results: dict[Hashable, Decoded] = {}
    while len(batch):
        results.update(batch.step())
    return [results[i] for i in range(len(requests))]
