"""One run per directory: an advisory lock in the run's checkpoint directory, held for the whole run.

Two runs started into one ``trainer.default_local_dir`` would interleave checkpoints, the tracker and the
metrics. The lock is ``fcntl.flock`` on a file there, so the kernel releases it when the holding process
exits, however it exits: a lock whose holder is gone is free again (the file stays, with the last holder's
details). The file names the holder (host, pid, start time) for the refusal of a second run. ``flock`` is
per host on some network file systems: runs on two hosts sharing a directory are not kept apart there.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".aggc_run.lock"


class RunDirLocked(RuntimeError):
    """Another live process holds the run directory."""


@dataclass
class RunLock:
    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def holder_of(path: Path) -> str:
    """The holder's details as written in the lock file, for a message."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "a process whose details could not be read"
    return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}"


def acquire(directory: str | Path, what: str = "the run") -> RunLock:
    """Take the directory's lock or raise :class:`RunDirLocked` naming the holder; the lock is not inherited."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirLocked(
            f"another run is using {directory} (lock {path} held by {holder_of(path)}), so {what} would mix its "
            "checkpoints and metrics with it; wait for it to end, or give this run another trainer.default_local_dir"
        ) from None
    info = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
    os.fsync(fd)
    return RunLock(path, fd)


_HELD: list[RunLock] = []


def hold(directory: str | Path, what: str = "the run") -> RunLock:
    """:func:`acquire` and keep the lock until this process exits."""
    lock = acquire(directory, what)
    _HELD.append(lock)
    return lock
