"""GSM8K in verl's row schema, from the Hugging Face hub or from local JSONL files.

    python -m aggc_rl.data.gsm8k --out DIR                      # hub: openai/gsm8k, config main
    python -m aggc_rl.data.gsm8k --out DIR --test-jsonl test.jsonl [--train-jsonl train.jsonl]   # offline

Every row is validated before anything is written: a gold answer whose ``#### <number>`` line does not
parse would silently score every response 0, so the command refuses the whole split and names the rows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aggc_rl.data.parquet_rows import write_rows
from aggc_rl.rewards.numbers import MARKER, extract_after_marker

DATA_SOURCE = "openai/gsm8k"
ABILITY = "math"
HUB_DATASET, HUB_CONFIG = "openai/gsm8k", "main"
SPLITS = ("train", "test")
TEMPLATES = {
    # verl's examples/data_preprocess/gsm8k.py instruction, scored by method="strict".
    "hash": 'Let\'s think step by step and output the final answer after "####".',
    # Qwen2.5-Math style, scored by method="math_verify".
    "boxed": "Please reason step by step, and put your final answer within \\boxed{}.",
}
# The gold line must be a plain number: digits with optional thousands commas, sign and decimals.
_GOLD_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", re.ASCII)
_MAX_PROBLEMS_SHOWN = 20


class BadRowsError(ValueError):
    """Rows that failed validation; ``problems`` names each one (split and index)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:_MAX_PROBLEMS_SHOWN]
        more = len(self.problems) - len(shown)
        super().__init__(
            f"{len(self.problems)} bad row(s):\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else "")
        )


def gold_number(answer: str) -> str:
    """The number after the last ``####`` of a GSM8K solution, commas removed; ValueError if there is none."""
    if not isinstance(answer, str):
        raise ValueError(f"answer is {type(answer).__name__}, not a string")
    pos = answer.rfind(MARKER)
    if pos < 0:
        raise ValueError(f"answer has no {MARKER!r} line")
    tail = answer[pos + len(MARKER) :].strip()
    if not _GOLD_NUMBER.fullmatch(tail):
        raise ValueError(f"text after the last {MARKER!r} is not a number: {tail[:60]!r}")
    number = tail.replace(",", "")
    found = extract_after_marker(answer)  # the reward must read the same value, or training is broken
    if found is None or found.text != number:
        raise ValueError(f"the strict scorer would read {found and found.text!r}, not {number!r}")
    return number


def build_prompt(question: str, template: str = "hash", system: str | None = None) -> list[dict[str, str]]:
    """Plain chat messages; verl applies the model's chat template itself, so none is applied here."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; allowed: {', '.join(TEMPLATES)}")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": f"{question} {TEMPLATES[template]}"})
    return messages


def build_row(
    question: str, answer: str, split: str, index: int, template: str = "hash", system: str | None = None
) -> dict[str, Any]:
    """One verl row; raises ValueError when the question is empty or the gold answer does not parse."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is empty or not a string")
    return {
        "data_source": DATA_SOURCE,
        "prompt": build_prompt(question, template, system),
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": gold_number(answer)},
        "extra_info": {"split": split, "index": index, "answer": answer, "question": question},
    }


def build_split(
    records: Iterable[Mapping[str, Any]], split: str, template: str = "hash", system: str | None = None
) -> list[dict[str, Any]]:
    """Rows for every record (fields question, answer); BadRowsError naming every bad row."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for index, record in enumerate(records):
        try:
            if not isinstance(record, Mapping):
                raise ValueError(f"record is {type(record).__name__}, not an object")
            rows.append(
                build_row(record.get("question"), record.get("answer"), split, index, template, system)
            )
        except ValueError as err:
            problems.append(f"{split} row {index}: {err}")
    if problems:
        raise BadRowsError(problems)
    return rows


def read_jsonl(path: Path) -> list[Any]:
    """Records of a JSONL file; BadRowsError naming the lines that are not JSON."""
    records: list[Any] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                problems.append(f"{path} line {line_no}: not JSON ({err.msg})")
    if problems:
        raise BadRowsError(problems)
    return records


def read_hub() -> dict[str, list[Any]]:
    """Both splits of openai/gsm8k (config main) through ``datasets``; needs network or a warm HF cache."""
    import datasets

    loaded = datasets.load_dataset(HUB_DATASET, HUB_CONFIG)
    return {split: list(loaded[split]) for split in SPLITS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aggc_rl.data.gsm8k", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for train.parquet / test.parquet")
    parser.add_argument("--train-jsonl", type=Path, help="local train split (fields question, answer)")
    parser.add_argument("--test-jsonl", type=Path, help="local test split (fields question, answer)")
    parser.add_argument(
        "--template", choices=sorted(TEMPLATES), default="hash", help="instruction after the question"
    )
    parser.add_argument("--system", default=None, help="optional system message placed first")
    args = parser.parse_args(argv)

    local = {"train": args.train_jsonl, "test": args.test_jsonl}
    try:
        if any(local.values()):
            records = {split: read_jsonl(path) for split, path in local.items() if path is not None}
            source = "local JSONL"
        else:
            try:
                records = read_hub()
            except Exception as err:
                print(
                    f"error: could not load {HUB_DATASET} ({HUB_CONFIG}) from the Hugging Face hub: {err}\n"
                    "offline? pass --train-jsonl / --test-jsonl (fields question, answer)",
                    file=sys.stderr,
                )
                return 1
            source = f"hub {HUB_DATASET}"
        rows = {
            split: build_split(recs, split, args.template, args.system) for split, recs in records.items()
        }
    except (BadRowsError, OSError) as err:
        print(f"error: {err}\nnothing written", file=sys.stderr)
        return 1

    for split, split_rows in rows.items():
        if not split_rows:
            print(f"error: the {split} split is empty; nothing written", file=sys.stderr)
            return 1
    for split, split_rows in rows.items():
        path = args.out / f"{split}.parquet"
        write_rows(split_rows, path)
        print(f"{split}: {len(split_rows)} rows -> {path}")
    print(f"source: {source}; template: {args.template}; system message: {'yes' if args.system else 'no'}")
    if args.template == "boxed":
        print('note: score these rows with reward_kwargs method="math_verify" (strict looks for "####")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
