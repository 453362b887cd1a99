"""One model's load, generation and release, in this process or in a child process of its own.

vLLM keeps GPU memory (weights, KV cache, CUDA graphs, and in its V1 engine a separate engine-core process)
past ``del llm``, ``gc.collect()`` and ``torch.cuda.empty_cache()``, and its teardown API has changed between
releases. Evaluating several checkpoints in one process would then build the next engine beside the
previous one (``gpu_memory_utilization`` 0.9 each) and fail. A child process that has exited has returned
every byte, whatever the vLLM version: :func:`generate_isolated` joins the child before it returns, so the
next model always loads into a free GPU.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.backends.base import Completion
from eval.config import BackendOptions, SamplingConfig

#: Backends whose engine must run in a child process of its own (see the module docstring).
ISOLATED_BACKENDS = frozenset({"vllm"})


@dataclass(frozen=True)
class Generated:
    """Completions ``[prompt][sample]`` and the seconds spent loading and generating."""

    completions: list[list[Completion]]
    load_seconds: float
    generate_seconds: float


def generate_here(
    loader: Callable[..., Any],
    name: str,
    model: Path,
    tokenizer: Any,
    options: BackendOptions,
    seed: int,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingConfig,
    label: str,
) -> Generated:
    """Load ``model`` into backend ``name``, generate, and close it (also when generation fails)."""
    started = time.perf_counter()
    print(f"[{label}] loading {model} ({name})", file=sys.stderr, flush=True)
    backend = loader(name, model, tokenizer, options, seed)
    loaded = time.perf_counter()
    print(
        f"[{label}] generating {len(prompts)} prompts x {sampling.n} sample(s), "
        f"max {sampling.max_new_tokens} new tokens",
        file=sys.stderr,
        flush=True,
    )
    try:
        completions = backend.generate(prompts, sampling)
    finally:
        backend.close()
    return Generated(completions, loaded - started, time.perf_counter() - loaded)


def generate_isolated(*args: Any) -> Generated:
    """:func:`generate_here` in a spawned child process, which has exited (and been reaped) on return.

    Arguments as :func:`generate_here`; ``loader`` must be importable by name (a module-level function).
    An exception in the child is raised here, with its type.
    """
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold a CUDA context
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(generate_here, *args).result()
