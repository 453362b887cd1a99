"""GSM8K scorer: every rule of the three methods, robustness on junk, and the real test split."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggc_rl.rewards.gsm8k import METHODS, compute_score

SHARED_GSM8K_TEST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k" / "test.jsonl"
TIME_LIMIT_S = 0.5
FAST_METHODS = ("strict", "flexible")


def score(response: object, truth: object, **kwargs: object) -> dict:
    return compute_score("openai/gsm8k", response, truth, **kwargs)


@pytest.mark.parametrize(
    ("response", "truth", "correct"),
    [
        ("so 9 * 2 = 18\n#### 18", "18", True),
        ("#### 18.0", "18", True),
        ("#### 18", "18.0", True),
        ("#### 1,234", "1234", True),
        ("#### 1234", "1,234", True),
        ("#### $1,234.", "1234", True),
        ("#### 18 dollars", "18", True),
        ("#### 180", "18", False),
        ("#### 18", "180", False),
        ("#### -5", "-5", True),
        ("#### 5", "-5", False),
        ("#### 0.5", "0.5", True),
        ("#### .5", "0.50", True),
        ("#### 12\n#### 18", "18", True),
        ("#### 18\n#### 12", "18", False),
    ],
)
def test_strict(response: str, truth: str, correct: bool) -> None:
    result = score(response, truth, method="strict", format_score=0.1)
    assert result["score"] == (1.0 if correct else 0.1)
    assert result["acc"] == float(correct)
    assert result["pred"] is not None


@pytest.mark.parametrize(
    "response", ["The answer is 18.", "18", "#### eighteen", "#### 18\nthen #### none", "", "####"]
)
def test_strict_without_a_marked_number_scores_zero(response: str) -> None:
    result = score(response, "18", method="strict", format_score=0.1)
    assert result == {"score": 0.0, "acc": 0.0, "pred": None}


@pytest.mark.parametrize(
    ("response", "truth", "correct"),
    [
        ("The answer is 18.", "18", True),
        ("It costs $1,234.00 in all.", "1234", True),
        ("first 18, then 180", "18", False),
        ("x = -5", "-5", True),
        ("pages 3-5", "5", True),
        ("half: 0.5", "1/2", True),
        ("#### 18 and later 7", "18", False),
    ],
)
def test_flexible(response: str, truth: str, correct: bool) -> None:
    result = score(response, truth, method="flexible", format_score=0.1)
    assert result["score"] == (1.0 if correct else 0.1)
    assert result["acc"] == float(correct)


def test_flexible_without_a_number_scores_zero() -> None:
    assert score("no idea", "18", method="flexible", format_score=0.1) == {
        "score": 0.0,
        "acc": 0.0,
        "pred": None,
    }


def test_score_and_format_score_are_configurable() -> None:
    assert score("#### 18", "18", score=2.5)["score"] == 2.5
    assert score("#### 17", "18", format_score=-1.0)["score"] == -1.0
    assert score("nothing", "18", format_score=-1.0)["score"] == 0.0


def test_text_ground_truth_compares_as_normalised_text() -> None:
    assert score("#### 18", "eighteen")["score"] == 0.0
    assert score("#### 1,000", "1e3", method="strict")["score"] == 0.0  # "1e3" is not a plain number: text


@pytest.mark.parametrize("method", ["exact", "STRICT", "", None])
def test_unknown_method_is_a_value_error_naming_it(method: object) -> None:
    with pytest.raises(ValueError, match="allowed") as err:
        score("#### 18", "18", method=method)
    assert repr(method) in str(err.value)
    assert all(m in str(err.value) for m in METHODS)


JUNK_RESPONSES = {
    "none": None,
    "int": 18,
    "float": 18.0,
    "object": object(),
    "bytes": b"#### 18",
    "bytearray": bytearray(b"\xff\xfe#### 18"),
    "empty": "",
    "binary": bytes(range(256)).decode("latin-1") * 40,
    "surrogates": "\ud800#### 18\udfff",
    "1MB text": "lorem ipsum dolor " * 60_000,
    "1MB digits": "9" * 1_000_000,
    "1MB commas": "1," * 500_000,
    "200k markers": "####" * 200_000,
    "200k spaced markers": "#### " * 200_000,
    "marker then 1MB digits": "#### " + "9" * 1_000_000,
    "1MB minus signs": "-" * 1_000_000 + "5",
    "1MB dots": "1." * 500_000,
}


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("name", sorted(JUNK_RESPONSES))
def test_junk_scores_without_raising_and_fast(name: str, method: str) -> None:
    started = time.perf_counter()
    result = score(JUNK_RESPONSES[name], "18", method=method, format_score=0.1)
    assert time.perf_counter() - started < TIME_LIMIT_S
    assert result["score"] in (0.0, 0.1, 1.0)
    assert (result["pred"] is None) == (result["score"] == 0.0)


@pytest.mark.parametrize("truth", [None, b"18", 18, object(), "", "x" * 1_000_000, "#### " * 100_000])
def test_junk_ground_truth_scores_without_raising(truth: object) -> None:
    started = time.perf_counter()
    result = score("#### 18", truth)
    assert time.perf_counter() - started < TIME_LIMIT_S
    assert result["score"] in (0.0, 1.0)


_FUZZ_TEXT = st.text(
    alphabet=st.sampled_from(list("0123456789#$,.-+ \n\t*abc\u2212\u0661\x00\ud800")), max_size=300
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=_FUZZ_TEXT | st.text(max_size=300), truth=_FUZZ_TEXT, method=st.sampled_from(FAST_METHODS))
def test_fuzz_never_raises_and_stays_in_range(response: str, truth: str, method: str) -> None:
    started = time.perf_counter()
    result = score(response, truth, method=method, format_score=0.1)
    assert time.perf_counter() - started < TIME_LIMIT_S
    assert result["score"] in (0.0, 0.1, 1.0)
    assert (result["pred"] is None) == (result["score"] == 0.0)
    assert result["acc"] == (1.0 if result["score"] == 1.0 else 0.0)


@settings(max_examples=200, deadline=None)
@given(
    value=st.integers(min_value=-(10**12), max_value=10**12),
    cents=st.integers(min_value=0, max_value=99),
    noise=st.text(alphabet="abc ,.\n", max_size=40),
)
def test_fuzz_marked_numbers_compare_by_value(value: int, cents: int, noise: str) -> None:
    shown = f"{value:,}.{cents:02d}"  # thousands commas and a decimal part in the response
    truth = f"{value}.{cents:02d}".rstrip("0").rstrip(".")  # the plain value, trailing zeros dropped
    for method in FAST_METHODS:
        assert score(f"{noise} #### {shown}", truth, method=method)["score"] == 1.0
        assert score(f"{noise} #### {shown}", f"{value + 1}", method=method)["score"] == 0.0


@pytest.fixture(scope="module")
def gsm8k_test_rows() -> list[dict]:
    if not SHARED_GSM8K_TEST.is_file():
        pytest.skip(
            f"real GSM8K test split not found at {SHARED_GSM8K_TEST} (the shared data folder is absent)"
        )
    return [json.loads(line) for line in SHARED_GSM8K_TEST.read_text(encoding="utf-8").splitlines() if line]


@pytest.mark.parametrize("method", FAST_METHODS)
def test_every_real_gold_solution_scores_one(gsm8k_test_rows: list[dict], method: str) -> None:
    assert len(gsm8k_test_rows) == 1319
    failures = []
    for row in gsm8k_test_rows:
        truth = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        result = score(row["answer"], truth, method=method)
        if result["score"] != 1.0:
            failures.append((row["idx"], truth, result))
    assert not failures, failures[:5]


def test_real_gold_solutions_under_math_verify(gsm8k_test_rows: list[dict]) -> None:
    """math-verify reads "$4.00 + $2.00" money as LaTeX math, so a few raw gold solutions fail (4 of 1319)."""
    pytest.importorskip("math_verify")
    correct = 0
    for row in gsm8k_test_rows:
        truth = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        correct += score(row["answer"], truth, method="math_verify", timeout_s=5.0)["score"] == 1.0
    assert correct / len(gsm8k_test_rows) >= 0.99


# -- Unicode decimal digits (issue 16) ------------------------------------------------------------------------
UNICODE_18 = {
    "full-width": "\uff11\uff18",
    "Arabic-Indic": "\u0661\u0668",
    "extended Arabic-Indic": "\u06f1\u06f8",
    "Devanagari": "\u0967\u096e",
    "Bengali": "\u09e7\u09ee",
}


@pytest.mark.parametrize("script", sorted(UNICODE_18))
@pytest.mark.parametrize("method", ["strict", "flexible"])
def test_unicode_decimal_digits_are_read_as_the_digits_they_are(script, method):
    digits = UNICODE_18[script]
    result = compute_score("openai/gsm8k", f"so the total is #### {digits}", "18", method=method)
    assert result["score"] == 1.0 and result["pred"] == "18", (script, method, result)
    assert compute_score("openai/gsm8k", f"#### {digits}", "180", method=method)["score"] == 0.0


def test_unicode_separators_signs_and_ground_truths():
    assert compute_score("gsm8k", "#### \uff11\uff0c\uff12\uff13\uff14", "1234")["score"] == 1.0  # 1,234
    assert compute_score("gsm8k", "#### \u0663\u066b\u0665", "3.5")["score"] == 1.0  # Arabic decimal sep
    assert compute_score("gsm8k", "\uff03\uff03\uff03\uff03 \uff0d\uff15", "-5")["score"] == 1.0  # full-width
    assert compute_score("gsm8k", "#### 18", "\u0967\u096e")["score"] == 1.0  # a Devanagari ground truth


def test_superscripts_and_fractions_do_not_become_numbers():
    # NFKC would turn "m²" into "m2" and make 2 the last number; only decimal digits are rewritten.
    assert compute_score("gsm8k", "the area is 25 m\u00b2", "25", method="flexible")["score"] == 1.0
    assert compute_score("gsm8k", "half: \u00bd", "2", method="flexible")["pred"] is None
