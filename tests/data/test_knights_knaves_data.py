"""K&K puzzles: validation, determinism, an independent brute-force check, and the parquet CLI."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from aggc_rl.data import knights_knaves as kk
from aggc_rl.data.knights_knaves import (
    INTRO,
    SYSTEM_PROMPT,
    Puzzle,
    build_splits,
    generate_puzzle,
    parse_people,
    spread,
    statements_from_json,
    statements_to_json,
)
from aggc_rl.data.parquet_rows import read_rows
from aggc_rl.rewards.knights_knaves import compute_score

REPO = Path(__file__).resolve().parents[2]


# ---- an evaluator written independently of the generator's bitmask tables ----


def holds(statement: tuple, knights: tuple[bool, ...]) -> bool:
    kind, *args = statement
    if kind == "telling-truth":
        return knights[args[0]]
    if kind == "lying":
        return not knights[args[0]]
    values = [holds(arg, knights) for arg in args]
    if kind == "not":
        return not values[0]
    if kind == "and":
        return all(values)
    if kind == "or":
        return any(values)
    if kind == "->":
        return (not values[0]) or values[1]
    if kind == "<=>":
        return values[0] == values[1]
    raise AssertionError(f"unknown node {kind!r}")


def brute_force(statements: tuple) -> list[tuple[bool, ...]]:
    n = len(statements)
    return [
        knights
        for knights in itertools.product((False, True), repeat=n)
        if all(knights[i] == holds(statements[i], knights) for i in range(n))
    ]


def nodes(statement: tuple, level: int = 1):
    yield statement, level
    if statement[0] not in ("telling-truth", "lying"):
        for child in statement[1:]:
            yield from nodes(child, level + 1)


# ---- validation ----


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_people": 1}, "n_people"),
        ({"n_people": 13}, "n_people"),
        ({"n_people": True}, "n_people"),
        ({"n_people": 3.0}, "n_people"),
        ({"n_people": "3"}, "n_people"),
        ({"seed": "0"}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": None}, "seed"),
        ({"depth": 1}, "depth"),
        ({"depth": 5}, "depth"),
        ({"width": 1}, "width"),
        ({"width": 5}, "width"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(kwargs: dict, name: str) -> None:
    args = {"n_people": 3, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        generate_puzzle(**args)


# ---- the puzzles ----


@pytest.mark.parametrize("n", range(2, 9))
def test_every_puzzle_has_exactly_its_solution_by_brute_force(n: int) -> None:
    for seed in range(8):
        puzzle = generate_puzzle(n, seed)
        assert len(puzzle.statements) == len(puzzle.names) == len(puzzle.solution) == n
        assert brute_force(puzzle.statements) == [puzzle.solution]


@pytest.mark.parametrize(("depth", "width"), [(2, 2), (3, 2), (2, 4), (4, 3)])
def test_trees_respect_depth_width_and_the_self_reference_rule(depth: int, width: int) -> None:
    for n, seed in itertools.product((2, 3, 6), range(6)):
        puzzle = generate_puzzle(n, seed, depth=depth, width=width)
        assert brute_force(puzzle.statements) == [puzzle.solution]
        for speaker, statement in enumerate(puzzle.statements):
            for node, level in nodes(statement):
                assert level <= depth
                kind = node[0]
                if kind in ("telling-truth", "lying"):
                    assert len(node) == 2 and 0 <= node[1] < n
                    assert node != ("lying", speaker), "a speaker never says they lie"
                elif kind == "not":
                    assert len(node) == 2
                    assert node[1] != ("telling-truth", speaker), '"I am not a knight" means "I am a knave"'
                elif kind in ("and", "or"):
                    assert 2 <= len(node) - 1 <= width
                else:
                    assert kind in ("->", "<=>") and len(node) == 3


def test_same_arguments_same_puzzle_and_no_global_random_state() -> None:
    random.seed(1)
    first = generate_puzzle(5, 42)
    state = random.getstate()
    random.seed(999)
    second = generate_puzzle(5, 42)
    assert first == second
    random.seed(1)
    assert random.getstate() == state, "generation must not draw from the global generator"
    texts = {generate_puzzle(5, seed).text for seed in range(30)}
    assert len(texts) == 30
    assert generate_puzzle(5, 42, depth=3) != first


def test_same_puzzle_in_a_fresh_interpreter() -> None:
    code = "from aggc_rl.data.knights_knaves import generate_puzzle as g; print(g(6, 7).text)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == generate_puzzle(6, 7).text


def test_text_and_answer_follow_the_benchmark_wording() -> None:
    puzzle = generate_puzzle(4, 3)
    assert isinstance(puzzle, Puzzle)
    assert puzzle.text.startswith(INTRO + " You meet 4 inhabitants: ")
    assert "Knights always tell the truth, and knaves always lie." in puzzle.text
    positions = [puzzle.text.index(f'{name} says, "') for name in puzzle.names]
    assert positions == sorted(positions)
    assert puzzle.text.count(' says, "') == 4
    lines = puzzle.answer_text.splitlines()
    assert lines == [
        f"({i + 1}) {name} is a {'knight' if knight else 'knave'}"
        for i, (name, knight) in enumerate(zip(puzzle.names, puzzle.solution, strict=True))
    ]


def test_the_reward_accepts_the_reference_answer_and_rejects_a_flip() -> None:
    for n, seed in itertools.product(range(2, 9), range(3)):
        puzzle = generate_puzzle(n, seed)
        right = compute_score(
            kk.DATA_SOURCE, f"<think>x</think><answer>{puzzle.answer_text}</answer>", puzzle.answer_text
        )
        assert right["score"] == 3.0
        flipped = kk.render_answer(puzzle.names, (not puzzle.solution[0], *puzzle.solution[1:]))
        wrong = compute_score(
            kk.DATA_SOURCE, f"<think>x</think><answer>{flipped}</answer>", puzzle.answer_text
        )
        assert wrong["score"] == -0.5


def test_statements_round_trip_through_json() -> None:
    puzzle = generate_puzzle(7, 1, depth=3, width=3)
    assert statements_from_json(statements_to_json(puzzle.statements)) == puzzle.statements


def test_solutions_lists_all_assignments() -> None:
    paradox_free = (("lying", 1), ("lying", 0))  # A: "B lies", B: "A lies": two worlds
    assert sorted(kk.solutions(paradox_free)) == sorted(brute_force(paradox_free))
    assert len(kk.solutions(paradox_free)) == 2


# ---- splitting ----


@pytest.mark.parametrize(("spec", "sizes"), [("3-7", [3, 4, 5, 6, 7]), ("5", [5]), ("3,5,8", [3, 5, 8])])
def test_parse_people(spec: str, sizes: list[int]) -> None:
    assert parse_people(spec) == sizes


@pytest.mark.parametrize("spec", ["1-3", "3-13", "x", "", "7-3"])
def test_parse_people_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="--people"):
        parse_people(spec)


@pytest.mark.parametrize(("total", "k"), [(900, 5), (100, 3), (7, 5), (2, 5)])
def test_spread_is_even(total: int, k: int) -> None:
    counts = spread(total, list(range(3, 3 + k)))
    assert sum(counts.values()) == total
    assert max(counts.values()) - min(counts.values()) <= 1


def test_test_split_does_not_depend_on_the_train_size() -> None:
    small, large = build_splits([3, 4], 4, 6, seed=0), build_splits([3, 4], 40, 6, seed=0)
    assert [r["prompt"] for r in small.test] == [r["prompt"] for r in large.test]


def test_duplicates_are_skipped_and_a_shortage_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    real = kk.generate_puzzle
    monkeypatch.setattr(kk, "generate_puzzle", lambda n, seed, depth, width: real(n, seed // 2, depth, width))
    splits = build_splits([4], 2, 1, seed=0)  # draws give puzzles 0, 0, 1, 1, 2
    assert splits.duplicates == 2 and splits.draws == 5
    assert len({r["prompt"][1]["content"] for r in splits.train + splits.test}) == 3
    monkeypatch.setattr(kk, "generate_puzzle", lambda n, seed, depth, width: real(n, seed % 2, depth, width))
    with pytest.raises(RuntimeError, match="only 2 distinct puzzles with 4 people"):
        build_splits([4], 2, 1, seed=0)


# ---- the CLI ----


@pytest.fixture(scope="module")
def cli_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("kk")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = kk.main(["--out", str(out), "--people", "3-5", "--train", "31", "--test", "9", "--seed", "0"])
    assert code == 0
    return out, buffer.getvalue()


def test_cli_writes_even_disjoint_deduplicated_splits(cli_output: tuple[Path, str]) -> None:
    out, printed = cli_output
    train, test = read_rows(out / "train.parquet"), read_rows(out / "test.parquet")
    assert (len(train), len(test)) == (31, 9)
    assert Counter(r["extra_info"]["n_people"] for r in train) == {3: 11, 4: 10, 5: 10}
    assert Counter(r["extra_info"]["n_people"] for r in test) == {3: 3, 4: 3, 5: 3}
    train_texts = [r["prompt"][1]["content"] for r in train]
    test_texts = [r["prompt"][1]["content"] for r in test]
    assert len(set(train_texts)) == 31 and len(set(test_texts)) == 9
    assert not set(train_texts) & set(test_texts)
    assert [r["extra_info"]["index"] for r in train] == list(range(31))
    assert {r["extra_info"]["split"] for r in train} == {"train"} and {
        r["extra_info"]["split"] for r in test
    } == {"test"}
    assert "31 train / 9 test rows" in printed and "rows/s" in printed
    assert "3 people: 3 test + 11 train" in printed


def test_cli_rows_follow_verls_schema(cli_output: tuple[Path, str]) -> None:
    out, _ = cli_output
    for row in read_rows(out / "test.parquet"):
        assert row["data_source"] == "knights_knaves" and row["ability"] == "logic"
        assert row["reward_model"]["style"] == "rule"
        system, user = row["prompt"]
        assert system == {"role": "system", "content": SYSTEM_PROMPT}
        assert user["role"] == "user" and user["content"].startswith(INTRO)
        info = row["extra_info"]
        puzzle = generate_puzzle(info["n_people"], info["seed"], info["depth"], info["width"])
        assert statements_from_json(info["statements"]) == puzzle.statements  # reproducible from the row
        assert row["reward_model"]["ground_truth"] == puzzle.answer_text
        assert info["names"] == list(puzzle.names) and info["solution"] == list(puzzle.solution)


def test_prompt_names_every_tag_but_opens_none(cli_output: tuple[Path, str]) -> None:
    out, _ = cli_output
    row = read_rows(out / "test.parquet")[0]
    prompt_text = "\n".join(m["content"] for m in row["prompt"])
    for tag in ("think", "answer"):
        assert prompt_text.count(f"<{tag}>") == prompt_text.count(f"</{tag}>") == 1
        assert prompt_text.index(f"<{tag}>") < prompt_text.index(f"</{tag}>")
    assert not row["prompt"][-1]["content"].rstrip().endswith(("<think>", "<answer>"))
    assert "(1) " in SYSTEM_PROMPT and "is a knight" in SYSTEM_PROMPT and "is a knave" in SYSTEM_PROMPT


@pytest.mark.parametrize(
    "args",
    [
        ["--people", "1-3"],
        ["--train", "0"],
        ["--test", "0"],
        ["--depth", "1"],
        ["--width", "9"],
        ["--seed", str(2**40)],
    ],
)
def test_cli_rejects_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        kk.main(["--out", str(tmp_path), *args])
    assert exit_info.value.code == 2
    assert not (tmp_path / "train.parquet").exists()


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "aggc_rl.data.knights_knaves",
        "--out",
        str(tmp_path),
        "--train",
        "5",
        "--test",
        "5",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_rows(tmp_path / "train.parquet")) == 5
    assert json.loads(read_rows(tmp_path / "test.parquet")[0]["extra_info"]["statements"])
