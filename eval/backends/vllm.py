"""vLLM offline generation (the Qwen2.5-Math evaluation setup): fast, GPU only, imported only when chosen.

Sampling parameters are passed explicitly, so the checkpoint's generation_config.json defaults do not
apply. With ``temperature > 0`` every request carries ``seed``, which makes its samples independent of how
vLLM batches requests.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.backends.base import BackendUnavailableError, Completion
from eval.config import BackendOptions, SamplingConfig

INSTALL_HINT = (
    "--backend vllm needs vLLM, which is not installed here: on a GPU machine run pip install -e '.[gpu]' "
    "(verl's vLLM extra), or use --backend hf (runs on CPU or GPU, slower)"
)


def import_vllm() -> Any:
    """The vllm module, or BackendUnavailableError with the install command."""
    try:
        import vllm
    except ImportError as err:
        raise BackendUnavailableError(f"{INSTALL_HINT} ({err})") from err
    return vllm


class VllmBackend:
    """``vllm.LLM`` over the checkpoint; prompts go in as token ids."""

    def __init__(self, model_dir: Path, options: BackendOptions, seed: int = 0) -> None:
        self._vllm = import_vllm()
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "seed": seed,
            "dtype": options.dtype,
            "tensor_parallel_size": options.tensor_parallel_size,
            "gpu_memory_utilization": options.gpu_memory_utilization,
        }
        if options.max_model_len is not None:
            kwargs["max_model_len"] = options.max_model_len
        self.llm = self._vllm.LLM(**kwargs)

    def sampling_params(self, sampling: SamplingConfig) -> Any:
        """vLLM ``SamplingParams`` for ``sampling``; greedy is temperature 0 with no nucleus cut."""
        return self._vllm.SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            top_k=-1,
            repetition_penalty=1.0,
            max_tokens=sampling.max_new_tokens,
            seed=None if sampling.greedy else sampling.seed,
            skip_special_tokens=True,
        )

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        requests = [{"prompt_token_ids": list(ids)} for ids in prompts]
        outputs = self.llm.generate(requests, self.sampling_params(sampling), use_tqdm=True)
        return [
            [
                Completion(text=o.text, num_tokens=len(o.token_ids), truncated=o.finish_reason == "length")
                for o in request.outputs
            ]
            for request in outputs
        ]

    def close(self) -> None:
        """Best effort: vLLM holds GPU memory until its engine is garbage-collected."""
        del self.llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
