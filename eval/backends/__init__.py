"""Generation engines behind one small interface: token-id prompts in, ``n`` completions per prompt out.

    backend = load_backend("hf", model_dir, tokenizer, BackendOptions(batch_size=8))
    completions = backend.generate(prompt_ids, SamplingConfig(n=4, temperature=0.6))  # [prompt][sample]
    backend.close()

Prompts arrive as token ids so both engines see exactly the tokens the chat template produced. Each engine
module is imported only when chosen: the vLLM one needs a GPU install, the HF one needs only torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eval.config import BackendOptions, SamplingConfig

BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class Completion:
    """One generated response: text without special tokens, tokens generated (EOS included), and
    whether it stopped at ``max_new_tokens`` rather than at an end-of-sequence token."""

    text: str
    num_tokens: int
    truncated: bool


class Backend(Protocol):
    """What the harness needs from an engine."""

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        """``sampling.n`` completions for each prompt, in prompt order."""
        ...

    def close(self) -> None:
        """Free the model (GPU memory) before the next checkpoint loads."""
        ...


class BackendUnavailableError(RuntimeError):
    """The chosen engine is not installed; the message says how to install it."""


def load_backend(
    name: str, model_dir: Path, tokenizer: Any, options: BackendOptions, seed: int = 0
) -> Backend:
    """Load ``model_dir`` into the engine called ``name`` (``hf`` or ``vllm``)."""
    if name == "hf":
        from eval.backends.hf import HFBackend

        return HFBackend(model_dir, tokenizer, options)
    if name == "vllm":
        from eval.backends.vllm import VllmBackend

        return VllmBackend(model_dir, options, seed)
    raise ValueError(f"unknown --backend {name!r}; allowed: {', '.join(BACKENDS)}")
