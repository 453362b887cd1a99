"""Run math-verify in a long-lived child process with a hard per-call deadline.

Why a process: sympy can spin for minutes inside C code on adversarial LaTeX (``\\boxed{9^{9^{9^9}}}``), and
math-verify's own timeout uses SIGALRM, which only works in the main thread -- verl calls reward functions
from a thread pool. A child we can kill is the only bound that always holds. One child serves the whole
process (calls are serialised by a lock); it is restarted lazily after a kill, and after a fork.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Bounding what we ship bounds the child's work (math-verify's regexes and sympy). A response up to
# MAX_RESPONSE_CHARS goes whole; a longer one goes as an excerpt (:func:`excerpt`) that keeps its last
# MAX_RESPONSE_CHARS characters and, around the last ANCHOR_HITS places of each final-answer marker, the
# text math-verify would extract from -- so a right answer followed by a long tail is still seen.
MAX_RESPONSE_CHARS = 2000
MAX_GOLD_CHARS = 1000
#: What math-verify prefers over the plain numbers at the end: ``\boxed{}``/``\fbox{}`` (its priority 50)
#: and "final answer is ..." phrases (higher priority); GSM8K's ``####`` for good measure.
ANCHORS = ("\\boxed", "\\fbox", "answer", "####")
ANCHOR_HITS = 2
BEFORE_ANCHOR = 200  # "The final answer is" and the like lead up to the answer
AFTER_ANCHOR = 1000  # a boxed expression or an answer sentence
GAP = "\n...\n"
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Verdict:
    """What the child said: the extracted prediction (None if nothing or no reply) and correctness."""

    pred: str | None
    correct: bool
    timed_out: bool = False


def excerpt(response: str) -> str:
    """``response`` when short; else its tail plus the windows around the last final-answer markers, in order.

    math-verify takes the highest-priority kind of match anywhere in the text (a final-answer phrase, then
    ``\\boxed``, then plain numbers), the rightmost of that kind; keeping the last windows of each marker
    and the tail keeps those matches, at most ``MAX_RESPONSE_CHARS + 8 * 1200`` characters in all.
    """
    if len(response) <= MAX_RESPONSE_CHARS:
        return response
    lowered = response.lower()
    spans = [(len(response) - MAX_RESPONSE_CHARS, len(response))]
    for anchor in ANCHORS:
        end = len(response)
        for _ in range(ANCHOR_HITS):
            at = lowered.rfind(anchor, 0, end)
            if at < 0:
                break
            spans.append((max(0, at - BEFORE_ANCHOR), min(len(response), at + AFTER_ANCHOR)))
            end = at
    merged: list[list[int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return GAP.join(response[start:stop] for start, stop in merged)


def require_math_verify() -> None:
    """Fail early and clearly when the optional dependency is absent."""
    if importlib.util.find_spec("math_verify") is None:
        raise ImportError(
            "GSM8K method='math_verify' needs the math-verify package (and latex2sympy2_extended): "
            "pip install math-verify"
        )


class MathVerifySandbox:
    """A killable math-verify child process speaking JSON lines (see ``math_verify_worker``)."""

    def __init__(self, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self._startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = -1
        self._pending = b""

    def check(self, gold: str, response: str, timeout_s: float) -> Verdict:
        """Judge ``response`` against ``gold``; a call that overruns ``timeout_s`` kills the child.

        The deadline covers the call alone: the child is started and warmed up (its first parse pays
        sympy's lazy imports) before the clock starts. A call past the deadline is retried once on a
        fresh, warm child; only a second overrun is a timeout (``Verdict.timed_out``).
        """
        verdict = self._check_once(gold, response, timeout_s)
        if verdict.timed_out:
            logger.warning("math-verify took over %.2fs; retrying once on a fresh, warm worker", timeout_s)
            verdict = self._check_once(gold, response, timeout_s)
            if verdict.timed_out:
                logger.warning(
                    "math-verify took over %.2fs twice: the sample is a counted timeout", timeout_s
                )
        return verdict

    def _check_once(self, gold: str, response: str, timeout_s: float) -> Verdict:
        request = json.dumps({"gold": gold[:MAX_GOLD_CHARS], "response": excerpt(response)})
        with self._lock:
            proc = self._ensure_started()
            try:
                assert proc.stdin is not None
                proc.stdin.write(request.encode() + b"\n")
                proc.stdin.flush()
            except OSError:
                self._kill()
                return Verdict(pred=None, correct=False)
            line = self._read_line(time.monotonic() + timeout_s)
            if line is None:
                self._kill()
                return Verdict(pred=None, correct=False, timed_out=True)
        try:
            reply = json.loads(line)
            return Verdict(pred=reply.get("pred"), correct=bool(reply.get("correct")))
        except (ValueError, AttributeError):
            return Verdict(pred=None, correct=False)

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._owner_pid != os.getpid():
            self._proc = None  # inherited through fork: the parent process owns that child
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._kill()
        require_math_verify()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "aggc_rl.rewards.math_verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._owner_pid = os.getpid()
        self._pending = b""
        line = self._read_line(time.monotonic() + self._startup_timeout_s)
        try:
            hello = json.loads(line) if line else {"error": "no reply before the startup timeout"}
        except ValueError:
            hello = {"error": f"unreadable reply {line[:200]!r}"}
        if not isinstance(hello, dict) or not hello.get("ready"):
            self._kill()
            detail = hello.get("error") if isinstance(hello, dict) else hello
            raise RuntimeError(f"the math-verify worker did not start: {detail}")
        return self._proc

    def _read_line(self, deadline: float) -> bytes | None:
        """One reply line, or None at the deadline or when the child is gone."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._pending = b""
        if proc is None or self._owner_pid != os.getpid():
            return
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_SANDBOX = MathVerifySandbox()
atexit.register(_SANDBOX.close)


def check(gold: str, response: str, timeout_s: float) -> Verdict:
    """Judge with the process-wide sandbox."""
    return _SANDBOX.check(gold, response, timeout_s)
