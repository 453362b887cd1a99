"""Batched decoding (verl_cpu.decoding) against batch-of-one decoding and against a teacher-forced forward."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from aggc_rl.tiny import TinySpec, build
from verl_cpu.decoding import DecodeBatch, DecodeRequest, decode, left_pad

#: Prompts of different lengths (5 to 40 tokens), so the batch is padded on the left.
PROMPTS = [list(range(40, 40 + n)) for n in (5, 40, 17, 9, 31, 12)]
#: A near-tie between the top two logits: batching may flip the argmax there, and only there.
NEAR_TIE = 1e-4


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = build(tmp_path_factory.mktemp("tiny_decode"), TinySpec(hidden_size=64))
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def requests(**settings) -> list[DecodeRequest]:
    budgets = (12, 7, 12, 3, 12, 9)  # rows leave the batch at their own budget
    return [
        DecodeRequest(tuple(p), max_new=b, seed=100 + i, **settings)
        for i, (p, b) in enumerate(zip(PROMPTS, budgets, strict=True))
    ]


@torch.no_grad()
def next_logits(model, prompt, tokens) -> torch.Tensor:
    """Teacher-forced logits after ``prompt + tokens``: what the actor recomputes."""
    return model(input_ids=torch.tensor([list(prompt) + list(tokens)])).logits[0, -1]


def test_left_pad_counts_positions_from_each_prompts_first_token():
    ids, mask, pos = left_pad([[7, 8, 9], [5]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_batched_greedy_tokens_are_batch_of_one_tokens(model):
    reqs = requests(temperature=0.0, logprobs=True)
    # An end-of-sequence id the model actually emits, so some rows also leave the batch at EOS.
    eos = {decode(model, reqs[:1], set(), 0)[0].token_ids[2]}
    alone = [decode(model, [r], eos, pad_id=0)[0] for r in reqs]
    together = decode(model, reqs, eos, pad_id=0)
    assert any(len(a.token_ids) < r.max_new for a, r in zip(alone, reqs, strict=True))  # EOS ended one
    for r, a, b in zip(reqs, alone, together, strict=True):
        if a.token_ids != b.token_ids:  # allowed only where the top two logits are a near-tie
            t = next(i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x != y)
            top2 = torch.topk(next_logits(model, r.prompt_ids, a.token_ids[:t]), 2).values
            assert float(top2[0] - top2[1]) < NEAR_TIE, (r.prompt_ids, t)
            continue
        assert b.log_probs == pytest.approx(a.log_probs, abs=1e-5)
        assert len(b.token_ids) <= r.max_new


def test_the_same_seeds_sample_the_same_tokens_and_other_seeds_other_tokens(model):
    reqs = requests(temperature=1.0, top_k=20, top_p=0.9, logprobs=True)
    first, second = decode(model, reqs, set(), 0), decode(model, reqs, set(), 0)
    assert [d.token_ids for d in first] == [d.token_ids for d in second]  # deterministic
    reseeded = [DecodeRequest(r.prompt_ids, r.max_new, 1.0, 20, 0.9, True, seed=r.seed + 1) for r in reqs]
    assert [d.token_ids for d in decode(model, reseeded, set(), 0)] != [d.token_ids for d in first]


def test_per_request_settings_are_honoured_in_one_batch(model):
    prompt = tuple(PROMPTS[1])
    greedy = DecodeRequest(prompt, 8, temperature=0.0)
    top1 = DecodeRequest(prompt, 8, temperature=1.0, top_k=1, seed=3)  # top-k 1 is greedy
    hot = DecodeRequest(prompt, 8, temperature=5.0, seed=4, logprobs=True)
    short = DecodeRequest(prompt, 2, temperature=1.0, seed=5)
    out = decode(model, [greedy, top1, hot, short], set(), 0)
    assert out[0].token_ids == out[1].token_ids and len(out[0].token_ids) == 8
    assert out[0].log_probs is None and out[3].log_probs is None
    assert len(out[2].log_probs) == 8 and len(out[3].token_ids) == 2


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_returned_log_probs_are_the_teacher_forced_ones(model, temperature):
    """What verl compares as training/rollout_probs_diff: the rollout's log-prob of each sampled token against
    the actor's, recomputed on the whole sequence in one forward (no cache, no padding)."""
    reqs = requests(temperature=temperature, logprobs=True)
    for r, d in zip(reqs, decode(model, reqs, set(), 0), strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(r.prompt_ids) + d.token_ids])).logits[0]
        n = len(r.prompt_ids)
        expected = torch.log_softmax(logits[n - 1 : -1] / temperature, -1)
        expected = expected.gather(-1, torch.tensor(d.token_ids)[:, None]).squeeze(-1)
        assert d.log_probs == pytest.approx(expected.tolist(), abs=1e-4)


def test_a_request_without_prompt_or_budget_is_refused():
    with pytest.raises(ValueError, match="at least one prompt token"):
        DecodeRequest((), 4)
    with pytest.raises(ValueError, match="max_new=0"):
        DecodeRequest((1, 2), 0)


def test_requests_joining_a_running_batch_decode_as_they_would_alone(model):
    """Continuous batching: rows join between tokens (their cache merged, padded on the left) and leave when
    they end; each row's greedy tokens are its batch-of-one tokens, and a finished row is handed back at once."""
    reqs = requests(temperature=0.0, logprobs=True)
    alone = {i: decode(model, [r], set(), 0)[0] for i, r in enumerate(reqs)}
    batch = DecodeBatch(model, set(), pad_id=0)
    batch.add([(0, reqs[0]), (3, reqs[3])])  # prompts of 5 and 9 tokens
    done: dict[int, object] = {}
    for step in range(40):
        if step == 2:  # 40 and 17 tokens: longer than the running cache (11), which is padded on the left
            batch.add([(1, reqs[1]), (2, reqs[2])])
        if step == 5:  # 31 tokens: shorter than the running cache, padded on the left
            batch.add([(4, reqs[4])])
        if step == 6:
            batch.add([(5, reqs[5])])
        for key, out in batch.step():
            done[key] = (step, out)
        if not len(batch) and step > 6:
            break
    assert sorted(done) == list(range(6)) and len(batch) == 0
    assert done[3][0] == reqs[3].max_new - 1  # handed back on the step it ended, not at the batch's end
    for i, r in enumerate(reqs):
        a, b = alone[i], done[i][1]
        if a.token_ids != b.token_ids:  # allowed only where the top two logits are a near-tie
            t = next(k for k, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x != y)
            top2 = torch.topk(next_logits(model, r.prompt_ids, a.token_ids[:t]), 2).values
            assert float(top2[0] - top2[1]) < NEAR_TIE, (i, t)
            continue
        assert b.log_probs == pytest.approx(a.log_probs, abs=1e-5)
