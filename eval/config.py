"""Settings of an evaluation run, checked when built so a bad flag fails before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class SamplingConfig:
    """How to decode: greedy (temperature 0, one sample) by default, or ``n`` samples at ``temperature``."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--n {self.n}: must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"--temperature {self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p {self.top_p}: must lie in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens {self.max_new_tokens}: must be >= 1")
        if self.greedy and self.n > 1:
            raise ValueError(
                f"--n {self.n} with --temperature 0: greedy decoding gives {self.n} identical samples; "
                "pass --temperature > 0 (e.g. 0.6) for pass@k / maj@k"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class BackendOptions:
    """Engine settings; ``batch_size``/``device`` are the HF backend's, the rest vLLM's (dtype both)."""

    batch_size: int = 16
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on a CPU
    device: str | None = None  # HF only; None = cuda when available, else cpu
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: must be >= 1")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype {self.dtype!r}: allowed {', '.join(DTYPES)}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"--tensor-parallel-size {self.tensor_parallel_size}: must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"--gpu-memory-utilization {self.gpu_memory_utilization}: must lie in (0, 1]")


@dataclass(frozen=True)
class EvalConfig:
    """One ``python -m eval.run`` invocation."""

    models: tuple[Path, ...]
    labels: tuple[str, ...]
    task: str
    backend: str
    data: Path
    out: Path
    method: str | None = None  # GSM8K scoring method; None = the task's default
    limit: int | None = None
    use_chat_template: bool = True
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    options: BackendOptions = field(default_factory=BackendOptions)

    def __post_init__(self) -> None:
        if len(self.models) != len(self.labels):
            raise ValueError(f"{len(self.models)} models but {len(self.labels)} labels")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}: must be >= 1")
