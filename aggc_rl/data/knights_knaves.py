"""Knights-and-Knaves puzzles (the K&K benchmark's method, arXiv 2410.23123) and a parquet CLI.

Each of N inhabitants makes one statement: a tree whose leaves say "person j is a knight/knave" and whose
nodes are not, and, or, implies, iff. A puzzle is kept only when exactly one truth assignment makes
"person i is a knight iff statement i holds" true for every i. Checking that by brute force over all 2^N
assignments is cheap because every statement is evaluated once, on all assignments at the same time: a
statement's truth table is a 2^N-bit integer and the connectives are bitwise operations.

    python -m aggc_rl.data.knights_knaves --out DIR --people 3-7 --train 900 --test 100 --seed 0
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggc_rl.data.parquet_rows import write_rows

# A statement tree, e.g. ("and", ("telling-truth", 1), ("not", ("lying", 2))); person indices are 0-based.
Statement = tuple[Any, ...]

KNIGHT_LEAF = "telling-truth"
KNAVE_LEAF = "lying"
OPERATORS = ("not", "and", "or", "->", "<=>")
MIN_PEOPLE, MAX_PEOPLE = 2, 12
# depth 1 (leaves only) never gives a unique solution: each constraint "x_i == +-x_j" survives flipping
# everybody, so solutions come in pairs. Deeper trees than 4 read badly and add nothing.
MIN_DEPTH, MAX_DEPTH = 2, 4
MIN_WIDTH, MAX_WIDTH = 2, 4
MAX_ATTEMPTS = 20_000

DATA_SOURCE = "knights_knaves"
ABILITY = "logic"
NAMES = (
    "Zoey", "Oliver", "Ethan", "Mia", "Liam", "Ava", "Noah", "Emma", "Lucas", "Chloe", "Mason", "Aria",
    "Logan", "Nora", "Elijah", "Riley", "Jacob", "Layla", "Owen", "Zara", "Caleb", "Ivy", "Henry", "Ruby",
    "Isaac", "Stella", "Leo", "Hazel", "Samuel", "Violet", "Jack", "Luna", "Aiden", "Nova", "Wyatt", "Maya",
    "Gabriel", "Aurora", "Daniel", "Penelope", "Benjamin", "Scarlett", "Sebastian", "Evelyn", "Michael",
    "Abigail", "Alexander", "Harper",
)  # fmt: skip
INTRO = (
    "A very special island is inhabited only by knights and knaves. "
    "Knights always tell the truth, and knaves always lie."
)
# The model writes every tag itself: the prompt names them but never leaves one open for it to continue.
SYSTEM_PROMPT = (
    "You are solving a logic puzzle. First reason it through inside <think> </think> tags, then give the "
    "final answer inside <answer> </answer> tags. In the answer, write one line per inhabitant, in the order "
    "they were introduced, exactly like: (1) Zoey is a knight  or  (2) Oliver is a knave"
)


@dataclass(frozen=True)
class Puzzle:
    """One puzzle with its unique solution (True = knight), English text and reference answer."""

    names: tuple[str, ...]
    statements: tuple[Statement, ...]
    solution: tuple[bool, ...]
    text: str
    answer_text: str
    seed: int
    depth: int
    width: int

    @property
    def n_people(self) -> int:
        return len(self.names)


def _require_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")


# ---- truth tables -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=MAX_PEOPLE + 1)
def _knight_tables(n: int) -> tuple[tuple[int, ...], int]:
    """Bit a of table i is set iff person i is a knight in assignment a (bit i of a); plus the all-ones mask."""
    size = 1 << n
    tables = tuple(sum(1 << a for a in range(size) if a >> i & 1) for i in range(n))
    return tables, (1 << size) - 1


def _table(statement: Statement, tables: Sequence[int], full: int) -> int:
    """The 2^N-bit truth table of ``statement``."""
    kind = statement[0]
    if kind == KNIGHT_LEAF:
        return tables[statement[1]]
    if kind == KNAVE_LEAF:
        return full ^ tables[statement[1]]
    parts = [_table(child, tables, full) for child in statement[1:]]
    if kind == "not":
        return full ^ parts[0]
    if kind == "and":
        return functools.reduce(int.__and__, parts)
    if kind == "or":
        return functools.reduce(int.__or__, parts)
    if kind == "->":
        return (full ^ parts[0]) | parts[1]
    if kind == "<=>":
        return full ^ (parts[0] ^ parts[1])
    raise ValueError(f"unknown statement node {kind!r}")


def solutions(statements: Sequence[Statement]) -> list[tuple[bool, ...]]:
    """Every assignment (True = knight) in which each person is a knight iff their statement holds."""
    n = len(statements)
    tables, full = _knight_tables(n)
    consistent = full
    for i, statement in enumerate(statements):
        consistent &= full ^ (tables[i] ^ _table(statement, tables, full))
    return [tuple(bool(a >> i & 1) for i in range(n)) for a in range(1 << n) if consistent >> a & 1]


def _unique_solution(statements: Sequence[Statement]) -> tuple[bool, ...] | None:
    n = len(statements)
    tables, full = _knight_tables(n)
    consistent = full
    for i, statement in enumerate(statements):
        consistent &= full ^ (tables[i] ^ _table(statement, tables, full))
        if not consistent:
            return None
    if consistent & (consistent - 1):
        return None
    assignment = consistent.bit_length() - 1
    return tuple(bool(assignment >> i & 1) for i in range(n))


# ---- sampling -----------------------------------------------------------------------------------------


def _sample(rng: random.Random, speaker: int, n: int, depth: int, width: int) -> Statement:
    """A random statement of at most ``depth`` levels; never "I am a knave" or "I am not a knight"."""
    if depth <= 1 or rng.randrange(len(OPERATORS) + 1) == 0:
        person = rng.randrange(n)
        if person == speaker:
            return (KNIGHT_LEAF, person)
        return (rng.choice((KNIGHT_LEAF, KNAVE_LEAF)), person)
    op = rng.choice(OPERATORS)
    if op == "not":
        while True:
            child = _sample(rng, speaker, n, depth - 1, width)
            if child[0] != "not" and child != (KNIGHT_LEAF, speaker):
                return ("not", child)
    arity = rng.randint(2, width) if op in ("and", "or") else 2
    children: list[Statement] = []
    leaf_people: set[int] = set()
    for _ in range(50 * arity):  # enough tries to fill any arity we allow; fewer children otherwise
        child = _sample(rng, speaker, n, depth - 1, width)
        # Siblings differ, and no two sibling leaves name the same person: "A is a knight and A is a
        # knave" is a degenerate contradiction, "A is a knight or A is a knight" a repetition.
        is_leaf = child[0] in (KNIGHT_LEAF, KNAVE_LEAF)
        if child in children or (is_leaf and child[1] in leaf_people):
            continue
        children.append(child)
        if is_leaf:
            leaf_people.add(child[1])
        if len(children) == arity:
            break
    if len(children) < 2:
        return children[0]
    return (op, *children)


# ---- English --------------------------------------------------------------------------------------------


def render_statement(statement: Statement, names: Sequence[str]) -> str:
    """``statement`` in English; compound parts are parenthesised so the reading is never ambiguous."""

    def part(child: Statement) -> str:
        text = render_statement(child, names)
        return text if child[0] in (KNIGHT_LEAF, KNAVE_LEAF) else f"({text})"

    kind = statement[0]
    if kind == KNIGHT_LEAF:
        return f"{names[statement[1]]} is a knight"
    if kind == KNAVE_LEAF:
        return f"{names[statement[1]]} is a knave"
    if kind == "not":
        return f"it is not the case that {part(statement[1])}"
    if kind in ("and", "or"):
        return f" {kind} ".join(part(child) for child in statement[1:])
    if kind == "->":
        return f"if {part(statement[1])} then {part(statement[2])}"
    if kind == "<=>":
        return f"{part(statement[1])} if and only if {part(statement[2])}"
    raise ValueError(f"unknown statement node {kind!r}")


def _name_list(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _quote(statement: Statement, names: Sequence[str]) -> str:
    """The statement as a quoted sentence: its first letter capitalised (even after a parenthesis)."""
    text = render_statement(statement, names)
    first = 1 if text.startswith("(") else 0
    return f'"{text[:first]}{text[first].upper()}{text[first + 1 :]}."'


def render_puzzle(names: Sequence[str], statements: Sequence[Statement]) -> str:
    """The puzzle in English, in the K&K benchmark's wording."""
    said = " ".join(f"{name} says, {_quote(st, names)}" for name, st in zip(names, statements, strict=True))
    return (
        f"{INTRO} You meet {len(names)} inhabitants: {_name_list(names)}. {said} "
        "So who is a knight and who is a knave?"
    )


def render_answer(names: Sequence[str], solution: Sequence[bool]) -> str:
    """The reference answer: ``(1) Name is a knight`` lines, in the order the people were introduced."""
    return "\n".join(
        f"({i}) {name} is a {'knight' if knight else 'knave'}"
        for i, (name, knight) in enumerate(zip(names, solution, strict=True), start=1)
    )


# ---- puzzles ------------------------------------------------------------------------------------------


def generate_puzzle(n_people: int, seed: int, depth: int = 2, width: int = 2) -> Puzzle:
    """The puzzle for (n_people, seed, depth, width): random statements, kept once the solution is unique.

    Deterministic: the generator is seeded from all four arguments and never touches global random state.
    """
    _require_int("n_people", n_people, MIN_PEOPLE, MAX_PEOPLE)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    _require_int("depth", depth, MIN_DEPTH, MAX_DEPTH)
    _require_int("width", width, MIN_WIDTH, MAX_WIDTH)
    rng = random.Random(f"knights-knaves/{n_people}/{seed}/{depth}/{width}")
    names = tuple(rng.sample(NAMES, n_people))
    for _ in range(MAX_ATTEMPTS):
        statements = tuple(_sample(rng, i, n_people, depth, width) for i in range(n_people))
        solution = _unique_solution(statements)
        if solution is not None:
            return Puzzle(
                names=names,
                statements=statements,
                solution=solution,
                text=render_puzzle(names, statements),
                answer_text=render_answer(names, solution),
                seed=seed,
                depth=depth,
                width=width,
            )
    raise RuntimeError(
        f"no puzzle with a unique solution in {MAX_ATTEMPTS} attempts "
        f"(n_people={n_people}, seed={seed}, depth={depth}, width={width})"
    )


def statements_to_json(statements: Sequence[Statement]) -> str:
    """Statements as a JSON string (tuples become lists): parquet cannot hold mixed-type nested lists."""
    return json.dumps(statements, separators=(",", ":"))


def statements_from_json(text: str) -> tuple[Statement, ...]:
    def freeze(node: Any) -> Any:
        return tuple(freeze(x) for x in node) if isinstance(node, list) else node

    return tuple(freeze(s) for s in json.loads(text))


# ---- rows and CLI ---------------------------------------------------------------------------------------


def build_row(puzzle: Puzzle, split: str, index: int) -> dict[str, Any]:
    """One verl row: plain chat messages (verl applies the chat template), the answer as ground truth."""
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": puzzle.text}],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": puzzle.answer_text},
        "extra_info": {
            "split": split,
            "index": index,
            "n_people": puzzle.n_people,
            "names": list(puzzle.names),
            "statements": statements_to_json(puzzle.statements),
            "solution": list(puzzle.solution),
            "seed": puzzle.seed,
            "depth": puzzle.depth,
            "width": puzzle.width,
        },
    }


def parse_people(spec: str) -> list[int]:
    """``"3-7"`` -> [3, 4, 5, 6, 7]; ``"5"`` -> [5]; ``"3,5,8"`` -> [3, 5, 8]."""
    sizes: list[int] = []
    try:
        for part in spec.split(","):
            low, _, high = part.strip().partition("-")
            sizes.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        raise ValueError(f"--people {spec!r}: expected N, A-B or a comma list of those") from None
    if not sizes or any(not MIN_PEOPLE <= n <= MAX_PEOPLE for n in sizes):
        raise ValueError(f"--people {spec!r}: sizes must lie in {MIN_PEOPLE}..{MAX_PEOPLE}")
    return sorted(set(sizes))


def spread(total: int, sizes: Sequence[int]) -> dict[int, int]:
    """``total`` split as evenly as possible over ``sizes`` (the first sizes take the remainder)."""
    base, extra = divmod(total, len(sizes))
    return {n: base + (1 if i < extra else 0) for i, n in enumerate(sizes)}


@dataclass
class SplitRows:
    """Rows of both splits, and how many puzzles were drawn / skipped as duplicates to get them."""

    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    draws: int
    duplicates: int


def build_splits(
    sizes: Sequence[int],
    n_train: int,
    n_test: int,
    seed: int,
    depth: int = 2,
    width: int = 2,
    log: Any = None,
) -> SplitRows:
    """Disjoint, deduplicated (by puzzle text) train/test rows, spread evenly over ``sizes``.

    Per size, puzzles are drawn with seeds ``seed * 1_000_000_007 + k`` (k = 0, 1, ...); the first distinct
    ones go to test, the next to train, so test stays the same when only ``n_train`` changes.
    """
    train_counts, test_counts = spread(n_train, sizes), spread(n_test, sizes)
    out = SplitRows(train=[], test=[], draws=0, duplicates=0)
    seen: set[str] = set()
    for n in sizes:
        started = time.perf_counter()
        want_test, want = test_counts[n], test_counts[n] + train_counts[n]
        draws = duplicates = taken = 0
        max_draws = 10 * want + 1000
        while taken < want:
            if draws >= max_draws:
                raise RuntimeError(
                    f"only {taken} distinct puzzles with {n} people after {draws} draws "
                    f"({want} wanted); ask for fewer, or a larger --depth/--width"
                )
            puzzle = generate_puzzle(n, seed * 1_000_000_007 + draws, depth, width)
            draws += 1
            if puzzle.text in seen:
                duplicates += 1
                continue
            seen.add(puzzle.text)
            split, rows = ("test", out.test) if taken < want_test else ("train", out.train)
            rows.append(build_row(puzzle, split, len(rows)))
            taken += 1
        out.draws += draws
        out.duplicates += duplicates
        if log is not None:
            elapsed = time.perf_counter() - started
            log(
                f"  {n} people: {test_counts[n]} test + {train_counts[n]} train "
                f"({duplicates} duplicates skipped) in {elapsed:.2f}s"
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aggc_rl.data.knights_knaves", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for train.parquet / test.parquet")
    parser.add_argument("--people", default="3-7", help="sizes: N, A-B or a comma list (default 3-7)")
    parser.add_argument("--train", type=int, default=900, help="train rows, spread over the sizes")
    parser.add_argument("--test", type=int, default=100, help="test rows, spread over the sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=2, help=f"statement depth ({MIN_DEPTH}..{MAX_DEPTH})")
    parser.add_argument("--width", type=int, default=2, help=f"and/or width ({MIN_WIDTH}..{MAX_WIDTH})")
    args = parser.parse_args(argv)
    try:
        sizes = parse_people(args.people)
        if args.train < 1 or args.test < 1:
            raise ValueError("--train and --test must be >= 1")
        # Puzzle seeds are seed * 1_000_000_007 + k and must fit parquet's int64.
        _require_int("--seed", args.seed, -(2**32), 2**32)
        _require_int("--depth", args.depth, MIN_DEPTH, MAX_DEPTH)
        _require_int("--width", args.width, MIN_WIDTH, MAX_WIDTH)
    except ValueError as err:
        parser.error(str(err))
    started = time.perf_counter()
    print(f"generating {args.train} train + {args.test} test puzzles, {args.people} people, seed {args.seed}")
    try:
        splits = build_splits(
            sizes,
            args.train,
            args.test,
            args.seed,
            args.depth,
            args.width,
            log=lambda m: print(m, flush=True),
        )
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_rows(splits.train, args.out / "train.parquet")
    write_rows(splits.test, args.out / "test.parquet")
    elapsed = time.perf_counter() - started
    total = len(splits.train) + len(splits.test)
    print(
        f"wrote {len(splits.train)} train / {len(splits.test)} test rows to {args.out} "
        f"in {elapsed:.2f}s ({total / elapsed:.0f} rows/s, {splits.duplicates} duplicates skipped)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
