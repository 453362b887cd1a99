"""The proxy's task as the runs see it: compact Knights-and-Knaves prompts, batched sampling, the scorer.

Puzzles come from the project's procedural generator (:mod:`aggc_rl.data.knights_knaves`) and responses
are scored by the project's reward router (:mod:`aggc_rl.rewards`, the Logic-RL scheme, -3..3). To fit
dozens of runs on two CPU cores, the prompt is the puzzle alone (no system prompt, no island intro:
~170 byte tokens instead of ~600) and the tiny policy is warm-started on a short answer that the scorer
accepts: ``<think></think><answer>Zoey is a knight, Ethan is a knave</answer>``. A real model
(``--model PATH``) gets the project's own prompt (system prompt and full puzzle) instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from aggc_rl.data.knights_knaves import DATA_SOURCE, INTRO, SYSTEM_PROMPT, generate_puzzle
from aggc_rl.rewards import compute_score
from verl_cpu.decoding import left_pad

#: The K&K scorer's range (format +-1 plus answer +2 .. -2): reward_noise draws from it uniformly.
REWARD_RANGE = (-3.0, 3.0)
_QUESTION = " So who is a knight and who is a knave?"


def stable_seed(*parts: Any) -> int:
    """A seed from any repr-able parts, the same in every process and Python version."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**62)


def puzzles_for(seed: int, step: int, count: int, people: int, split: str = "train"):
    """The puzzles of one step: a function of (split, seed, step) only, the same in every arm and fault."""
    return [generate_puzzle(people, seed=stable_seed(split, seed, step, i) % (2**31)) for i in range(count)]


def compact_text(puzzle) -> str:
    return puzzle.text.replace(INTRO, "").replace(_QUESTION, "").strip()


def chat(puzzle, compact: bool) -> list[dict[str, str]]:
    if compact:
        return [{"role": "user", "content": compact_text(puzzle)}]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": puzzle.text}]


def short_answer(puzzle) -> str:
    roles = ", ".join(
        f"{n} is a {'knight' if k else 'knave'}" for n, k in zip(puzzle.names, puzzle.solution, strict=True)
    )
    return f"<think></think><answer>{roles}</answer>"


def _encode(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


# -- the sampler ---------------------------------------------------------------------------------------------------


class Sampler:
    """An HF copy of the policy that generates with per-token log-probs; weights synced from the engine."""

    def __init__(self, model_path: str | Path, device: str = "cpu", compact: bool = True) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
        self.device = device
        self.compact = compact
        self.pad_id = self.tokenizer.pad_token_id
        self.eos_id = self.tokenizer.eos_token_id

    def load(self, named: dict[str, torch.Tensor]) -> None:
        own = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in named.items():
                own[name].copy_(tensor.to(own[name].device, own[name].dtype))

    def encode(self, puzzles) -> list[list[int]]:
        return [_encode(self.tokenizer, chat(p, self.compact)) for p in puzzles]

    def left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts left-padded to one width (generation appends on the right), with their attention mask."""
        ids, mask, _ = left_pad(prompts, self.pad_id)
        return ids, mask

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new: int, seed: int | None) -> dict[str, torch.Tensor]:
        """Sample at temperature 1 (``seed``) or greedy (None); right-padded responses and their log-probs.

        A plain KV-cache loop (no top-k/top-p, no logits processors): the log-prob of each sampled token is
        the one verl's PPO loss recomputes at temperature 1.
        """
        ids, mask = self.left_pad(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        gen = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        batch = ids.shape[0]
        prompt_mask = mask.clone()
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1, :].float()
        next_pos = pos[:, -1] + 1
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        tokens, logps, valid = [], [], []
        for _ in range(max_new):
            logp_all = torch.log_softmax(logits, dim=-1)
            if gen is None:
                token = logits.argmax(-1)
            else:
                token = torch.multinomial(logp_all.exp(), 1, generator=gen).squeeze(-1)
            valid.append(~done)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens.append(token)
            logps.append(logp_all.gather(-1, token[:, None]).squeeze(-1))
            done = done | (token == self.eos_id)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=self.device)], dim=1)
            out = self.model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=past,
                use_cache=True,
            )
            past, logits = out.past_key_values, out.logits[:, -1, :].float()
            next_pos = next_pos + 1
        resp = torch.stack(tokens, dim=1)
        rmask = torch.stack(valid, dim=1).long()
        logp = torch.stack(logps, dim=1) * rmask
        pad = max_new - resp.shape[1]
        if pad > 0:  # every sequence stopped early
            resp = torch.nn.functional.pad(resp, (0, pad), value=self.pad_id)
            logp = torch.nn.functional.pad(logp, (0, pad))
            rmask = torch.nn.functional.pad(rmask, (0, pad))
        return {
            "prompts": ids.cpu(),
            "prompt_mask": prompt_mask.cpu(),
            "responses": resp.cpu(),
            "response_mask": rmask.cpu(),
            "log_probs": logp.cpu(),
        }

    def texts(self, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [
            self.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True)
            for r, m in zip(responses, mask, strict=True)
        ]

    @torch.no_grad()
    def response_logprobs(self, probe: dict[str, torch.Tensor]) -> torch.Tensor:
        """Full next-token log-distributions on the probe's response positions: (N, T, V)."""
        ids = torch.cat([probe["prompts"], probe["responses"]], dim=1).to(self.device)
        mask = torch.cat([probe["prompt_mask"], probe["response_mask"]], dim=1).to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
        p = probe["prompts"].shape[1]
        return torch.log_softmax(logits[:, p - 1 : -1], dim=-1).cpu()


def probe_kl(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over response tokens of KL(before || after)."""
    kl = (before.exp() * (before - after)).sum(-1)
    m = mask.double()
    return float((kl.double() * m).sum() / m.sum().clamp(min=1))


def score(texts: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    results = [compute_score(DATA_SOURCE, t, a) for t, a in zip(texts, answers, strict=True)]
    return (
        torch.tensor([r["score"] for r in results], dtype=torch.float32),
        torch.tensor([r["acc"] for r in results], dtype=torch.float32),
    )
