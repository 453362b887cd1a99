"""``python -m aggc_rl.sft`` on CPU: one run per directory, and a finished run stays finished.

Two real SFT runs into one directory: the second exits 2 naming the first (its pid) while the first trains
on and finishes. Re-running the finished run -- with ``trainer.total_training_steps`` given (the preflight
stops it before anything starts) and without (verl computes the total; the entry point stops after loading
the checkpoint) -- exits 0 saying so, and leaves every checkpoint file as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aggc_rl.preflight.run_lock import LOCK_NAME
from aggc_rl.tiny import TinySpec, build

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROWS = 32
BATCH = 16  # 2 steps per epoch
LONG = 12  # steps of the first of two runs: it must still be running when the second starts


def overrides(model: Path, data: Path, ckpt: Path, *extra: str) -> list[str]:
    return [
        f"model.path={model}",
        f"data.train_files={data / 'train.parquet'}",
        f"data.train_batch_size={BATCH}",
        "data.micro_batch_size_per_gpu=4",
        "data.max_length=128",
        "data.use_dynamic_bsz=false",
        "data.num_workers=0",
        "model.use_remove_padding=false",
        "+model.override_config.attn_implementation=sdpa",
        "model.enable_gradient_checkpointing=false",
        "engine.use_torch_compile=false",
        "engine.model_dtype=fp32",
        "engine.clip=aggc",
        "trainer.device=cpu",
        "trainer.save_freq=1",
        "trainer.test_freq=-1",
        f"trainer.default_local_dir={ckpt}",
        "trainer.logger=[console]",
        *extra,
    ]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "aggc_rl.sft", *args]


def env() -> dict[str, str]:
    return {**os.environ, "VERL_PLATFORM": "cpu", "OMP_NUM_THREADS": "1"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args), cwd=REPO, env=env(), capture_output=True, text=True, timeout=600, check=False
    )


def fingerprints(ckpt: Path) -> dict[str, tuple[str, int]]:
    """Every file under the checkpoint directory (but the lock): content hash and modification time."""
    return {
        str(p.relative_to(ckpt)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(ckpt.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("sft_run_dir")
    model = build(root / "model", TinySpec(hidden_size=32))
    jsonl = root / "gsm8k.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"question": f"What is {i} plus {i}?", "answer": f"{2 * i}.\n#### {2 * i}"}) + "\n"
            for i in range(ROWS)
        )
    )
    data = root / "data"
    made = subprocess.run(
        [sys.executable, "-m", "aggc_rl.data.metamath", "--out", str(data), "--source", "gsm8k", "--jsonl", str(jsonl)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return root, model, data


def test_a_second_run_into_the_same_directory_exits_2_naming_the_first(setup):
    root, model, data = setup
    ckpt = root / "shared"
    first = subprocess.Popen(
        command(*overrides(model, data, ckpt, "trainer.total_epochs=6", f"trainer.total_training_steps={LONG}")),
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the first run takes the lock in its preflight
            lock = ckpt / LOCK_NAME
            if (
                lock.exists()
                and lock.read_text().strip()
                and json.loads(lock.read_text())["pid"] == first.pid
            ):
                break
            assert first.poll() is None, first.stdout.read()[-3000:]
            time.sleep(0.5)
        else:
            raise AssertionError("the first run never took the lock")
        started = time.perf_counter()
        second = run(
            *overrides(model, data, ckpt, "trainer.total_epochs=6", f"trainer.total_training_steps={LONG}")
        )
        elapsed = time.perf_counter() - started
        print(f"second run: exit {second.returncode} after {elapsed:.1f}s: {second.stderr.strip()}")
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"pid {first.pid}" in second.stderr and "another run is using" in second.stderr
        assert "Traceback" not in second.stderr and first.poll() is None  # the first one goes on
        output, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, output[-3000:]
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == str(LONG)


def test_rerunning_a_finished_run_exits_0_and_leaves_its_checkpoints_unchanged(setup):
    root, model, data = setup
    ckpt = root / "finished"
    # No total given: verl computes it from the epochs (2 batches of 16 rows) = 2 steps.
    done = run(*overrides(model, data, ckpt, "trainer.total_epochs=1"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    before = fingerprints(ckpt)
    assert any(name.startswith("global_step_2/clip_state_") for name in before)

    # The total given: the preflight stops the re-run before any process group or model exists.
    again = run(*overrides(model, data, ckpt, "trainer.total_epochs=1", "trainer.total_training_steps=2"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "the run is finished" in again.stderr and "trainer.total_training_steps=2" in again.stderr
    assert fingerprints(ckpt) == before

    # The total computed by verl: the entry point stops after loading the checkpoint (verl's loop would train
    # and save step 3).
    again = run(*overrides(model, data, ckpt, "trainer.total_epochs=1"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "the run is finished: the resumed checkpoint is at step 2 of 2" in again.stdout + again.stderr
    assert fingerprints(ckpt) == before
    assert not (ckpt / "global_step_3").exists()
