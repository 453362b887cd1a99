"""Parameter shapes of real policies, for benchmarks that need realistic gradient sets without downloads."""

from __future__ import annotations

# (vocab, hidden, intermediate, layers, heads, kv_heads, tied embeddings)
QWEN2_CONFIGS = {
    "qwen2.5-0.5b": (151936, 896, 4864, 24, 14, 2, True),
    "qwen2.5-1.5b": (151936, 1536, 8960, 28, 12, 2, True),
    "qwen2.5-3b": (151936, 2048, 11008, 36, 16, 2, True),
}


def qwen2_shapes(model: str = "qwen2.5-0.5b") -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every trainable tensor of a Qwen2-architecture model, in module order."""
    vocab, hidden, inter, layers, heads, kv_heads, tied = QWEN2_CONFIGS[model]
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}"
        out += [
            (f"{p}.self_attn.q_proj.weight", (hidden, hidden)),
            (f"{p}.self_attn.q_proj.bias", (hidden,)),
            (f"{p}.self_attn.k_proj.weight", (kv, hidden)),
            (f"{p}.self_attn.k_proj.bias", (kv,)),
            (f"{p}.self_attn.v_proj.weight", (kv, hidden)),
            (f"{p}.self_attn.v_proj.bias", (kv,)),
            (f"{p}.self_attn.o_proj.weight", (hidden, hidden)),
            (f"{p}.mlp.gate_proj.weight", (inter, hidden)),
            (f"{p}.mlp.up_proj.weight", (inter, hidden)),
            (f"{p}.mlp.down_proj.weight", (hidden, inter)),
            (f"{p}.input_layernorm.weight", (hidden,)),
            (f"{p}.post_attention_layernorm.weight", (hidden,)),
        ]
    out.append(("model.norm.weight", (hidden,)))
    if not tied:
        out.append(("lm_head.weight", (vocab, hidden)))
    return out
