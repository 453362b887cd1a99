"""The verl entry point: routing by data_source, kwargs handling, uniform keys, loading by file path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import aggc_rl.rewards as rewards
from aggc_rl.rewards import RESULT_KEYS, SCORERS, compute_score, gsm8k, knights_knaves

KK_TRUTH = "(1) Zoey is a knight\n(2) Oliver is a knave"
KK_RIGHT = "<think>ok</think><answer>(1) Zoey is a knight\n(2) Oliver is a knave</answer>"


@pytest.mark.parametrize("data_source", ["openai/gsm8k", "gsm8k"])
def test_gsm8k_sources_route_to_the_gsm8k_scorer(data_source: str) -> None:
    routed = compute_score(data_source, "#### 18.0", "18")
    direct = gsm8k.compute_score(data_source, "#### 18.0", "18")
    assert {k: routed[k] for k in direct} == direct
    assert routed["score"] == 1.0


def test_knights_knaves_routes_to_its_scorer() -> None:
    routed = compute_score("knights_knaves", KK_RIGHT, KK_TRUTH)
    direct = knights_knaves.compute_score("knights_knaves", KK_RIGHT, KK_TRUTH)
    assert {k: routed[k] for k in direct} == direct and routed["unscored"] == 0.0
    assert routed["score"] == 3.0


@pytest.mark.parametrize("data_source", ["openai/gsm8k_v2", "GSM8K", "", None, 7, "lighteval/MATH"])
def test_unknown_data_source_is_a_counted_logged_unscored_sample(data_source: object, caplog) -> None:
    # Raising would make verl drop the whole prompt group with a traceback (response/aborted_ratio 0).
    before = sum(rewards.EVENTS.unscored.values())
    with caplog.at_level("WARNING", logger="aggc_rl.rewards"):
        result = compute_score(data_source, "#### 18", "18")
    assert (
        result["unscored"] == 1.0 and result["timeouts"] == 0.0 and result["score"] == rewards.UNSCORED_SCORE
    )
    assert tuple(result) == RESULT_KEYS
    assert sum(rewards.EVENTS.unscored.values()) == before + 1
    assert f"unknown data_source {data_source!r}" in caplog.text
    assert all(name in caplog.text for name in SCORERS) and "reward/unscored" in caplog.text


@pytest.mark.parametrize(
    ("data_source", "truth"),
    [("openai/gsm8k", None), ("openai/gsm8k", "eighteen"), ("knights_knaves", None), ("knights_knaves", "x")],
)
def test_a_missing_or_unreadable_ground_truth_is_unscored_not_format_only(data_source, truth, caplog) -> None:
    with caplog.at_level("WARNING", logger="aggc_rl.rewards"):
        result = compute_score(data_source, KK_RIGHT + " #### 18", truth)
    assert result["unscored"] == 1.0 and result["score"] == rewards.UNSCORED_SCORE
    assert "bad ground truth" in caplog.text


def test_a_scorer_that_raises_is_an_unscored_sample(monkeypatch, caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("the math-verify worker did not start")

    monkeypatch.setitem(rewards.SCORERS, "gsm8k", broken)
    monkeypatch.setitem(rewards._DECLARED, broken, frozenset())
    with caplog.at_level("WARNING", logger="aggc_rl.rewards"):
        result = compute_score("gsm8k", "#### 18", "18")
    assert result["unscored"] == 1.0
    assert "scorer error" in caplog.text and "did not start" in caplog.text


def test_a_scored_sample_carries_zero_flags_and_event_metrics_sum_a_batch() -> None:
    good = compute_score("openai/gsm8k", "#### 18", "18")
    assert good["unscored"] == 0.0 and good["timeouts"] == 0.0
    bad = compute_score("nope", "#### 18", "18")
    timed = dict(bad, timeouts=1.0)
    assert rewards.event_metrics([good, bad, timed, {}]) == {"reward/unscored": 2.0, "reward/timeouts": 1.0}


def test_every_result_has_the_same_keys_in_a_mixed_batch() -> None:
    # verl reads the extra-info keys from the first sample and indexes every other sample with them.
    results = [
        compute_score("openai/gsm8k", "#### 18", "18"),
        compute_score("knights_knaves", KK_RIGHT, KK_TRUTH),
        compute_score("gsm8k", None, None, method="flexible"),
        compute_score("knights_knaves", None, None),
    ]
    assert all(tuple(r) == RESULT_KEYS for r in results)
    assert results[0]["format_score"] is None  # GSM8K has no format part
    assert results[1]["format_score"] == 1.0


def test_each_scorer_returns_only_known_keys() -> None:
    # A key one scorer adds but the router drops would never reach the logs: keep RESULT_KEYS complete.
    assert set(gsm8k.compute_score("gsm8k", "#### 1", "1")) <= set(RESULT_KEYS)
    assert set(knights_knaves.compute_score("knights_knaves", KK_RIGHT, KK_TRUTH)) <= set(RESULT_KEYS)


def test_task_kwargs_reach_only_the_scorers_that_declare_them() -> None:
    # One reward_kwargs dict reaches every sample: GSM8K's method must not break K&K samples.
    kwargs = {"method": "flexible", "format_score": 0.25}
    assert compute_score("openai/gsm8k", "the answer is 17", "18", **kwargs)["score"] == 0.25
    assert compute_score("knights_knaves", KK_RIGHT, KK_TRUTH, **kwargs)["score"] == 3.0


def test_verl_infrastructure_kwargs_are_ignored() -> None:
    extra = {"reward_router_address": "127.0.0.1:1", "reward_model_tokenizer": object()}
    assert compute_score("openai/gsm8k", "#### 18", "18", **extra)["score"] == 1.0
    assert compute_score("knights_knaves", KK_RIGHT, KK_TRUTH, **extra)["score"] == 3.0


def test_a_kwarg_no_scorer_declares_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="methd"):
        compute_score("openai/gsm8k", "#### 18", "18", methd="flexible")


def test_works_when_loaded_by_file_path_like_verl() -> None:
    # verl's load_module: spec_from_file_location under a made-up name, not as aggc_rl.rewards.
    path = Path(rewards.__file__)
    spec = importlib.util.spec_from_file_location(f"custom_module_{hash(str(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__name__ not in sys.modules
    assert module.compute_score("openai/gsm8k", "#### 18", "18")["score"] == 1.0
    assert module.compute_score("knights_knaves", KK_RIGHT, KK_TRUTH)["score"] == 3.0


def test_verl_loads_and_calls_it_from_the_config() -> None:
    reward = pytest.importorskip("verl.trainer.ppo.reward", reason="verl is not installed")
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": rewards.__file__,
                    "name": "compute_score",
                    "reward_kwargs": {"method": "flexible"},
                }
            }
        }
    )
    fn = reward.get_custom_reward_fn(config)
    extra_info = {"num_turns": None, "rollout_reward_scores": {}}  # what verl's reward loop adds
    result = fn(
        data_source="openai/gsm8k", solution_str="so it is 18", ground_truth="18", extra_info=extra_info
    )
    assert result["score"] == 1.0  # flexible came from reward_kwargs: strict would find no "####"
    result = fn(
        data_source="knights_knaves", solution_str=KK_RIGHT, ground_truth=KK_TRUTH, extra_info=extra_info
    )
    assert result["score"] == 3.0
