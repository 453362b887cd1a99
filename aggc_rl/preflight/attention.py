"""The attention implementation a run will build its models with, and whether this Python can build it.

verl 0.9.1 reads ``<model>.override_config.attn_implementation`` and defaults to ``flash_attention_2``
(``verl/workers/config/model.py``), which needs the ``flash_attn`` package: verl's ``[vllm]`` extra does not
install it, so without this check every worker dies at model build, after Ray and the rollout are up.
The CPU platform is exempt: its paths pass ``sdpa`` themselves.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from aggc_rl.preflight.problems import MISSING, Problem

#: verl's default when ``override_config.attn_implementation`` is not set.
VERL_DEFAULT = "flash_attention_2"
#: The package each flash implementation imports (transformers' names).
NEEDS = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}
INSTALL = {
    "flash_attn": "pip install flash-attn --no-build-isolation (a build matching your torch and CUDA)",
    "flash_attn_interface": "build flash-attention's hopper/ package (FlashAttention-3)",
}


def importable(package: str) -> bool:
    """Whether ``import package`` would find it, without importing it (flash_attn initialises CUDA)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def attention_of(model: Mapping[str, Any] | None) -> str:
    """The implementation verl will pass to ``AutoConfig.from_pretrained`` for this model config."""
    override = (model or {}).get("override_config") or {}
    return str(override.get("attn_implementation", VERL_DEFAULT))


def check_attention(
    key: str, model: Mapping[str, Any] | None, env: Mapping[str, str], *, alternative: str
) -> list[Problem]:
    """A :data:`MISSING` problem when ``model``'s attention needs a package this Python cannot import.

    ``key`` is the model config's dotted key (``actor_rollout_ref.model``, ``model``); ``alternative`` is
    how the user selects ``sdpa`` where the message is read (an override, or the scripts' ``ATTN=sdpa``).
    """
    if env.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        return []
    implementation = attention_of(model)
    package = NEEDS.get(implementation)
    if package is None or importable(package):
        return []
    return [
        Problem(
            f"{key}.override_config.attn_implementation",
            implementation,
            f"needs the {package} package, which this Python cannot import"
            + (" (verl's default when the key is not set)" if implementation == VERL_DEFAULT else ""),
            f"Either install it on every node: {INSTALL[package]}; or use PyTorch's attention: {alternative}.",
            MISSING,
        )
    ]
