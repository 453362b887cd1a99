"""Our parquet files load through verl's RLHFDataset, and the chat template is applied exactly once.

The tokenizer is built locally (a WordLevel vocabulary wrapped in PreTrainedTokenizerFast with a ChatML
template), so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from aggc_rl.data import gsm8k, knights_knaves
from aggc_rl.rewards import compute_score

rl_dataset = pytest.importorskip("verl.utils.dataset.rl_dataset", reason="verl is not installed")

SHARED_GSM8K_TEST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k" / "test.jsonl"
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    words = ["system", "user", "assistant", "knight", "knave", "is", "a", "the", "answer", "think"]
    backend = Tokenizer(
        models.WordLevel(vocab={t: i for i, t in enumerate(specials + words)}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHATML
    return tok


@pytest.fixture(autouse=True)
def hf_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_datasets")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def load(path: Path, tokenizer, tmp_path: Path):
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "cache_dir": str(tmp_path / "verl_cache"),
            "prompt_key": "prompt",
            "max_prompt_length": 2048,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "truncation": "error",
        }
    )
    return rl_dataset.RLHFDataset(data_files=[str(path)], tokenizer=tokenizer, config=config)


def render(tokenizer, item: dict) -> str:
    return tokenizer.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=False)


def assert_one_template(rendered: str, roles: list[str]) -> None:
    assert rendered.count("<|im_start|>") == len(roles) + 1  # one header per message, plus the assistant's
    for role in ("system", "user"):
        assert rendered.count(f"<|im_start|>{role}") == roles.count(role)
    assert rendered.endswith("<|im_start|>assistant\n")


def test_knights_knaves_parquet_loads_and_renders_once(tokenizer, tmp_path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            knights_knaves.main(["--out", str(tmp_path), "--people", "2-4", "--train", "6", "--test", "3"])
            == 0
        )
    dataset = load(tmp_path / "train.parquet", tokenizer, tmp_path)
    assert len(dataset) == 6
    for i in range(len(dataset)):
        item = dataset[i]
        assert [m["role"] for m in item["raw_prompt"]] == ["system", "user"]
        assert_one_template(render(tokenizer, item), ["system", "user"])
        assert item["index"] == i
        assert json.loads(item["extra_info"]["statements"])
        truth = item["reward_model"]["ground_truth"]
        response = f"<think>checked</think>\n<answer>{truth}</answer>"
        assert compute_score(item["data_source"], response, truth, item["extra_info"])["score"] == 3.0


@pytest.mark.parametrize("system", [None, "You are a careful math tutor."])
def test_gsm8k_parquet_loads_and_renders_once(tokenizer, tmp_path: Path, system: str | None) -> None:
    records = [
        {"question": "Tom has 3 apples and buys 15 more. How many?", "answer": "3 + 15 = 18\n#### 18"},
        {"question": "A car costs $1,234 less $34. Price?", "answer": "1234 - 34 = 1200\n#### 1,200"},
    ]
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    args = ["--out", str(tmp_path), "--test-jsonl", str(jsonl)] + (["--system", system] if system else [])
    with contextlib.redirect_stdout(io.StringIO()):
        assert gsm8k.main(args) == 0
    dataset = load(tmp_path / "test.parquet", tokenizer, tmp_path)
    assert len(dataset) == 2
    roles = ["system", "user"] if system else ["user"]
    for i in range(2):
        item = dataset[i]
        assert_one_template(render(tokenizer, item), roles)
        assert item["raw_prompt"][-1]["content"].startswith(records[i]["question"])
        result = compute_score(
            item["data_source"], records[i]["answer"], item["reward_model"]["ground_truth"]
        )
        assert result["score"] == 1.0


def test_real_gsm8k_test_split_loads(tokenizer, tmp_path: Path) -> None:
    if not SHARED_GSM8K_TEST.is_file():
        pytest.skip(
            f"real GSM8K test split not found at {SHARED_GSM8K_TEST} (the shared data folder is absent)"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        assert gsm8k.main(["--out", str(tmp_path), "--test-jsonl", str(SHARED_GSM8K_TEST)]) == 0
    dataset = load(tmp_path / "test.parquet", tokenizer, tmp_path)
    assert len(dataset) == 1319  # nothing filtered as overlong, nothing lost
    for i in (0, 700, 1318):
        assert_one_template(render(tokenizer, dataset[i]), ["user"])
        assert dataset[i]["extra_info"]["index"] == i
