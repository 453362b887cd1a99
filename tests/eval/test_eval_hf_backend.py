"""The HF backend end to end on a tiny random Qwen2 (CPU): files, counts, greedy determinism, left padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.backends import Completion
from eval.backends.hf import HFBackend
from eval.config import BackendOptions, SamplingConfig
from eval.run import main

MAX_NEW = 6


def _run(model: Path, data: Path, out: Path, *extra: str) -> tuple[list[dict], dict]:
    args = ["--model", str(model), "--backend", "hf", "--data", str(data), "--out", str(out)]
    args += ["--max-new-tokens", str(MAX_NEW), *extra]
    assert main(args) == 0
    folder = out / model.name
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]
    return items, json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def greedy_runs(tiny_model: Path, gsm8k_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same greedy evaluation with batch size 1 and 3 (prompts of different lengths share a batch)."""
    out = tmp_path_factory.mktemp("hf")
    one = _run(tiny_model, gsm8k_dir, out / "b1", "--task", "gsm8k", "--batch-size", "1")
    three = _run(tiny_model, gsm8k_dir, out / "b3", "--task", "gsm8k", "--batch-size", "3")
    return one, three, out


def test_greedy_run_writes_one_record_per_prompt_and_a_summary(greedy_runs) -> None:
    (items, summary), _, out = greedy_runs
    assert [(r["index"], r["sample"]) for r in items] == [(i, 0) for i in range(4)]
    assert all(1 <= r["response_tokens"] <= MAX_NEW for r in items)
    assert all(r["response_tokens"] == MAX_NEW for r in items if r["truncated"])
    assert all(isinstance(r["response"], str) and r["score"] in (0.0, 1.0) for r in items)
    assert summary["n_prompts"] == 4 and summary["samples_per_prompt"] == 1
    assert summary["backend"] == "hf" and summary["sampling"]["temperature"] == 0.0
    assert 0.0 <= summary["ci95_low"] <= summary["accuracy"] <= summary["ci95_high"] <= 1.0
    mean = sum(r["response_tokens"] for r in items) / 4
    assert summary["mean_response_tokens"] == pytest.approx(mean)
    assert (out / "b1" / "comparison.md").is_file()


def test_greedy_is_deterministic_and_independent_of_batching(
    greedy_runs, tiny_model: Path, gsm8k_dir: Path, tmp_path: Path
) -> None:
    (one, _), (three, _), _ = greedy_runs
    again, _ = _run(tiny_model, gsm8k_dir, tmp_path, "--task", "gsm8k", "--batch-size", "1")
    assert [r["response"] for r in again] == [r["response"] for r in one]
    # Left padding with an attention mask: a prompt's greedy output must not depend on its batch mates.
    assert [(r["response"], r["response_tokens"]) for r in three] == [
        (r["response"], r["response_tokens"]) for r in one
    ]


def test_sampling_gives_n_samples_per_prompt_reproducibly(
    tiny_model: Path, kk_dir: Path, tmp_path: Path
) -> None:
    flags = ["--task", "knights_knaves", "--n", "3", "--temperature", "1.0", "--seed", "7", "--limit", "2"]
    items, summary = _run(tiny_model, kk_dir, tmp_path / "a", *flags)
    again, _ = _run(tiny_model, kk_dir, tmp_path / "b", *flags)
    assert [(r["index"], r["sample"]) for r in items] == [(i, s) for i in (0, 2) for s in range(3)]
    assert [r["response"] for r in items] == [r["response"] for r in again]
    assert len({r["response"] for r in items}) > 1  # sampled, not greedy
    assert set(summary["pass_at_k"]) == {"1", "2", "3"} and set(summary["maj_at_k"]) == {"3"}
    assert {r["n_people"] for r in items} == {2, 3}


def test_missing_chat_template_is_a_clear_error_with_a_fallback(
    tiny_model_without_template: Path, gsm8k_dir: Path, tmp_path: Path, capsys
) -> None:
    args = ["--model", str(tiny_model_without_template), "--backend", "hf", "--data", str(gsm8k_dir)]
    args += ["--out", str(tmp_path), "--task", "gsm8k", "--max-new-tokens", "2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "has no chat template" in err and "--no-chat-template" in err
    assert main([*args, "--no-chat-template"]) == 0
    summary = json.loads((tmp_path / tiny_model_without_template.name / "summary.json").read_text())
    assert summary["chat_template"] is False


def test_completion_is_cut_at_the_first_eos_and_truncation_is_flagged(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    backend = HFBackend(tiny_model, tokenizer, BackendOptions(device="cpu"))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ab = tokenizer("ab", add_special_tokens=False)["input_ids"]
    assert backend._completion([*ab, eos, pad, pad]) == Completion(
        "ab", num_tokens=len(ab) + 1, truncated=False
    )
    assert backend._completion([*ab, *ab]) == Completion("abab", num_tokens=2 * len(ab), truncated=True)
    assert backend.model.generation_config.repetition_penalty in (None, 1.0)  # checkpoint defaults dropped
    outputs = backend.generate([ab, [*ab, *ab, *ab]], SamplingConfig(max_new_tokens=3))
    assert [len(samples) for samples in outputs] == [1, 1]
    assert all(c.num_tokens <= 3 for samples in outputs for c in samples)
