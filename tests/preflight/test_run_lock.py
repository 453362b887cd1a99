"""One run per directory: the lock between two real processes, and a lock whose holder is gone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from aggc_rl.preflight.run_lock import LOCK_NAME, RunDirLocked, acquire

HOLDER = """
import sys, time
from aggc_rl.preflight.run_lock import hold
hold(sys.argv[1], "the first run")
print("held", flush=True)
time.sleep(120)
"""


def start_holder(directory) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_holder_until_the_holder_is_gone(tmp_path):
    run_dir = tmp_path / "ckpt"
    holder = start_holder(run_dir)
    try:
        with pytest.raises(RunDirLocked) as err:
            acquire(run_dir, "this run")
        message = str(err.value)
        assert f"pid {holder.pid}" in message and f"host {socket.gethostname()}" in message
        assert "started 20" in message and str(run_dir) in message
    finally:
        holder.send_signal(signal.SIGKILL)  # gone without any clean-up: the kernel drops the lock
        holder.wait()
    lock = acquire(run_dir, "this run")  # the stale lock file does not block
    try:
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    acquire(run_dir).release()  # released: taken again at once
