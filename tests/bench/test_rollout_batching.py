"""bench.rollout_batching's pieces: the trainer's medians skip the first step; batched vs alone is compared."""

from __future__ import annotations

import pytest

from aggc_rl.demo import DemoSettings
from aggc_rl.proxy.policy import TEST_PROXY, proxy_policy
from bench.rollout_batching import agreement, trainer_timings


def test_trainer_timings_are_medians_after_the_first_step():
    records = [{"step": s, "data": {"timing_s/gen": g, "timing_s/step": t}} for s, g, t in
               [(2, 1.0, 3.0), (1, 50.0, 90.0), (3, 2.0, 5.0), (4, 4.0, 6.0)]]  # fmt: skip
    records.append({"step": 0, "data": {"val-core/x/acc/mean@1": 0.5}})  # validation only: not a step
    assert trainer_timings(records) == {"gen_s": 2.0, "step_s": 5.0, "steps": 3}
    with pytest.raises(ValueError, match="fewer than two steps"):
        trainer_timings(records[1:2])


def test_agreement_compares_the_same_requests_decoded_together_and_alone():
    settings = DemoSettings(prompts_per_step=3, samples_per_prompt=2, response_length=12)
    got = agreement(proxy_policy(TEST_PROXY, log=lambda *_: None), settings)
    assert got["responses"] == 6 and 0 <= got["identical_responses"] <= 6
    assert 0 < got["tokens_before_first_difference"] <= got["tokens"] <= 6 * 12
    assert got["max_abs_logprob_diff_identical"] < 1e-4
