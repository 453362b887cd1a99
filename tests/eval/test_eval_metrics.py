"""Pure metric functions: unbiased pass@k, majority vote, summaries of hand-made records."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggc_rl.stats import wilson_interval
from eval.metrics import majority_correct, pass_at_k, pass_ks, summarize
from eval.scoring import ItemRecord
from eval.tasks import GSM8K, KNIGHTS_KNAVES, get_task


def _pass_at_k_brute(n: int, c: int, k: int) -> Fraction:
    draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
    return Fraction(sum(any(d) for d in draws), len(draws))


@given(st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_exact_probability_over_all_draws(args: tuple[int, int, int]) -> None:
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(float(_pass_at_k_brute(n, c, k)), abs=1e-12)


def test_pass_at_1_is_the_fraction_correct_and_bad_arguments_fail() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


def test_pass_ks_are_powers_of_two_below_n_and_n() -> None:
    assert pass_ks(1) == [1]
    assert pass_ks(3) == [1, 2, 3]
    assert pass_ks(8) == [1, 2, 4, 8]
    assert pass_ks(10) == [1, 2, 4, 8, 10]


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_seen() -> None:
    assert majority_correct([None, "4", "4", "5"], [False, False, False, True]) is False
    assert majority_correct([None, None, "5"], [False, False, True]) is True  # None never wins
    assert majority_correct(["8", "9"], [False, True]) is False  # tie: the first seen wins
    assert majority_correct(["9", "8"], [True, False]) is True
    assert majority_correct([None, None], [False, False]) is False


def test_gsm8k_votes_group_equal_numbers() -> None:
    assert GSM8K.vote_key("18") == GSM8K.vote_key("18.0") == GSM8K.vote_key("18.00")
    assert GSM8K.vote_key("18") != GSM8K.vote_key("180")
    assert GSM8K.vote_key(r"\frac{1}{2}") == r"\frac{1}{2}"  # not a plain number: kept as text
    assert GSM8K.vote_key(None) is None


def _record(
    index: int, sample: int, correct: bool, pred: str | None, n_people: int | None = None
) -> ItemRecord:
    return ItemRecord(
        index=index,
        sample=sample,
        response="r" * (index + 1),
        pred=pred,
        score=1.0 if correct else 0.0,
        correct=correct,
        format_failure=pred is None,
        response_tokens=10 * (sample + 1),
        truncated=sample == 2,
        ground_truth="x",
        n_people=n_people,
    )


def test_summary_of_hand_made_records() -> None:
    outcomes = {  # prompt -> [(correct, pred)] for 3 samples
        0: [(True, "18"), (True, "18.0"), (False, "3")],
        1: [(False, "4"), (False, "4"), (True, "5")],
        2: [(False, None), (False, None), (True, "1234")],
        3: [(False, "8"), (False, None), (False, "9")],
    }
    records = [
        _record(i, s, ok, pred) for i, samples in outcomes.items() for s, (ok, pred) in enumerate(samples)
    ]
    summary = summarize(records, GSM8K.vote_key)
    assert summary.n_prompts == 4 and summary.samples_per_prompt == 3
    assert summary.accuracy == pytest.approx(1 / 3)
    assert (summary.ci95_low, summary.ci95_high) == pytest.approx(wilson_interval(1 / 3, 4))
    assert summary.pass_at_k == pytest.approx({1: 1 / 3, 2: 7 / 12, 3: 0.75})
    assert summary.maj_at_k == pytest.approx({3: 0.5})
    assert summary.format_failure_rate == pytest.approx(3 / 12)
    assert summary.truncation_rate == pytest.approx(4 / 12)
    assert summary.mean_response_tokens == pytest.approx(20.0)
    assert summary.per_size == {}


def test_per_size_accuracy_groups_prompts_by_people() -> None:
    records = [
        _record(0, 0, True, "a", n_people=3),
        _record(1, 0, False, "b", n_people=3),
        _record(2, 0, True, "c", n_people=5),
    ]
    summary = summarize(records, KNIGHTS_KNAVES.vote_key, by_size=True)
    assert list(summary.per_size) == [3, 5]
    assert summary.per_size[3].accuracy == 0.5 and summary.per_size[3].n_prompts == 2
    assert summary.per_size[5].accuracy == 1.0
    assert (summary.per_size[3].ci95_low, summary.per_size[3].ci95_high) == pytest.approx(
        wilson_interval(0.5, 2)
    )
    assert summary.pass_at_k == {} and summary.maj_at_k == {}  # one sample: no pass@k / maj@k


def test_summary_refuses_uneven_sample_counts_and_no_records() -> None:
    with pytest.raises(ValueError, match="different sample counts"):
        summarize(
            [_record(0, 0, True, "1"), _record(0, 1, True, "1"), _record(1, 0, True, "1")], GSM8K.vote_key
        )
    with pytest.raises(ValueError, match="no records"):
        summarize([], GSM8K.vote_key)


def test_unknown_task_and_method_errors_name_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"unknown --task 'math'; allowed: gsm8k, knights_knaves"):
        get_task("math")
    with pytest.raises(
        ValueError, match=r"--method 'loose' for task gsm8k: allowed strict, flexible, math_verify"
    ):
        GSM8K.scorer_kwargs("loose")
    with pytest.raises(ValueError, match="single scorer"):
        KNIGHTS_KNAVES.scorer_kwargs("strict")
    assert GSM8K.scorer_kwargs(None) == {"method": "strict"}
    assert math.isclose(pass_at_k(3, 3, 3), 1.0)
