"""Hugging Face ``generate`` with batched, left-padded prompts: slow but runs anywhere, CPU included.

The checkpoint's ``generation_config.json`` sampling defaults (e.g. Qwen's ``repetition_penalty`` 1.05,
``top_k`` 20) are dropped: transformers would fill every knob we leave unset from them, and evaluation
must decode exactly as asked. Only its end-of-sequence ids are kept.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from eval.backends.base import Completion
from eval.config import BackendOptions, SamplingConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


class HFBackend:
    """``AutoModelForCausalLM`` on one device; prompts sorted by length so each batch pads little."""

    def __init__(self, model_dir: Path, tokenizer: Any, options: BackendOptions) -> None:
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if options.dtype == "auto":
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            dtype = _DTYPES[options.dtype]
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = options.batch_size
        eos = _as_list(self.model.generation_config.eos_token_id) + _as_list(tokenizer.eos_token_id)
        self.eos_ids = sorted(set(eos))
        if not self.eos_ids:
            raise ValueError(
                f"{model_dir}: neither generation_config.json nor the tokenizer names an EOS token"
            )
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]
        self.model.generation_config = GenerationConfig(
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id, bos_token_id=tokenizer.bos_token_id
        )

    def _generation_config(self, sampling: SamplingConfig) -> Any:
        from transformers import GenerationConfig

        common = {
            "max_new_tokens": sampling.max_new_tokens,
            "num_return_sequences": sampling.n,
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
        }
        if sampling.greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(
            do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0, **common
        )

    def _completion(self, tokens: list[int]) -> Completion:
        """Cut at the first EOS (counted as generated); no EOS means the length limit stopped it."""
        stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens if stop is None else tokens[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(
            text=text, num_tokens=len(tokens) if stop is None else stop + 1, truncated=stop is None
        )

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        """Left-pad each batch to its longest prompt, generate, restore prompt order."""
        from tqdm.auto import tqdm

        torch.manual_seed(sampling.seed)
        config = self._generation_config(sampling)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: OOM shows early
        results: list[list[Completion]] = [[] for _ in prompts]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="generate (hf)", unit="batch", file=sys.stderr, mininterval=5):
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                if prompts[i]:
                    ids[row, width - len(prompts[i]) :] = torch.tensor(list(prompts[i]), dtype=torch.long)
                    mask[row, width - len(prompts[i]) :] = 1
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config
            )
            generated = out[:, width:].tolist()
            for row, i in enumerate(batch):
                samples = generated[row * sampling.n : (row + 1) * sampling.n]
                results[i] = [self._completion(tokens) for tokens in samples]
        return results

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
