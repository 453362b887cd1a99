"""The child side of :mod:`aggc_rl.rewards.math_verify_sandbox`: math-verify behind a JSON-lines pipe.

Run as ``python -m aggc_rl.rewards.math_verify_worker``. It reads ``{"gold": ..., "response": ...}`` lines on
stdin and answers ``{"pred": str | null, "correct": bool}`` lines on stdout. It lives in its own process
because sympy can spin for minutes inside C code on inputs like ``\\boxed{9^{9^{9^9}}}``, where no
in-process timeout (math-verify's own uses SIGALRM, main thread only) can stop it; the parent kills it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from typing import Any, BinaryIO

# math-verify's reply for an answer it cannot read; longer predictions are cut for logging.
_MAX_PRED_CHARS = 200


def judge(gold_text: str, response: str, parse: Any, verify: Any) -> tuple[str | None, bool]:
    """(what math-verify extracted from ``response`` or None, whether it equals ``gold_text``)."""
    pred = parse(response, parsing_timeout=None)
    if not pred:
        return None, False
    pred_text = pred[-1] if isinstance(pred[-1], str) else str(pred[0])
    gold = parse(gold_text, parsing_timeout=None) or parse(f"${gold_text}$", parsing_timeout=None)
    correct = bool(gold) and bool(verify(gold, pred, timeout_seconds=None))
    return pred_text[:_MAX_PRED_CHARS], correct


#: Judged once before the worker says it is ready: the first parse and verify import and compile most of
#: sympy and latex2sympy lazily (~0.1 s warm, seconds on a busy CPU), which must not count against the
#: first real call's deadline.
WARM_UP = (("72", "so the answer is \\boxed{72}"), ("0.5", "$\\frac{1}{2}$"), ("18", "#### 18.0"))


def warm_up(parse: Any, verify: Any) -> None:
    for gold, response in WARM_UP:
        with contextlib.suppress(Exception):  # a warm-up failure only costs the first call its speed
            judge(gold, response, parse, verify)


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer one request line per reply line until ``requests`` closes."""
    try:
        from math_verify import parse, verify
    except ImportError as err:
        replies.write(json.dumps({"error": f"cannot import math_verify: {err}"}).encode() + b"\n")
        replies.flush()
        return
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    warm_up(parse, verify)
    replies.write(b'{"ready": true}\n')
    replies.flush()
    for line in requests:
        try:
            request = json.loads(line)
            pred, correct = judge(str(request["gold"]), str(request["response"]), parse, verify)
        except Exception:  # a reply per request, whatever math-verify or sympy throws
            pred, correct = None, False
        replies.write(json.dumps({"pred": pred, "correct": correct}).encode() + b"\n")
        replies.flush()


def main() -> None:
    # Keep the protocol on the real stdout and send stray prints (sympy, math-verify) to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
