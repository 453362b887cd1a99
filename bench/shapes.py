"""Parameter shapes of real policies, for benchmarks that need realistic gradient sets without downloads."""

from __future__ import annotations

from typing import Any

# (vocab, hidden, intermediate, layers, heads, kv_heads, tied embeddings), from each model's config.json.
QWEN2_CONFIGS = {
    "qwen2.5-0.5b": (151936, 896, 4864, 24, 14, 2, True),
    "qwen2.5-1.5b": (151936, 1536, 8960, 28, 12, 2, True),
    "qwen2.5-3b": (151936, 2048, 11008, 36, 16, 2, True),
    "qwen2.5-7b": (152064, 3584, 18944, 28, 28, 4, False),
    # Tiny stand-ins with the same tensor layout, so CPU tests run the benchmarks' code path in seconds.
    "tiny-a": (512, 64, 160, 2, 4, 2, True),
    "tiny-b": (1024, 96, 256, 3, 4, 2, False),
}
FULL_SIZES = ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b")
TINY_SIZES = ("tiny-a", "tiny-b")


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


def qwen2_config_kwargs(model: str) -> dict[str, Any]:
    """Keyword arguments of ``transformers.Qwen2Config`` for a random model of this shape."""
    vocab, hidden, inter, layers, heads, kv_heads, tied = QWEN2_CONFIGS[model]
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=tied,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
    )
