"""GSM8K rows: gold parsing, verl's schema, templates, refusing bad rows, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aggc_rl.data import gsm8k as data
from aggc_rl.data.gsm8k import TEMPLATES, BadRowsError, build_row, build_split, gold_number, read_jsonl
from aggc_rl.data.parquet_rows import read_rows
from aggc_rl.rewards import compute_score

REPO = Path(__file__).resolve().parents[2]
SHARED_GSM8K_TEST = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
VERL_HASH_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'

RECORDS = [
    {"question": "Tom has 3 apples and buys 15 more. How many?", "answer": "3 + 15 = <<3+15=18>>18\n#### 18"},
    {"question": "A car costs $1,234 less $34. Price?", "answer": "1234 - 34 = 1200\n#### 1,200"},
    {"question": "It is 5 below zero, then 10 colder. Temperature?", "answer": "-5 - 10 = -15\n#### -15"},
    {"question": "Half of one?", "answer": "1 / 2 = 0.5\n#### 0.5"},
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("answer", "number"),
    [
        ("x\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("#### -15", "-15"),
        ("#### 0.5", "0.5"),
        ("#### 7\n#### 72 ", "72"),
    ],
)
def test_gold_number(answer: str, number: str) -> None:
    assert gold_number(answer) == number


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("no marker 18", "no '####'"),
        ("#### eighteen", "not a number"),
        ("#### 18 dollars", "not a number"),
        ("####", "not a number"),
        ("#### 1,2345", "strict scorer would read"),
        (None, "not a string"),
    ],
)
def test_gold_number_refuses(answer: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        gold_number(answer)


def test_row_follows_verls_gsm8k_convention() -> None:
    row = build_row(RECORDS[1]["question"], RECORDS[1]["answer"], "train", 7)
    assert row == {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": RECORDS[1]["question"] + " " + VERL_HASH_INSTRUCTION}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "1200"},
        "extra_info": {
            "split": "train",
            "index": 7,
            "answer": RECORDS[1]["answer"],
            "question": RECORDS[1]["question"],
        },
    }
    assert TEMPLATES["hash"] == VERL_HASH_INSTRUCTION


def test_boxed_template_and_system_message() -> None:
    row = build_row(
        RECORDS[0]["question"], RECORDS[0]["answer"], "test", 0, template="boxed", system="Be brief."
    )
    system, user = row["prompt"]
    assert system == {"role": "system", "content": "Be brief."}
    assert user["role"] == "user" and user["content"].startswith(RECORDS[0]["question"])
    assert "\\boxed{}" in user["content"] and "####" not in user["content"]


def test_unknown_template_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="allowed: hash, boxed"):
        build_row("q?", "#### 1", "test", 0, template="cot")


def test_every_gold_answer_scores_one_with_the_router() -> None:
    for row in build_split(RECORDS, "test"):
        result = compute_score(
            row["data_source"], row["extra_info"]["answer"], row["reward_model"]["ground_truth"]
        )
        assert result["score"] == 1.0


def test_bad_rows_are_refused_by_index() -> None:
    records = [RECORDS[0], {"question": "q", "answer": "no number"}, RECORDS[1], {"answer": "#### 3"}, "junk"]
    with pytest.raises(BadRowsError) as err:
        build_split(records, "test")
    assert [p.split(":")[0] for p in err.value.problems] == ["test row 1", "test row 3", "test row 4"]
    assert "test row 1" in str(err.value) and "3 bad row(s)" in str(err.value)


def test_many_bad_rows_are_summarised() -> None:
    with pytest.raises(BadRowsError) as err:
        build_split([{"question": "q", "answer": "x"}] * 50, "train")
    assert len(err.value.problems) == 50 and "and 30 more" in str(err.value)


def test_read_jsonl_names_lines_that_are_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n{oops\n", encoding="utf-8")
    with pytest.raises(BadRowsError, match="line 3: not JSON"):
        read_jsonl(path)


# ---- the CLI ----


def test_cli_offline_writes_validated_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    test = write_jsonl(tmp_path / "test.jsonl", RECORDS[:2])
    out = tmp_path / "out"
    args = [
        "--out",
        str(out),
        "--train-jsonl",
        str(train),
        "--test-jsonl",
        str(test),
        "--system",
        "Be brief.",
    ]
    assert data.main(args) == 0
    printed = capsys.readouterr().out
    assert "train: 4 rows" in printed and "test: 2 rows" in printed
    assert read_rows(out / "train.parquet") == build_split(RECORDS, "train", system="Be brief.")
    assert read_rows(out / "test.parquet") == build_split(RECORDS[:2], "test", system="Be brief.")


def test_cli_with_one_local_split_writes_only_that_split(tmp_path: Path) -> None:
    test = write_jsonl(tmp_path / "test.jsonl", RECORDS)
    assert data.main(["--out", str(tmp_path / "out"), "--test-jsonl", str(test), "--template", "boxed"]) == 0
    assert (tmp_path / "out" / "test.parquet").exists() and not (tmp_path / "out" / "train.parquet").exists()


def test_cli_refuses_bad_rows_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    test = write_jsonl(tmp_path / "test.jsonl", [RECORDS[0], {"question": "q", "answer": "#### ?"}])
    out = tmp_path / "out"
    assert data.main(["--out", str(out), "--train-jsonl", str(train), "--test-jsonl", str(test)]) == 1
    err = capsys.readouterr().err
    assert "test row 1" in err and "nothing written" in err
    assert not out.exists()


def test_cli_reads_the_hub_when_no_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "read_hub", lambda: {"train": RECORDS, "test": RECORDS[:1]})
    assert data.main(["--out", str(tmp_path)]) == 0
    assert len(read_rows(tmp_path / "train.parquet")) == 4 and len(read_rows(tmp_path / "test.parquet")) == 1


def test_cli_offline_without_files_explains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable() -> dict:
        raise ConnectionError("no network")

    monkeypatch.setattr(data, "read_hub", unreachable)
    assert data.main(["--out", str(tmp_path)]) == 1
    assert "--test-jsonl" in capsys.readouterr().err


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    test = write_jsonl(tmp_path / "test.jsonl", RECORDS)
    cmd = [
        sys.executable,
        "-m",
        "aggc_rl.data.gsm8k",
        "--out",
        str(tmp_path / "o"),
        "--test-jsonl",
        str(test),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "test: 4 rows" in done.stdout


def test_real_test_split_builds_and_every_gold_scores_one() -> None:
    if not SHARED_GSM8K_TEST.is_file():
        pytest.skip(
            f"real GSM8K test split not found at {SHARED_GSM8K_TEST} (the shared data folder is absent)"
        )
    rows = build_split(read_jsonl(SHARED_GSM8K_TEST), "test")
    assert len(rows) == 1319
    for row in rows:
        assert (
            compute_score(
                row["data_source"], row["extra_info"]["answer"], row["reward_model"]["ground_truth"]
            )["score"]
            == 1.0
        )
