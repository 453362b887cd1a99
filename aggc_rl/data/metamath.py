"""SFT sets in verl's messages schema: MetaMathQA (the AGGC LoRA recipe's data) and the GSM8K train split.

    python -m aggc_rl.data.metamath --out DIR                         # hub: meta-math/MetaMathQA, first 100,000
    python -m aggc_rl.data.metamath --out DIR --jsonl MetaMathQA-395K.json[l]   # offline (fields query, response)
    python -m aggc_rl.data.metamath --out DIR --source gsm8k --jsonl train.jsonl  # GSM8K train as SFT

Writes ``DIR/train.parquet`` with one column ``messages`` ([user, assistant]), which verl's ``MultiTurnSFTDataset``
reads (``data.messages_key=messages``). The official LoRA run trains on ``metamath:100000``: the first 100,000
examples in the dataset's own order, which ``--limit`` reproduces. Every row is validated first; a bad row stops
the command with its index (nothing is skipped silently, nothing written).

Base models (Mistral-7B, Llama-2-7B) have no chat template: ``python -m aggc_rl.sft chat_template=alpaca`` gives
them :data:`ALPACA_TEMPLATE`, the instruction format MetaMath was trained and evaluated with.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aggc_rl.data.gsm8k import TEMPLATES as GSM8K_TEMPLATES
from aggc_rl.data.gsm8k import BadRowsError, gold_number, read_jsonl
from aggc_rl.data.parquet_rows import write_rows

HUB_DATASET = "meta-math/MetaMathQA"
SOURCES = {"metamath": ("query", "response"), "gsm8k": ("question", "answer")}
DEFAULT_LIMIT = 100_000

#: The Alpaca instruction format as a chat template: a user turn becomes the instruction block, an assistant
#: turn its response plus EOS. Rendering turn by turn gives the same tokens as rendering the whole
#: conversation (verl's SFT dataset checks that).
ALPACA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\\n\\n### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
CHAT_TEMPLATES = {"alpaca": ALPACA_TEMPLATE}


def build_rows(records: Iterable[Any], source: str) -> list[dict[str, Any]]:
    """``{"messages": [user, assistant]}`` per record; BadRowsError naming every bad record by index."""
    prompt_key, answer_key = SOURCES[source]
    rows, problems = [], []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            problems.append(f"record {index}: not an object ({type(record).__name__})")
            continue
        prompt, answer = record.get(prompt_key), record.get(answer_key)
        bad = [
            k
            for k, v in ((prompt_key, prompt), (answer_key, answer))
            if not isinstance(v, str) or not v.strip()
        ]
        if bad:
            problems.append(f"record {index}: {', '.join(bad)} missing or empty")
            continue
        if source == "gsm8k":
            try:
                gold_number(answer)
            except ValueError as err:
                problems.append(f"record {index}: {err}")
                continue
            prompt = f"{prompt} {GSM8K_TEMPLATES['hash']}"
        rows.append(
            {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
        )
    if problems:
        raise BadRowsError(problems)
    return rows


def read_records(path: Path) -> list[Any]:
    """A JSON array (MetaMathQA's release file) or JSON lines (:func:`aggc_rl.data.gsm8k.read_jsonl`)."""
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        return read_jsonl(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRowsError([f"{path}: not a JSON array ({err.msg} at line {err.lineno})"]) from err


def read_hub(limit: int | None) -> list[Any]:
    """MetaMathQA's train split through ``datasets`` (network or a warm HF cache), its first ``limit`` rows."""
    import datasets

    split = "train" if limit is None else f"train[:{limit}]"
    return list(datasets.load_dataset(HUB_DATASET, split=split))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aggc_rl.data.metamath", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for train.parquet")
    parser.add_argument("--source", choices=sorted(SOURCES), default="metamath", help="which data set")
    parser.add_argument("--jsonl", type=Path, help="local file (JSON lines or a JSON array); else the hub")
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help="first N examples (0: all); the recipe uses 100000"
    )
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error(f"--limit={args.limit} is invalid; allowed: 0 (all) or a positive number of examples")
    limit = args.limit or None
    if args.source == "gsm8k" and args.jsonl is None:
        parser.error("--source gsm8k needs --jsonl (the GSM8K train split, fields question, answer)")

    try:
        if args.jsonl is not None:
            records = read_records(args.jsonl)[:limit]
            origin = str(args.jsonl)
        else:
            try:
                records = read_hub(limit)
            except Exception as err:
                print(
                    f"error: could not load {HUB_DATASET} from the Hugging Face hub: {err}\n"
                    "offline? pass --jsonl with the MetaMathQA file (fields query, response)",
                    file=sys.stderr,
                )
                return 1
            origin = f"hub {HUB_DATASET}"
        rows = build_rows(records, args.source)
    except (BadRowsError, OSError) as err:
        print(f"error: {err}\nnothing written", file=sys.stderr)
        return 1
    if not rows:
        print("error: no examples; nothing written", file=sys.stderr)
        return 1
    path = args.out / "train.parquet"
    write_rows(rows, path)
    print(f"{args.source}: {len(rows)} examples from {origin} -> {path} (column messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
