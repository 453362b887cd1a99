"""GSM8K method="math_verify": math-verify in a killable child process."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggc_rl.rewards import math_verify_sandbox
from aggc_rl.rewards.gsm8k import compute_score
from aggc_rl.rewards.math_verify_sandbox import MathVerifySandbox, require_math_verify

pytest.importorskip("math_verify", reason="the math-verify package is not installed")


def score(response: object, truth: object, **kwargs: object) -> dict:
    return compute_score("openai/gsm8k", response, truth, method="math_verify", format_score=0.1, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def warm_worker() -> None:
    score("\\boxed{1}", "1", timeout_s=30.0)  # start the child once; later calls measure only the call


@pytest.mark.parametrize(
    ("response", "truth", "correct"),
    [
        ("so the answer is \\boxed{18}", "18", True),
        ("\\boxed{18.0}", "18", True),
        ("The answer is 1,234", "1234", True),
        ("$\\frac{1}{2}$", "0.5", True),
        ("\\boxed{-5}", "-5", True),
        ("\\boxed{180}", "18", False),
        ("\\boxed{18}", "180", False),
        ("#### 72", "72", True),
    ],
)
def test_math_verify_compares_values(response: str, truth: str, correct: bool) -> None:
    result = score(response, truth)
    assert result["score"] == (1.0 if correct else 0.1)
    assert result["acc"] == float(correct)
    assert result["pred"]


#: A long tail after the answer, full of other numbers (a model that keeps talking after it answered).
TAIL = "".join(f" Check {i}: {i} + {i} = {2 * i}." for i in range(400))


@pytest.mark.parametrize(
    "response",
    [
        "Adding the two amounts, the total is \\boxed{18}." + TAIL,
        "The final answer is $18$." + TAIL,
        "Step 1: 9 + 9 = 18. The answer is \\boxed{18}. " + "Now something else. " * 300 + "Total: 7",
    ],
)
def test_a_right_answer_followed_by_a_long_tail_is_scored_right(response: str) -> None:
    assert len(response) > 3 * math_verify_sandbox.MAX_RESPONSE_CHARS
    # What the old tail-only window sent: the answer is cut off, and a number of the tail is extracted.
    tail_only = math_verify_sandbox.check("18", response[-math_verify_sandbox.MAX_RESPONSE_CHARS :], 30.0)
    assert not tail_only.correct
    result = score(response, "18", timeout_s=30.0)
    assert result["score"] == 1.0 and result["pred"], result
    assert score(response, "19", timeout_s=30.0)["acc"] == 0.0


def test_the_excerpt_keeps_short_responses_whole_and_bounds_long_ones() -> None:
    assert math_verify_sandbox.excerpt("so \\boxed{3}") == "so \\boxed{3}"
    long = "\\boxed{1} " * 5000
    cut = math_verify_sandbox.excerpt(long)
    assert len(cut) <= math_verify_sandbox.MAX_RESPONSE_CHARS + 8 * 1200 + 20
    assert cut.endswith(long[-math_verify_sandbox.MAX_RESPONSE_CHARS :])


def test_nothing_extracted_scores_zero() -> None:
    assert score("I do not know.", "18") == {"score": 0.0, "acc": 0.0, "pred": None}


def test_a_runaway_input_is_retried_once_then_a_counted_timeout_and_the_worker_recovers() -> None:
    from aggc_rl.rewards import compute_score as router

    started = time.perf_counter()
    result = score("\\boxed{9^{9^{9^{9}}}}", "18", timeout_s=0.3)
    # two deadlines and one warm restart in between (the restart is not part of either deadline)
    assert time.perf_counter() - started < 30.0
    assert result["score"] == 0.0 and result["pred"] is None and result["timeouts"] == 1.0
    routed = router("openai/gsm8k", "\\boxed{9^{9^{9^{9}}}}", "18", method="math_verify", timeout_s=0.3)
    assert routed["timeouts"] == 1.0 and routed["unscored"] == 1.0
    assert score("\\boxed{18}", "18", timeout_s=30.0)["score"] == 1.0  # a fresh child took over


def test_a_timeout_is_retried_on_a_warm_worker_before_it_counts() -> None:
    calls = []

    class Flaky(MathVerifySandbox):
        def _check_once(self, gold, response, timeout_s):
            calls.append(timeout_s)
            if len(calls) == 1:
                return math_verify_sandbox.Verdict(pred=None, correct=False, timed_out=True)
            return super()._check_once(gold, response, timeout_s)

    sandbox = Flaky()
    try:
        verdict = sandbox.check("18", "\\boxed{18}", 30.0)
    finally:
        sandbox.close()
    assert len(calls) == 2 and verdict.correct and not verdict.timed_out


def test_the_first_call_on_a_fresh_worker_is_fast_because_it_was_warmed_up() -> None:
    sandbox = MathVerifySandbox()
    try:
        sandbox._ensure_started()  # start-up and warm-up: outside any deadline
        started = time.perf_counter()
        verdict = sandbox._check_once("0.5", "so \\boxed{\\frac{1}{2}}", 30.0)
        first = time.perf_counter() - started
    finally:
        sandbox.close()
    assert verdict.correct and first < 0.4, f"first call on a warm worker took {first:.3f}s"


def test_works_from_worker_threads() -> None:
    # verl calls reward functions from a thread pool, where SIGALRM-based timeouts cannot work.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: score(f"\\boxed{{{i}}}", str(i % 3), timeout_s=30.0), range(12)))
    assert [r["acc"] for r in results] == [1.0 if i == i % 3 else 0.0 for i in range(12)]


@pytest.mark.parametrize(
    "response",
    [None, b"\xff\\boxed{18}", "", "\ud800\\boxed{18}", "x" * 1_000_000, "\\boxed{" * 5000, "####" * 200_000],
)
def test_junk_scores_without_raising(response: object) -> None:
    started = time.perf_counter()
    result = score(response, "18")
    assert time.perf_counter() - started < 1.0
    assert result["score"] in (0.0, 0.1, 1.0)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789\\{}^_$#,.-+ abcboxedfrac")), max_size=120))
def test_fuzz_never_raises(response: str) -> None:
    result = score(response, "18")
    assert result["score"] in (0.0, 0.1, 1.0)
    assert (result["pred"] is None) == (result["score"] == 0.0)


def test_missing_package_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = math_verify_sandbox.importlib.util.find_spec
    monkeypatch.setattr(
        math_verify_sandbox.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "math_verify" else real_find_spec(name, *a),
    )
    with pytest.raises(ImportError, match="pip install math-verify"):
        require_math_verify()
    monkeypatch.setattr(math_verify_sandbox, "_SANDBOX", MathVerifySandbox())
    with pytest.raises(ImportError, match="math-verify"):
        score("\\boxed{18}", "18")
