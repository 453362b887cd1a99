"""Which parameters share one norm, one state and one scale.

AGGC pools each functional module type across all layers (every ``q_proj``
weight is one group); AdaGC uses one group per tensor. Group keys come from
parameter names, after stripping the wrappers that FSDP, activation
checkpointing, torch.compile and DDP add.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

SCHEMES = ("module_type", "module_type_per_layer", "tensor", "global")

#: Functional types that form a group wherever they appear in a name (biases join their projection).
FUNCTIONAL_TYPES = frozenset(
    {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "c_attn",
        "c_proj",
        "w1",
        "w2",
        "w3",
        "lm_head",
        "embed_tokens",
    }
)

#: Name tokens added by wrappers rather than by the model.
_WRAPPER_TOKENS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})
_CONTAINER_TOKENS = frozenset({"layers"})

GLOBAL_GROUP = "all"

FSDP1_HINT = (
    "use FSDP2 (actor_rollout_ref.actor.strategy=fsdp2, or our aggc engine) or FSDP1 with "
    "use_orig_params=True, so that each parameter keeps its own name"
)


def clean_name(name: str) -> str:
    """Drop wrapper tokens (and DDP's leading ``module.``) from a parameter name."""
    tokens = [t for t in name.split(".") if t not in _WRAPPER_TOKENS]
    if len(tokens) > 1 and tokens[0] == "module":
        tokens = tokens[1:]
    return ".".join(tokens)


def _check_not_flat(name: str) -> None:
    if "flat_param" in name:
        raise ValueError(
            f"parameter {name!r} is an FSDP1 flat parameter: it mixes many modules into one tensor; {FSDP1_HINT}"
        )


def _module_type(tokens: list[str]) -> str:
    module_path = tokens[:-1]
    for token in reversed(module_path):
        if token in FUNCTIONAL_TYPES:
            return token
    for token in reversed(module_path):
        if not token.isdigit() and token not in _CONTAINER_TOKENS:
            return token
    return tokens[-1]


def _layer_index(tokens: list[str]) -> str | None:
    return next((t for t in tokens[:-1] if t.isdigit()), None)


def group_of(name: str, scheme: str = "module_type") -> str:
    """Group key of a parameter name under ``scheme``.

    - ``module_type``: the functional type pooled across layers (``q_proj``, ``input_layernorm``, ``norm``...);
      LoRA parameters go to the projection that holds ``lora_A``/``lora_B``.
    - ``module_type_per_layer``: the same, split by layer (``layers.3.q_proj``).
    - ``tensor``: one group per parameter tensor (its cleaned name).
    - ``global``: one group for everything.
    """
    check_scheme(scheme)
    return _group_key(name, scheme)


def check_scheme(scheme: str) -> None:
    """Refuse a scheme name that is not one of :data:`SCHEMES`, naming the allowed ones."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown grouping scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")


def _group_key(name: str, scheme: str) -> str:
    """:func:`group_of` for a scheme already checked."""
    _check_not_flat(name)
    cleaned = clean_name(name)
    if scheme == "global":
        return GLOBAL_GROUP
    if scheme == "tensor":
        return cleaned
    tokens = cleaned.split(".")
    kind = _module_type(tokens)
    if scheme == "module_type":
        return kind
    layer = _layer_index(tokens)
    return kind if layer is None else f"layers.{layer}.{kind}"


@dataclass(frozen=True)
class Grouping:
    """Group keys in first-seen order, and the group index of every parameter."""

    names: tuple[str, ...]
    index: tuple[int, ...]
    scheme: str

    @classmethod
    def build(cls, param_names: Sequence[str], scheme: str | Callable[[str], str]) -> Grouping:
        if callable(scheme):
            key_of, label = scheme, getattr(scheme, "__name__", "custom")
            for name in param_names:
                _check_not_flat(name)
        else:
            check_scheme(scheme)
            label = scheme

            def key_of(n: str) -> str:
                return _group_key(n, scheme)  # checks each name too

        keys = [key_of(n) for n in param_names]
        names = tuple(dict.fromkeys(keys))
        position = {k: i for i, k in enumerate(names)}
        grouping = cls(names=names, index=tuple(position[k] for k in keys), scheme=label)
        grouping._check_not_collapsed(param_names)
        return grouping

    def _check_not_collapsed(self, param_names: Sequence[str]) -> None:
        """Refuse the official code's failure mode: a whole model silently in one group."""
        if self.scheme not in ("module_type", "module_type_per_layer") or len(self.names) != 1:
            return
        modules = {clean_name(n).rsplit(".", 1)[0] for n in param_names if "." in clean_name(n)}
        if len(modules) > 1 and self.names[0].rsplit(".", 1)[-1] not in FUNCTIONAL_TYPES:
            raise ValueError(
                f"grouping scheme {self.scheme!r} put {len(param_names)} parameters from {len(modules)} modules "
                f"into one group {self.names[0]!r}: the parameter names do not identify their modules. "
                f"If the model is wrapped by FSDP1, {FSDP1_HINT}; otherwise pick another scheme ({', '.join(SCHEMES)})"
            )

    def __len__(self) -> int:
        return len(self.names)
