"""A generation backend for ``eval`` tests that records when it is built, used and closed, and in which process.

Importable by name, so a spawned child process (``eval.backends.isolated``) can load it. Each event is one
JSON line appended to the file named by ``RECORDING_BACKEND_EVENTS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from eval.backends import Completion

EVENTS_ENV = "RECORDING_BACKEND_EVENTS"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


class RecordingBackend:
    """Answers every prompt with ``#### 18``; writes ``build`` / ``generate`` / ``close`` events."""

    def __init__(self, model: Path) -> None:
        self.model = str(model)
        self.events = Path(os.environ[EVENTS_ENV])
        # Whether any process that built an earlier model still runs while this one is built.
        earlier = {e["pid"] for e in read_events(self.events) if e["event"] == "build"} - {os.getpid()}
        self._record("build", earlier_alive=sorted(pid for pid in earlier if _alive(pid)))

    def _record(self, event: str, **extra: object) -> None:
        with self.events.open("a") as handle:
            handle.write(
                json.dumps({"event": event, "model": self.model, "pid": os.getpid(), **extra}) + "\n"
            )

    def generate(self, prompts: Sequence[Sequence[int]], sampling: object) -> list[list[Completion]]:
        self._record("generate")
        return [[Completion("#### 18", 3, truncated=False)] for _ in prompts]

    def close(self) -> None:
        self._record("close")


def load(name: str, model: Path, tokenizer: object, options: object, seed: int) -> RecordingBackend:
    return RecordingBackend(model)
