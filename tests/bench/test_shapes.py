"""The benchmark shapes are the real models' tensors (checked against transformers' Qwen2 on the tiny ones)."""

from __future__ import annotations

import pytest
import torch

from bench.shapes import FULL_SIZES, TINY_SIZES, qwen2_config_kwargs, qwen2_shapes


@pytest.mark.parametrize("size", TINY_SIZES)
def test_shapes_match_qwen2_for_causal_lm(size: str) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**qwen2_config_kwargs(size)))
    assert [(n, tuple(p.shape)) for n, p in model.named_parameters()] == qwen2_shapes(size)


def test_full_sizes_have_their_published_parameter_counts() -> None:
    billions = {s: sum(torch.Size(shape).numel() for _, shape in qwen2_shapes(s)) / 1e9 for s in FULL_SIZES}
    assert billions == pytest.approx(
        {"qwen2.5-0.5b": 0.494, "qwen2.5-1.5b": 1.544, "qwen2.5-3b": 3.086, "qwen2.5-7b": 7.616}, abs=0.001
    )
