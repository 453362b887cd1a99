"""The hf_cpu rollout: sampling controls, log-probs, weight updates, and registration with verl."""

from __future__ import annotations

import asyncio

import pytest
import torch

from aggc_rl.tiny import TinySpec, build
from verl_cpu.decoding import filter_logits
from verl_cpu.rollout import (
    ROLLOUT_NAME,
    HFGenerationServer,
    HFRolloutReplica,
    HFServerAdapter,
    register_cpu_rollout,
)

PROMPT = list(range(40, 72))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build(tmp_path_factory.mktemp("tiny"), TinySpec(hidden_size=64)))


@pytest.fixture
def server(model_dir):
    return HFGenerationServer(model_dir, prompt_length=64, response_length=16, max_model_len=None)


def server_dir(server) -> str:
    return server.model.config._name_or_path


def generate(server, params, request_id="r0", prompt=PROMPT):
    return asyncio.run(
        server.generate(prompt_ids=prompt, sampling_params=dict(params), request_id=request_id)
    )


def test_filter_logits_keeps_top_k_and_the_nucleus():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2, top_p=1.0)).tolist() == [
        [True, True, False, False, False]
    ]
    probs = torch.softmax(logits, -1)[0]
    nucleus = torch.isfinite(filter_logits(logits, top_k=-1, top_p=float(probs[0] + 0.01)))
    assert nucleus.tolist() == [[True, True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_k=-1, top_p=1.0)).all()


def test_greedy_is_deterministic_and_matches_the_model(server):
    a = generate(server, {"temperature": 0, "logprobs": True})
    b = generate(server, {"temperature": 0, "logprobs": True}, request_id="other")
    assert a.token_ids == b.token_ids and len(a.token_ids) == 16
    # The first token is the argmax of the model's next-token distribution.
    with torch.no_grad():
        logits = server.model(input_ids=torch.tensor([PROMPT])).logits[0, -1]
    assert a.token_ids[0] == int(logits.argmax())
    assert a.log_probs[0] == pytest.approx(float(torch.log_softmax(logits, -1)[a.token_ids[0]]), abs=1e-5)
    assert a.extra_fields["global_steps"] == 0


def test_sampling_honours_seed_temperature_and_budget(server):
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
    a, b = generate(server, {**params, "seed": 1}), generate(server, {**params, "seed": 1})
    assert a.token_ids == b.token_ids
    outs = [tuple(generate(server, params, request_id=f"s{i}").token_ids) for i in range(4)]
    assert len(set(outs)) > 1  # n samples of one prompt differ
    # ... and are reproducible: a fresh server (same weights) draws the same sequence of samples.
    fresh = HFGenerationServer(server_dir(server), prompt_length=64, response_length=16, max_model_len=None)
    assert [tuple(generate(fresh, params, request_id=f"x{i}").token_ids) for i in range(4)] == outs
    assert len(generate(server, {**params, "max_tokens": 5}).token_ids) == 5
    hot = generate(server, {"temperature": 2.0, "logprobs": True, "seed": 3})
    assert len(hot.log_probs) == len(hot.token_ids)
    assert generate(server, {"temperature": 1.0}).log_probs is None  # only when asked for


def test_top_k_one_is_greedy(server):
    greedy = generate(server, {"temperature": 0})
    assert generate(server, {"temperature": 1.0, "top_k": 1, "seed": 5}).token_ids == greedy.token_ids


def test_prompt_without_room_is_refused(server):
    with pytest.raises(ValueError, match="leaves no room"):
        generate(server, {"temperature": 0}, prompt=list(range(80)))


def test_weight_update_changes_generation(server):
    before = generate(server, {"temperature": 0}).token_ids
    state = {name: p.detach().clone() for name, p in server.model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    state["lm_head.weight"] = torch.randn(state["lm_head.weight"].shape, generator=gen)
    version = asyncio.run(server.update_weights(state, global_steps=7))
    after = generate(server, {"temperature": 0})
    assert version == 1 and after.extra_fields["global_steps"] == 7
    assert after.token_ids != before
    assert torch.equal(server.model.lm_head.weight, state["lm_head.weight"])
    with pytest.raises(KeyError, match="not in the rollout model"):
        asyncio.run(server.update_weights({**state, "bogus.weight": torch.zeros(1)}))
    del state["model.norm.weight"]
    with pytest.raises(KeyError, match="missing"):
        asyncio.run(server.update_weights(state))


def test_registered_with_verls_rollout_registries():
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    register_cpu_rollout()
    register_cpu_rollout()  # idempotent
    assert get_rollout_replica_class(ROLLOUT_NAME) is HFRolloutReplica
    assert get_rollout_class(ROLLOUT_NAME, "async") is HFServerAdapter


# -- batching: a step's concurrent requests decoded together ---------------------------------------------------

BATCH_PROMPTS = [list(range(40, 40 + n)) for n in (6, 19, 11, 30)]


def run_concurrently(server, calls):
    """Send every (prompt, params) at once, as verl's agent loop does; results (or errors) in call order."""

    async def go():
        tasks = [
            server.generate(prompt_ids=p, sampling_params=dict(s), request_id=f"c{i}")
            for i, (p, s) in enumerate(calls)
        ]
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(go())


def batch_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Record every group of requests joining the batch: (how many joined, rows in the batch after)."""
    import verl_cpu.rollout as rollout

    sizes: list[tuple[int, int]] = []
    real = rollout.DecodeBatch.add

    def recording(self, requests):
        real(self, requests)
        sizes.append((len(requests), len(self)))

    monkeypatch.setattr(rollout.DecodeBatch, "add", recording)
    return sizes


def test_concurrent_requests_form_one_batch_up_to_max_num_seqs(model_dir, monkeypatch):
    sizes = batch_sizes(monkeypatch)
    calls = [(p, {"temperature": 1.0}) for p in BATCH_PROMPTS for _ in range(3)]
    server = HFGenerationServer(model_dir, prompt_length=64, response_length=8, max_model_len=None)
    assert all(not isinstance(r, Exception) for r in run_concurrently(server, calls))
    assert sizes[0] == (12, 12)  # every request arrived before the batch started: one prefill
    small = HFGenerationServer(
        model_dir, prompt_length=64, response_length=8, max_model_len=None, max_num_seqs=5
    )
    sizes.clear()
    assert all(not isinstance(r, Exception) for r in run_concurrently(small, calls))
    assert sizes[0] == (5, 5) and sum(n for n, _ in sizes if n) == 12  # the rest join as rows end
    assert max(rows for _, rows in sizes) <= 5
    with pytest.raises(ValueError, match="max_num_seqs=0 must be >= 1"):
        HFGenerationServer(model_dir, prompt_length=64, response_length=8, max_model_len=None, max_num_seqs=0)


def slow_steps(monkeypatch) -> None:
    """10 ms a token: a batch is still running when the test's next call arrives."""
    import time

    import verl_cpu.rollout as rollout

    real_step = rollout.DecodeBatch.step

    def slow_step(self):
        time.sleep(0.01)
        return real_step(self)

    monkeypatch.setattr(rollout.DecodeBatch, "step", slow_step)


#: Where two greedy decodings of one prompt may part: a near-tie of the top two logits (batching changes the
#: logits' last bits, so the argmax there can flip).
NEAR_TIE = 1e-4


def assert_greedy_as_alone(server, prompt, got: list[int]) -> None:
    """``got`` is the prompt's batch-of-one greedy decoding, or parts from it only at a near-tie."""
    alone = generate(server, {"temperature": 0}, prompt=prompt).token_ids
    if got == alone:
        return
    t = next(i for i, (x, y) in enumerate(zip(got, alone, strict=False)) if x != y)
    with torch.no_grad():
        logits = server.model(input_ids=torch.tensor([prompt + alone[:t]])).logits[0, -1]
    top2 = torch.topk(logits, 2).values
    assert float(top2[0] - top2[1]) < NEAR_TIE, (prompt, t, got, alone)


def test_a_request_arriving_while_a_batch_runs_joins_it(model_dir, monkeypatch):
    sizes = batch_sizes(monkeypatch)
    slow_steps(monkeypatch)
    server = HFGenerationServer(model_dir, prompt_length=64, response_length=12, max_model_len=None)
    greedy = {"temperature": 0}

    async def staggered():
        first = asyncio.create_task(
            server.generate(prompt_ids=BATCH_PROMPTS[0], sampling_params=greedy, request_id="a")
        )
        while not sizes:  # until the batch runs
            await asyncio.sleep(0.001)
        second = await server.generate(prompt_ids=BATCH_PROMPTS[1], sampling_params=greedy, request_id="b")
        return await first, second

    first, second = asyncio.run(staggered())
    assert [n for n, _ in sizes[:2]] == [1, 1] and sizes[1][1] == 2  # the second joined the running first
    assert_greedy_as_alone(server, BATCH_PROMPTS[0], first.token_ids)
    assert_greedy_as_alone(server, BATCH_PROMPTS[1], second.token_ids)


def test_same_seeds_same_responses_whatever_the_arrival_order(model_dir):
    """Two fresh servers (same weights), the same requests sent in opposite orders: each prompt gets the same
    responses. Seeds come from (prompt, weights, k-th draw), and rows are decoded in a canonical order."""
    params = {"temperature": 1.0, "top_p": 0.95, "logprobs": True}
    calls = [(p, params) for p in BATCH_PROMPTS for _ in range(3)]

    def by_prompt(calls, outs):
        got: dict[tuple, list] = {}
        for (p, _), out in zip(calls, outs, strict=True):
            got.setdefault(tuple(p), []).append((tuple(out.token_ids), tuple(out.log_probs)))
        return {k: sorted(v) for k, v in got.items()}

    a = HFGenerationServer(model_dir, prompt_length=64, response_length=10, max_model_len=None)
    b = HFGenerationServer(model_dir, prompt_length=64, response_length=10, max_model_len=None)
    forward = by_prompt(calls, run_concurrently(a, calls))
    backward = by_prompt(calls[::-1], run_concurrently(b, calls[::-1]))
    assert forward == backward
    assert all(len(set(responses)) > 1 for responses in forward.values())  # the n samples of a prompt differ


def test_a_refused_request_fails_alone(model_dir):
    server = HFGenerationServer(model_dir, prompt_length=64, response_length=8, max_model_len=None)
    calls = [
        (BATCH_PROMPTS[0], {"temperature": 0}),
        (list(range(80)), {"temperature": 0}),
        (BATCH_PROMPTS[1], {"temperature": 0}),
    ]
    first, refused, last = run_concurrently(server, calls)
    assert isinstance(refused, ValueError) and "leaves no room" in str(refused)
    # The other two were decoded as if the refused one had never been sent (the same computation, bit for bit).
    valid = [calls[0], calls[2]]
    twin = HFGenerationServer(model_dir, prompt_length=64, response_length=8, max_model_len=None)
    assert [first.token_ids, last.token_ids] == [o.token_ids for o in run_concurrently(twin, valid)]
    assert len(last.token_ids) == 8


def test_a_weight_update_waits_for_the_running_batch_and_nothing_joins_it_meanwhile(model_dir, monkeypatch):
    """An update sent while a batch runs waits for it; a request sent after the update does not join the old
    batch but runs on the new weights. Every response comes whole from one set of weights, the one its
    ``global_steps`` names."""
    greedy = {"temperature": 0}
    old_server = HFGenerationServer(model_dir, prompt_length=64, response_length=12, max_model_len=None)
    state = {name: p.detach().clone() for name, p in old_server.model.named_parameters()}
    state["lm_head.weight"] = torch.randn(
        state["lm_head.weight"].shape, generator=torch.Generator().manual_seed(1)
    )
    # References, computed the same way (same batch composition): the first two together on the old weights,
    # the late one alone on the new.
    old = [o.token_ids for o in run_concurrently(old_server, [(p, greedy) for p in BATCH_PROMPTS[:2]])]
    new_server = HFGenerationServer(model_dir, prompt_length=64, response_length=12, max_model_len=None)
    asyncio.run(new_server.update_weights(state, global_steps=7))
    new = generate(new_server, greedy, prompt=BATCH_PROMPTS[2]).token_ids

    sizes = batch_sizes(monkeypatch)
    slow_steps(monkeypatch)
    server = HFGenerationServer(model_dir, prompt_length=64, response_length=12, max_model_len=None)

    async def scenario():
        first = [
            asyncio.create_task(server.generate(prompt_ids=p, sampling_params=greedy, request_id=str(i)))
            for i, p in enumerate(BATCH_PROMPTS[:2])
        ]
        while not sizes:  # the batch runs
            await asyncio.sleep(0.001)
        update = asyncio.create_task(server.update_weights(state, global_steps=7))
        await asyncio.sleep(0.005)  # the update now waits for the batch
        assert not update.done() and server._updates_waiting == 1
        late = asyncio.create_task(
            server.generate(prompt_ids=BATCH_PROMPTS[2], sampling_params=greedy, request_id="late")
        )
        return await asyncio.gather(*first), await update, await late

    outs, version, late = asyncio.run(scenario())
    assert version == 1 and server._updates_waiting == 0
    assert [o.extra_fields["global_steps"] for o in outs] == [0, 0] and [o.token_ids for o in outs] == old
    assert late.extra_fields["global_steps"] == 7 and late.token_ids == new
    assert sizes[:2] == [(2, 2), (1, 1)]  # the late request started a batch of its own, after the update
    asyncio.run(server.wait_for_requests_to_drain())


def test_a_forward_that_fails_fails_every_request_of_the_batch_and_leaves_none_waiting(
    model_dir, monkeypatch
):
    """Even a request whose last token was sampled in the step whose forward failed gets an answer (the error):
    here the 1-token request ends in step 1 (answered, the worker thread returns), the 2-token one in step 2,
    whose forward fails, in the worker's next call."""
    server = HFGenerationServer(model_dir, prompt_length=64, response_length=10, max_model_len=None)
    real_forward = server.model.forward
    calls = []

    def failing_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # prefill, step 1's forward, then step 2's: the 2-token request ends in step 2
            raise RuntimeError("boom: the model's forward failed")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(server.model, "forward", failing_forward)
    calls_ = [
        (BATCH_PROMPTS[0], {"temperature": 0, "max_tokens": 2}),
        (BATCH_PROMPTS[1], {"temperature": 0}),
        (BATCH_PROMPTS[2], {"temperature": 0, "max_tokens": 1}),
    ]

    async def go():
        tasks = [
            server.generate(prompt_ids=p, sampling_params=s, request_id=str(i))
            for i, (p, s) in enumerate(calls_)
        ]
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)

    two, ten, one = asyncio.run(go())
    assert len(one.token_ids) == 1  # answered before the failure
    assert all(isinstance(o, RuntimeError) and "boom" in str(o) for o in (two, ten)), (two, ten)
    monkeypatch.setattr(server.model, "forward", real_forward)
    assert (
        len(generate(server, {"temperature": 0}, prompt=BATCH_PROMPTS[1]).token_ids) == 10
    )  # it serves again
