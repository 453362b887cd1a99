"""Shared pytest setup: makes tests/support importable (also in spawned worker processes)."""

from __future__ import annotations

import os

# Keep torch's intra-op threads from oversubscribing the small CI machine when tests spawn workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
