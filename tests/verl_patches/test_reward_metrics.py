"""reward/unscored and reward/timeouts reach every training step's metrics (verl 0.9.1 logs them only for validation).

The counting and the wrapper on fake batches; the patch on verl's real trainer_base, in this process and in a
fresh one (where ``import verl`` must leave trainer_base unimported and patch it on its first import).
"""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
from verl.utils import tensordict_utils as tu

from aggc_rl import metrics as names
from aggc_rl import rewards
from verl_patches import reward_metrics
from verl_patches.reward_metrics import MARK, TRAINER_MODULE, step_reward_events, wrap_compute_metrics

KK_TRUTH = "(1) Alice is a knight\n(2) Bob is a knave"
KK_RIGHT = "<think>x</think><answer>(1) Alice is a knight\n(2) Bob is a knave</answer>"


def scored() -> dict:
    out = rewards.compute_score("knights_knaves", KK_RIGHT, KK_TRUTH)
    assert out["unscored"] == 0.0
    return out


def unscored() -> dict:
    out = rewards.compute_score("no_such_source", "answer", "1")
    assert out["unscored"] == 1.0 and out["timeouts"] == 0.0
    return out


def timed_out() -> dict:
    out = dict(unscored())
    out["timeouts"] = 1.0  # what the router returns for a math_verify call past its deadline twice
    return out


class FakeQueue:
    """TransferQueue's kv_batch_get for one partition: extra_fields as verl stores them (a non-tensor list)."""

    def __init__(self, extra_fields: dict[str, dict]) -> None:
        self.extra_fields = extra_fields
        self.calls: list[dict] = []

    def kv_batch_get(self, keys, partition_id, select_fields):
        self.calls.append({"keys": keys, "partition_id": partition_id, "select_fields": select_fields})
        rows = [self.extra_fields[k] for k in keys]
        return tu.get_tensordict({"extra_fields": rows, "n": list(range(len(rows)))})


def batch_of(tags: list[dict]) -> SimpleNamespace:  # the fields of transfer_queue.KVBatchMeta that are read
    return SimpleNamespace(keys=[f"uid{i}_0_0" for i in range(len(tags))], partition_id="train", tags=tags)


def queue_for(batch, infos) -> FakeQueue:
    return FakeQueue(
        {k: {"turns": 1, "reward_extra_info": info} for k, info in zip(batch.keys, infos, strict=True)}
    )


def test_counts_flags_of_the_steps_samples_and_skips_padding():
    batch = batch_of([{}, {"is_padding": False}, {}, {}, {"is_padding": True}, {"is_padding": True}])
    queue = queue_for(batch, [scored(), unscored(), timed_out(), scored(), unscored(), timed_out()])
    counts = step_reward_events(batch, queue.kv_batch_get)
    # rows 4 and 5 are verl's padding copies: not samples of this step
    assert counts == {names.REWARD_UNSCORED: 2.0, names.REWARD_TIMEOUTS: 1.0}
    assert queue.calls == [{"keys": batch.keys, "partition_id": "train", "select_fields": ["extra_fields"]}]


def test_zero_when_every_sample_was_scored():
    batch = batch_of([{}, {}, {}])
    counts = step_reward_events(batch, queue_for(batch, [scored()] * 3).kv_batch_get)
    assert counts == {names.REWARD_UNSCORED: 0.0, names.REWARD_TIMEOUTS: 0.0}


def test_nan_when_no_sample_carries_the_routers_flags():
    batch = batch_of([{}, {}])
    queue = FakeQueue({batch.keys[0]: {"reward_extra_info": {"acc": 1.0}}, batch.keys[1]: {}})
    counts = step_reward_events(batch, queue.kv_batch_get)
    assert set(counts) == set(names.REWARD_EVENTS) and all(math.isnan(v) for v in counts.values())


def test_a_short_answer_from_the_queue_is_an_error():
    batch = batch_of([{}, {}])
    queue = queue_for(batch, [unscored(), unscored()])
    short = lambda **kw: tu.get_tensordict({"extra_fields": queue.kv_batch_get(**kw)["extra_fields"][:1]})  # noqa: E731
    with pytest.raises(ValueError, match="1 extra_fields for 2 keys"):
        step_reward_events(batch, short)


def test_wrapper_runs_verls_metrics_then_adds_the_counts_once():
    batch = batch_of([{}, {}, {}, {}])
    queue = queue_for(batch, [unscored(), scored(), timed_out(), scored()])
    seen = []

    def original(self, batch, metrics, timing_raw, global_steps, epoch):
        seen.append((self, batch, timing_raw, global_steps, epoch))
        metrics["critic/score/mean"] = 0.5
        return "verl's result"

    wrapped = wrap_compute_metrics(original, lambda: queue.kv_batch_get)
    assert wrap_compute_metrics(wrapped, lambda: queue.kv_batch_get) is wrapped  # idempotent
    assert getattr(wrapped, MARK) and wrapped.__wrapped__ is original
    metrics = {"actor/grad_norm": 1.0}
    me = object()
    assert wrapped(me, batch, metrics, {"step": 1.0}, global_steps=3, epoch=0) == "verl's result"
    assert seen == [(me, batch, {"step": 1.0}, 3, 0)]
    assert metrics == {
        "actor/grad_norm": 1.0,
        "critic/score/mean": 0.5,
        names.REWARD_UNSCORED: 2.0,
        names.REWARD_TIMEOUTS: 1.0,
    }


def test_verls_trainer_base_is_patched_once_with_the_signature_we_wrote_for():
    from verl.trainer.ppo import v1  # registers every v1 trainer
    from verl.trainer.ppo.v1 import trainer_base

    method = trainer_base.PPOTrainer._compute_metrics
    assert getattr(method, MARK, False), "verl_patches.plugin did not patch trainer_base"
    reward_metrics.install()  # again, as aggc_rl.train does after import verl: still one wrapper
    reward_metrics.patch_trainer_base(trainer_base)
    assert trainer_base.PPOTrainer._compute_metrics is method
    original = method.__wrapped__
    assert not getattr(original, MARK, False) and original.__module__ == TRAINER_MODULE
    assert list(inspect.signature(original).parameters) == [
        "self",
        "batch",
        "metrics",
        "timing_raw",
        "global_steps",
        "epoch",
    ]
    assert callable(trainer_base.tq.kv_batch_get)
    assert trainer_base.TRAINER_REGISTRY and v1
    for cls in trainer_base.TRAINER_REGISTRY.values():  # sync, async, ...: none overrides it
        assert cls._compute_metrics is method, cls


FRESH = f"""
import json, sys
import verl
lazy = {TRAINER_MODULE!r} not in sys.modules
from verl.trainer.ppo.v1 import trainer_base
print(json.dumps({{"lazy": lazy, "patched": bool(getattr(trainer_base.PPOTrainer._compute_metrics, {MARK!r}, False))}}))
"""


def test_import_verl_patches_trainer_base_on_its_first_import_in_a_fresh_process():
    done = subprocess.run(
        [sys.executable, "-c", FRESH], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"lazy": True, "patched": True}
