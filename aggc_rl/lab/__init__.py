"""The stability lab: known faults at known steps, measured through the project's verl update path.

``python -m aggc_rl.lab`` (``make lab``); see docs/lab.md. Modules: ``size`` (the sizes of one run),
``arms`` (clip method + guard),
``faults`` (what is injected), ``engine`` (the lab-only engine that injects it), ``policy`` (task, tiny
policy, sampler), ``loop`` (one run), ``measure`` (ratios against the clean twin), ``report``.
"""
