"""Shared fixtures of the evaluation tests: a tiny local model with a chat template, and test splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggc_rl.data import gsm8k as gsm8k_data
from aggc_rl.data import knights_knaves as kk_data
from aggc_rl.data.parquet_rows import write_rows

# A template of the tests' own, so that the expected prompt text is easy to spell out.
CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)
GSM8K_RECORDS = [
    {"question": "Tom has 9 apples and buys 9 more. How many?", "answer": "9 + 9 = 18\n#### 18"},
    {"question": "What is 2 + 3?", "answer": "#### 5"},
    {
        "question": "A shop sells 1,000 pens and then 234 more pens on a long and busy day.",
        "answer": "#### 1,234",
    },
    {"question": "Seven?", "answer": "#### 7"},
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Qwen2 (positions for K&K-length prompts) whose tokenizer has a chat template."""
    from transformers import AutoTokenizer

    from verl_cpu.harness import make_tiny_model_dir

    path = tmp_path_factory.mktemp("tiny_model")
    make_tiny_model_dir(path, max_position_embeddings=2048)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_without_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from verl_cpu.harness import make_tiny_model_dir

    return Path(
        make_tiny_model_dir(
            tmp_path_factory.mktemp("tiny_model_plain"), chat_template=False, max_position_embeddings=2048
        )
    )


@pytest.fixture(scope="session")
def gsm8k_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test.parquet of the four GSM8K_RECORDS (prompts of different lengths), as aggc_rl.data.gsm8k writes."""
    path = tmp_path_factory.mktemp("gsm8k")
    write_rows(gsm8k_data.build_split(GSM8K_RECORDS, "test"), path / "test.parquet")
    return path


@pytest.fixture(scope="session")
def kk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test.parquet with two 2-person and two 3-person puzzles, as aggc_rl.data.knights_knaves writes."""
    path = tmp_path_factory.mktemp("kk")
    write_rows(kk_data.build_splits([2, 3], 0, 4, seed=0).test, path / "test.parquet")
    return path
