"""The stability lab: known faults on a warm Adam, measured through the project's verl update path, and the
proxy policy's learning-rate sweeps.

``python -m aggc_rl.lab`` (``make lab``; docs/lab.md): ``replay`` (warm state, twins), ``errors`` (what a
fault changed), ``twins`` (arms, faults, plans, runs), ``twins_report``; ``faults`` and ``engine`` inject.
``python -m aggc_rl.lab.lr_sweep`` (``make lr-sweep``; docs/proxy.md): ``proxy``, ``proxy_grpo``,
``proxy_sft``, ``sensitivity``. Shared: ``arms``, ``size``, ``loop``, ``policy``, ``logfile``.
"""
