"""The whole harness (data, prompts, scoring, summary, files, table) with a backend of fixed strings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from aggc_rl.data.parquet_rows import read_rows
from aggc_rl.stats import wilson_interval
from eval.backends import Completion
from eval.config import SamplingConfig
from eval.run import main


class FakeBackend:
    """Returns ``responses[prompt][sample]`` and records what it was asked."""

    def __init__(self, responses: Sequence[Sequence[str]]) -> None:
        self.responses = responses
        self.calls: list[tuple[list[list[int]], SamplingConfig]] = []
        self.closed = False

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        assert len(prompts) == len(self.responses)
        self.calls.append(([list(p) for p in prompts], sampling))
        return [[Completion(text, len(text), truncated=False) for text in texts] for texts in self.responses]

    def close(self) -> None:
        self.closed = True


def loader_for(*backends: FakeBackend):
    queue = list(backends)

    def load(name: str, model: Path, tokenizer: object, options: object, seed: int) -> FakeBackend:
        assert name == "hf"
        return queue.pop(0)

    return load


GSM8K_RESPONSES = [  # ground truths 18, 5, 1234, 7 (tests/eval/conftest.py)
    ["#### 18", "#### 18.0", "#### 3"],
    ["#### 4", "#### 4", "#### 5"],
    ["no answer", "the answer is 1,234", "#### 1,234"],
    ["#### 8", "nothing", "#### 9"],
]


def _read(out: Path, label: str) -> tuple[list[dict], dict]:
    items = [json.loads(line) for line in (out / label / "items.jsonl").read_text().splitlines()]
    return items, json.loads((out / label / "summary.json").read_text())


def _args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--backend", "hf", "--data", str(data), "--out", str(out), *extra]


def test_gsm8k_strict_with_samples(tiny_model: Path, gsm8k_dir: Path, tmp_path: Path) -> None:
    backend = FakeBackend(GSM8K_RESPONSES)
    args = _args(tiny_model, gsm8k_dir, tmp_path, "--task", "gsm8k", "--n", "3", "--temperature", "1.0")
    assert main(args, backend_loader=loader_for(backend)) == 0
    items, summary = _read(tmp_path, tiny_model.name)
    assert backend.closed and backend.calls[0][1] == SamplingConfig(n=3, temperature=1.0)
    assert [(r["index"], r["sample"]) for r in items] == [(i, s) for i in range(4) for s in range(3)]
    assert [r["correct"] for r in items] == [True, True, False, False, False, True, False, False, True] + [
        False
    ] * 3
    assert [r["pred"] for r in items[:3]] == ["18", "18.0", "3"]
    assert items[6]["pred"] is None and items[6]["format_failure"] is True
    assert "n_people" not in items[0]  # K&K only
    assert summary["method"] == "strict" and summary["scorer"] == "aggc_rl.rewards.compute_score"
    assert summary["accuracy"] == pytest.approx(1 / 3)
    assert [summary["ci95_low"], summary["ci95_high"]] == pytest.approx(list(wilson_interval(1 / 3, 4)))
    assert summary["pass_at_k"] == pytest.approx({"1": 1 / 3, "2": 7 / 12, "3": 0.75})
    assert summary["maj_at_k"] == pytest.approx({"3": 0.5})  # 18 and 18.0 vote together; 8 beats 9 by order
    assert summary["format_failure_rate"] == pytest.approx(3 / 12)
    lengths = [len(t) for texts in GSM8K_RESPONSES for t in texts]
    assert summary["mean_response_tokens"] == pytest.approx(sum(lengths) / len(lengths))
    table = (tmp_path / "comparison.md").read_text()
    assert "| accuracy % [95% CI] | 33.3 [" in table and "| maj@3 % | 50.0 |" in table


def test_gsm8k_flexible_method_reads_the_last_number(
    tiny_model: Path, gsm8k_dir: Path, tmp_path: Path
) -> None:
    args = _args(tiny_model, gsm8k_dir, tmp_path, "--task", "gsm8k", "--n", "3", "--temperature", "1.0")
    args += ["--method", "flexible"]
    assert main(args, backend_loader=loader_for(FakeBackend(GSM8K_RESPONSES))) == 0
    _, summary = _read(tmp_path, tiny_model.name)
    assert summary["method"] == "flexible"
    assert summary["accuracy"] == pytest.approx(5 / 12)  # "the answer is 1,234" now counts
    assert summary["format_failure_rate"] == pytest.approx(2 / 12)


def _kk_responses(kk_dir: Path) -> list[list[str]]:
    """Right / format failure for the 2-person puzzles, right / wrong for the 3-person ones."""
    rows = read_rows(kk_dir / "test.parquet")
    assert [r["extra_info"]["n_people"] for r in rows] == [2, 2, 3, 3]
    truths = [r["reward_model"]["ground_truth"] for r in rows]
    flipped = truths[3].replace("knight", "KNAVE").replace("knave", "knight").replace("KNAVE", "knave")
    return [
        [f"<think>easy</think><answer>{truths[0]}</answer>"],
        [truths[1]],
        [f"<think>hmm</think><answer>{truths[2]}</answer>"],
        [f"<think>hmm</think><answer>{flipped}</answer>"],
    ]


def test_knights_knaves_greedy_with_per_size_accuracy(tiny_model: Path, kk_dir: Path, tmp_path: Path) -> None:
    backend = FakeBackend(_kk_responses(kk_dir))
    assert (
        main(
            _args(tiny_model, kk_dir, tmp_path, "--task", "knights_knaves"),
            backend_loader=loader_for(backend),
        )
        == 0
    )
    items, summary = _read(tmp_path, tiny_model.name)
    assert [r["score"] for r in items] == [3.0, -3.0, 3.0, -0.5]
    assert [r["n_people"] for r in items] == [2, 2, 3, 3]
    assert [r["format_failure"] for r in items] == [False, True, False, False]
    assert summary["accuracy"] == 0.5 and summary["mean_score"] == pytest.approx(0.625)
    assert summary["format_failure_rate"] == 0.25
    assert summary["pass_at_k"] == {} and summary["maj_at_k"] == {}
    assert {k: v["accuracy"] for k, v in summary["per_size"].items()} == {"2": 0.5, "3": 0.5}
    assert summary["per_size"]["3"]["n_prompts"] == 2
    table = (tmp_path / "comparison.md").read_text()
    assert "| accuracy %, 2 people | 50.0 (n=2) |" in table


def test_prompts_are_the_chat_template_of_the_stored_messages(
    tiny_model: Path, kk_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    backend = FakeBackend(_kk_responses(kk_dir))
    assert (
        main(
            _args(tiny_model, kk_dir, tmp_path, "--task", "knights_knaves"),
            backend_loader=loader_for(backend),
        )
        == 0
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = read_rows(kk_dir / "test.parquet")
    expected = tokenizer.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=False)
    assert expected.startswith("[system] ") and expected.endswith("[assistant] ")
    assert backend.calls[0][0][0] == tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_two_models_side_by_side(tiny_model: Path, kk_dir: Path, tmp_path: Path, capsys) -> None:
    good = FakeBackend(_kk_responses(kk_dir))
    bad = FakeBackend([["no tags"]] * 4)
    args = [*_args(tiny_model, kk_dir, tmp_path, "--task", "knights_knaves"), "--model", str(tiny_model)]
    assert main([*args, "--labels", "trained,base"], backend_loader=loader_for(good, bad)) == 0
    printed = capsys.readouterr().out
    assert "| metric | trained | base |" in printed
    assert "| format failures % | 25.0 | 100.0 |" in printed
    assert (tmp_path / "comparison.md").read_text() in printed
    assert _read(tmp_path, "base")[1]["accuracy"] == 0.0


def test_limit_takes_evenly_spaced_prompts(tiny_model: Path, kk_dir: Path, tmp_path: Path) -> None:
    backend = FakeBackend([["x"], ["y"]])
    args = _args(tiny_model, kk_dir, tmp_path, "--task", "knights_knaves", "--limit", "2")
    assert main(args, backend_loader=loader_for(backend)) == 0
    items, summary = _read(tmp_path, tiny_model.name)
    assert [r["index"] for r in items] == [0, 2]  # one puzzle of each size, not the first two
    assert sorted(summary["per_size"]) == ["2", "3"]
