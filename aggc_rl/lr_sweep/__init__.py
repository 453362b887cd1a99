"""The learning-rate sweep: arms x learning rates x seeds of proxy runs, and their sensitivity with paired intervals.

``python -m aggc_rl.lr_sweep`` (``make lr-sweep``; docs/proxy.md): :mod:`~aggc_rl.lr_sweep.plans` (arms, grids,
sizes), :mod:`~aggc_rl.lr_sweep.sensitivity` (the definitions and the report).
"""
