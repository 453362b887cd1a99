"""Turn whatever a reward manager hands us into text, without ever raising.

verl decodes responses to ``str``, but ground truths come from parquet (numpy scalars, bytes, None) and
callers in tests and notebooks pass anything. A scorer that raises stops a whole training step, so every
scorer funnels its inputs through :func:`as_text` first.
"""

from __future__ import annotations

from typing import Any


def as_text(value: Any) -> str:
    """``value`` as a ``str``: None -> "", bytes decoded leniently, anything else through ``str()``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not take the training step down
        return ""
    return text if isinstance(text, str) else ""
