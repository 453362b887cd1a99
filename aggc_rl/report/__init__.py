"""Stability reports for verl runs: curves, per-group clip heat maps and spike/skip tables.

    python -m aggc_rl.report RUN [RUN ...] --out DIR [--labels a,b]

Layers, each usable alone: :mod:`~aggc_rl.report.logs` reads verl's file-logger JSONL and TensorBoard
event files into :class:`~aggc_rl.report.logs.RunLog`; :mod:`~aggc_rl.report.analysis` holds the pure
functions (spikes, skipped steps, validation, reward at fractions of training); :mod:`~aggc_rl.report.plots`
draws PNGs with matplotlib's Agg backend; :mod:`~aggc_rl.report.markdown` writes the tables.
This module imports nothing heavy, so the evaluation harness can reuse :mod:`~aggc_rl.report.labels`.
"""
