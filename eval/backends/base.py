"""What every generation engine shares: the completion it returns, the interface it offers, the error it raises
when it is not installed. A module of its own so the engines import it without importing the package that
loads them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from eval.config import SamplingConfig


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
