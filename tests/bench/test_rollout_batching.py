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


def test_agreement_counts_what_differs_between_together_and_alone(monkeypatch):
    """The counting, on a decoder that parts from batch-of-one decoding in one response at its 4th token."""
    import verl_cpu.decoding as decoding

    real = decoding.decode
    third: list[int] = []

    def parting(model, requests, eos_ids, pad_id):
        # The batched call returns batch-of-one results (so the rest agree exactly, whatever the last bits),
        # except that response 2 differs from its 4th token on and response 0's log-probs move by 1e-3.
        out = [real(model, [r], eos_ids, pad_id)[0] for r in requests]
        if len(requests) > 1:
            bad = out[2].token_ids
            third.append(len(bad))
            out[2] = decoding.Decoded(bad[:3] + [(t + 1) % 50 for t in bad[3:]], out[2].log_probs)
            out[0] = decoding.Decoded(out[0].token_ids, [x + 1e-3 for x in out[0].log_probs])
        return out

    monkeypatch.setattr(decoding, "decode", parting)
    settings = DemoSettings(prompts_per_step=3, samples_per_prompt=2, response_length=12)
    got = agreement(proxy_policy(TEST_PROXY, log=lambda *_: None), settings)
    assert got["responses"] == 6 and got["identical_responses"] == 5
    assert third[0] > 3  # the proxy answers in more than 3 tokens: the change is real
    assert got["tokens_before_first_difference"] == got["tokens"] - third[0] + 3
    assert got["max_abs_logprob_diff_identical"] == pytest.approx(1e-3, rel=1e-3)
