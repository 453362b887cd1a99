"""Generation engines behind one small interface: token-id prompts in, ``n`` completions per prompt out.

    backend = load_backend("hf", model_dir, tokenizer, BackendOptions(batch_size=8))
    completions = backend.generate(prompt_ids, SamplingConfig(n=4, temperature=0.6))  # [prompt][sample]
    backend.close()

Prompts arrive as token ids so both engines see exactly the tokens the chat template produced. Each engine
module is imported only when chosen: the vLLM one needs a GPU install, the HF one needs only torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.backends.base import Backend, BackendUnavailableError, Completion
from eval.config import BackendOptions

BACKENDS = ("hf", "vllm")
__all__ = ["BACKENDS", "Backend", "BackendUnavailableError", "Completion", "load_backend"]


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
