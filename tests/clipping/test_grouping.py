"""Parameter name -> group key, for every scheme, and the refusals that prevent collapsed groups."""

from __future__ import annotations

import pytest

from aggc_rl.clipping import SCHEMES, Grouping, group_of
from aggc_rl.tiny import tiny_qwen2

QWEN2_EXPECTED = {
    "model.embed_tokens.weight": "embed_tokens",
    "model.layers.0.self_attn.q_proj.weight": "q_proj",
    "model.layers.0.self_attn.q_proj.bias": "q_proj",
    "model.layers.1.self_attn.k_proj.bias": "k_proj",
    "model.layers.0.self_attn.v_proj.weight": "v_proj",
    "model.layers.0.self_attn.o_proj.weight": "o_proj",
    "model.layers.0.mlp.gate_proj.weight": "gate_proj",
    "model.layers.0.mlp.up_proj.weight": "up_proj",
    "model.layers.1.mlp.down_proj.weight": "down_proj",
    "model.layers.0.input_layernorm.weight": "input_layernorm",
    "model.layers.0.post_attention_layernorm.weight": "post_attention_layernorm",
    "model.norm.weight": "norm",
    "lm_head.weight": "lm_head",
    # wrappers added by FSDP1(use_orig_params), activation checkpointing, torch.compile, DDP
    "_fsdp_wrapped_module.model.layers.0._checkpoint_wrapped_module.mlp.up_proj.weight": "up_proj",
    "_orig_mod.model.layers.3.self_attn.q_proj.weight": "q_proj",
    "module.model.norm.weight": "norm",
    # GPT-2 / Llama-style names from the official list
    "transformer.h.0.attn.c_attn.weight": "c_attn",
    "transformer.h.0.mlp.c_proj.bias": "c_proj",
    "layers.2.feed_forward.w3.weight": "w3",
    # Qwen3 per-head norms fall back to the holding module
    "model.layers.0.self_attn.q_norm.weight": "q_norm",
}

LORA_EXPECTED = {
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight": "q_proj",
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight": "q_proj",
    "base_model.model.model.layers.5.mlp.down_proj.lora_B.default.weight": "down_proj",
    "base_model.model.model.layers.1.self_attn.o_proj.lora_A.adapter_x.weight": "o_proj",
}


@pytest.mark.parametrize(("name", "key"), [*QWEN2_EXPECTED.items(), *LORA_EXPECTED.items()])
def test_module_type(name, key):
    assert group_of(name) == key
    assert group_of(name, "module_type") == key


def test_module_type_per_layer():
    assert group_of("model.layers.11.mlp.down_proj.weight", "module_type_per_layer") == "layers.11.down_proj"
    assert group_of("model.layers.0.self_attn.q_proj.bias", "module_type_per_layer") == "layers.0.q_proj"
    assert (
        group_of("model.layers.3.input_layernorm.weight", "module_type_per_layer")
        == "layers.3.input_layernorm"
    )
    assert group_of("model.embed_tokens.weight", "module_type_per_layer") == "embed_tokens"
    assert group_of("model.norm.weight", "module_type_per_layer") == "norm"


def test_tensor_and_global():
    name = "_fsdp_wrapped_module.model.layers.0.self_attn.q_proj.weight"
    assert group_of(name, "tensor") == "model.layers.0.self_attn.q_proj.weight"
    assert group_of(name, "global") == "all"


def test_unknown_scheme_lists_allowed():
    with pytest.raises(ValueError, match=r"unknown grouping scheme 'layer'.*" + ", ".join(SCHEMES)):
        group_of("model.norm.weight", "layer")


@pytest.mark.parametrize("name", ["_fsdp_wrapped_module._flat_param", "_fsdp_wrapped_module.flat_param_0"])
def test_fsdp1_flat_parameters_are_refused(name):
    with pytest.raises(ValueError, match=r"FSDP1 flat parameter.*FSDP2.*use_orig_params=True"):
        group_of(name)
    with pytest.raises(ValueError, match="FSDP2"):
        Grouping.build([name, "lm_head.weight"], "module_type")


def test_tiny_qwen2_has_the_twelve_functional_groups():
    names = [n for n, _ in tiny_qwen2().named_parameters()]
    grouping = Grouping.build(names, "module_type")
    assert set(grouping.names) == {
        "embed_tokens",
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "input_layernorm",
        "post_attention_layernorm",
        "norm",
        "lm_head",
    }
    assert len(grouping.index) == len(names)
    # every q_proj tensor (weights and biases of both layers) lands in the same group
    q = grouping.names.index("q_proj")
    assert sum(1 for i in grouping.index if i == q) == 4
    per_layer = Grouping.build(names, "module_type_per_layer")
    assert len(per_layer) == 2 * 9 + 3
    assert len(Grouping.build(names, "tensor")) == len(names)
    assert Grouping.build(names, "global").names == ("all",)


def test_collapsed_grouping_is_refused():
    """Names that do not say which module they belong to would silently make one global group."""
    names = ["blocks.0.weight", "blocks.1.weight", "blocks.2.weight"]
    with pytest.raises(ValueError, match=r"one group 'blocks'.*FSDP2"):
        Grouping.build(names, "module_type")
    # fine when it is one functional type across layers (e.g. LoRA on q_proj only), or asked for explicitly
    assert Grouping.build(
        ["layers.0.q_proj.lora_A.weight", "layers.1.q_proj.lora_A.weight"], "module_type"
    ).names == ("q_proj",)
    assert len(Grouping.build(names, "tensor")) == 3


def test_custom_key_function():
    grouping = Grouping.build(["a.x", "b.y", "a.z"], lambda n: n.split(".")[0])
    assert grouping.names == ("a", "b") and grouping.index == (0, 1, 0)
