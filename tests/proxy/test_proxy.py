"""The proxy (issue 21): held-out puzzles never reach training, the warm start is cached by its inputs, and a
few GRPO steps through the real update path raise the reward of a fixed batch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggc_rl.data.knights_knaves import generate_puzzle
from aggc_rl.proxy.policy import (
    HELDOUT_DENOMINATOR,
    PROXY,
    TEST_PROXY,
    ProxySpec,
    heldout_puzzles,
    is_heldout,
    proxy_policy,
    train_puzzles,
)
from aggc_rl.proxy.sampler import stable_seed

REPO = Path(__file__).resolve().parents[2]


def test_heldout_puzzles_never_appear_in_warm_start_or_rl_streams():
    held = heldout_puzzles(1000)
    assert len({p.text for p in held}) == 1000 and all(is_heldout(p) for p in held)
    train = [p for step in range(150) for p in train_puzzles("warm", 0, step, 16)]
    train += [p for seed in range(3) for step in range(40) for p in train_puzzles("rl", seed, step, 16)]
    train += train_puzzles("replay", 0, 0, 64)
    assert not any(is_heldout(p) for p in train)
    assert not {p.text for p in held} & {p.text for p in train}
    # The raw generator does produce held-out puzzles (about 1 in 8): the streams skip them, by construction.
    raw = [generate_puzzle(2, seed=stable_seed("proxy-train", "warm", 0, s, 0) % (2**31)) for s in range(800)]
    share = sum(map(is_heldout, raw)) / len(raw)
    assert 0.5 / HELDOUT_DENOMINATOR < share < 2 / HELDOUT_DENOMINATOR


def test_streams_are_functions_of_their_inputs():
    assert [p.text for p in train_puzzles("rl", 1, 5, 8)] == [p.text for p in train_puzzles("rl", 1, 5, 8)]
    assert [p.text for p in train_puzzles("rl", 1, 5, 8)] != [p.text for p in train_puzzles("rl", 2, 5, 8)]
    assert [p.text for p in heldout_puzzles(50)] == [p.text for p in heldout_puzzles(200)[:50]]


def test_cache_key_names_every_input():
    assert PROXY.key() == ProxySpec().key()
    for field in dataclasses.fields(ProxySpec):
        value = getattr(PROXY, field.name)
        other = dataclasses.replace(PROXY, **{field.name: value + 1 if isinstance(value, int) else value * 2})
        assert other.key() != PROXY.key(), field.name


def test_the_warm_start_lr_is_constant_then_decays_linearly_to_zero():
    from aggc_rl.proxy.policy import lr_factor

    spec = ProxySpec(warm_start_steps=10, decay_steps=4)
    assert [lr_factor(spec, t) for t in range(10)] == [1.0] * 6 + [1.0, 0.75, 0.5, 0.25]
    assert [lr_factor(ProxySpec(warm_start_steps=3, decay_steps=0), t) for t in range(3)] == [1.0, 1.0, 1.0]


def test_same_inputs_same_files_and_built_once(tmp_path):
    spec = ProxySpec(hidden_size=32, intermediate_size=64, warm_start_steps=4, batch=2)
    a = proxy_policy(spec, root=tmp_path / "a", eval_count=8, log=lambda *_: None)
    b = proxy_policy(spec, root=tmp_path / "b", eval_count=8, log=lambda *_: None)
    assert a.name == b.name == spec.key()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    meta = json.loads((a / "meta.json").read_text())
    assert meta["spec"] == dataclasses.asdict(spec) and meta["heldout"]["n"] == 8
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    assert proxy_policy(spec, root=tmp_path / "a", log=lambda *_: None) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt


def test_snapshots_are_the_shorter_constant_lr_warm_starts(tmp_path):
    """Snapshots are taken up to where the decay starts, under the key of the constant-lr warm start of that
    length, and hold exactly its bytes; none is taken inside the decay."""
    spec = ProxySpec(hidden_size=32, intermediate_size=64, warm_start_steps=6, decay_steps=2, batch=2)
    proxy_policy(spec, root=tmp_path / "long", eval_count=0, snapshot_every=2, log=lambda *_: None)
    short = dataclasses.replace(spec, warm_start_steps=4, decay_steps=0)
    direct = proxy_policy(short, root=tmp_path / "short", eval_count=0, log=lambda *_: None)
    snap = tmp_path / "long" / short.key()
    assert (snap / "model.safetensors").read_bytes() == (direct / "model.safetensors").read_bytes()
    built = {p.name for p in (tmp_path / "long").iterdir()}
    want = {spec.key(), short.key(), dataclasses.replace(short, warm_start_steps=2).key()}
    assert built == want  # steps 2 and 4 (constant lr) and the whole; nothing at a decaying step


_REPLAY = """
import json, os, sys
import torch
torch.set_num_threads(1)
from pathlib import Path
from aggc_rl.proxy.policy import TEST_PROXY, proxy_policy
from aggc_rl.proxy.grpo import replay_fixed_batch
from aggc_rl.lr_sweep.plans import ARMS
model = proxy_policy(TEST_PROXY, root=Path(sys.argv[1]), eval_count=0, log=lambda *_: None)
out = {lr: replay_fixed_batch(model, ARMS["global"], float(lr), steps=3, prompts=4, samples=8) for lr in sys.argv[2:]}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_a_few_grpo_steps_raise_the_reward_of_a_fixed_batch(tmp_path):
    """3 GRPO steps (verl's advantage and PPO loss, the aggc_fsdp2 engine) on one sampled batch of the cheap
    test proxy: the policy's importance-weighted reward on that batch rises; with lr 0 it stays put."""
    env = dict(os.environ, VERL_PLATFORM="cpu", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _REPLAY, str(tmp_path), "1e-3", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    before, after = result["1e-3"]
    still_before, still_after = result["0"]
    assert before == pytest.approx(still_before)  # the same batch in both runs
    assert after > before + 0.05, (before, after)
    assert still_after == pytest.approx(still_before, abs=1e-6)
    assert TEST_PROXY.warm_start_steps < PROXY.warm_start_steps


def test_demo_parquet_is_compact_and_split(tmp_path):
    from aggc_rl.data.parquet_rows import read_rows
    from aggc_rl.demo import DemoSettings
    from aggc_rl.proxy.policy import write_parquet

    train, val = write_parquet(tmp_path, 40, 12)
    train_rows, val_rows = read_rows(train), read_rows(val)
    assert len(train_rows) == 40 and len(val_rows) == 12
    held = {p.text for p in heldout_puzzles(12)}
    for row in train_rows + val_rows:
        assert [m["role"] for m in row["prompt"]] == ["user"]  # the compact prompt: no system prompt
        assert "knights and knaves" not in row["prompt"][0]["content"]
        assert row["data_source"] == "knights_knaves" and "is a" in row["reward_model"]["ground_truth"]
    # the validation rows are the held-out puzzles; no training row is one
    assert {r["extra_info"]["seed"] for r in val_rows} == {p.seed for p in heldout_puzzles(12)}
    assert not any(
        generate_puzzle(2, seed=r["extra_info"]["seed"]).text in held
        or is_heldout(generate_puzzle(2, seed=r["extra_info"]["seed"]))
        for r in train_rows
    )
    settings = DemoSettings()
    assert settings.proxy == PROXY and settings.heldout >= 1000 and len(settings.stability_lrs) == 2
    assert DemoSettings.fast().proxy == TEST_PROXY
