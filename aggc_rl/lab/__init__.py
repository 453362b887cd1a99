"""The fault lab: known faults on a warm Adam, each faulted run measured against its clean twin.

``python -m aggc_rl.lab`` (``make lab``; docs/lab.md): :mod:`~aggc_rl.lab.replay` (the warm state and the
twins' branches), :mod:`~aggc_rl.lab.errors` (what a fault changed), :mod:`~aggc_rl.lab.twins` (arms, faults,
plans, runs), :mod:`~aggc_rl.lab.twins_report`. The faults themselves are injected by the shared harness
(:mod:`aggc_rl.inprocess.faults`, :mod:`aggc_rl.inprocess.engine`).
"""
