"""Lab v2's runs: per seed one warm state, per arm a clean twin and one faulted twin per fault, measured.

One JSON record per (seed, arm) under ``OUT/twins/`` (a killed lab continues where it stopped): for every
fault, the measurements of :mod:`aggc_rl.lab.errors` against the arm's clean twin, the clip trace of the
fault step, the KL between the twins' policies at the end of the replay on a fixed probe set, and whether
the fault was null (excluded from the statistics, reported).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from aggc_rl.clipping import rule_knobs
from aggc_rl.lab import errors, replay
from aggc_rl.lab.arms import WARMUP_KNOBS, Arm
from aggc_rl.lab.faults import Fault
from aggc_rl.lab.policy import Sampler, probe_kl, puzzles_for


def _at_defaults(method: str, **extra: Any) -> Arm:
    """An arm whose step-counted warm-ups stay at the method's defaults (the v1 lab shortened them to fit a
    dozen steps; here the warm-up is long enough for them to end before the fault)."""
    defaults = rule_knobs(method)
    knobs = {k: defaults[k] for k in WARMUP_KNOBS.values() if k in defaults}
    return Arm(method, knobs=knobs, **extra)


#: Lab v2's arms: ``none`` is the control; AdaGC both at its own (per-tensor) grouping and at AGGC's.
ARMS: dict[str, Arm] = {
    "none": Arm("global", knobs={"max_norm": 1e30}),
    "global": Arm("global"),
    "aggc": Arm("aggc"),
    "aggc_official": Arm("aggc_official"),
    "adagc": _at_defaults("adagc"),
    "adagc_module_type": _at_defaults("adagc", grouping="module_type"),
    "zclip": _at_defaults("zclip"),
}

#: The faults, by name (the fault step is set by the replay: the first step after the warm-up).
FAULTS: dict[str, Fault] = {
    "loss_x100": Fault("loss_spike", 1, scale=100.0),
    "loss_x1000": Fault("loss_spike", 1, scale=1000.0),
    "v_proj_x100": Fault("group_spike", 1, scale=100.0, group="v_proj"),
    "embed_x100": Fault("group_spike", 1, scale=100.0, group="embed_tokens"),
    "lm_head_x100": Fault("group_spike", 1, scale=100.0, group="lm_head"),
    "drift_v_proj_x5_20": Fault("group_spike", 1, scale=5.0, group="v_proj", duration=20),
    "outlier_x1000": Fault("outlier_sequence", 1, scale=1000.0),
    "random_x10": Fault("random_direction", 1, scale=10.0),
    "inf_lm_head": Fault("inf_group", 1, group="lm_head"),
}


def _target(fault: Fault) -> str:
    """The group whose clean gradient must be non-zero for ``fault`` to act (null-fault detection)."""
    return fault.group if fault.kind in ("group_spike", "inf_group") else errors.ALL


def measure(clean, faulted, groups, fault: Fault) -> dict[str, Any]:
    step = faulted[1]["clip"]
    return {
        "null": errors.is_null(clean, _target(fault)),
        "fired": bool(faulted[1]["fault_fired"]),
        "skipped": bool(step.skipped),
        "scales": [float(s) for s in step.scales.flatten()],
        "fault_step": errors.fault_step(clean, faulted, groups),
        "drift": errors.drift(clean, faulted, groups),
        "moments": errors.moments(clean, faulted, groups),
    }


def run_seed_arm(
    model: Path,
    state: replay.WarmState,
    arm: str,
    size: replay.ReplaySize,
    faults: Sequence[str],
    probe_count: int = 32,
    log=print,
) -> dict[str, Any]:
    """The clean twin and every faulted twin of ``arm`` for one seed; its record (JSON-safe)."""
    _, _, engine, loss_fn = replay.build(model, ARMS[arm], size)
    groups = engine.measure_groups
    sampler = Sampler(model, compact=True)
    probe_puzzles = puzzles_for(0, 0, probe_count, size.people, split="probe")
    sampler.load(state.weights)
    probe = sampler.generate(sampler.encode(probe_puzzles), size.response_length, seed=None)
    t0 = time.time()
    clean = replay.branch(engine, loss_fn, state, size)
    sampler.load(clean[-1]["params"])
    clean_lp = sampler.response_logprobs(probe)
    record: dict[str, Any] = {
        "arm": arm,
        "arm_desc": ARMS[arm].describe(size.lab_size()),
        "seed": state.seed,
        "size": dataclasses.asdict(size),
        "groups": list(groups),
        "clip_groups": list(engine.clipper.groups),
        "clean_scales": [float(s) for s in clean[1]["clip"].scales.flatten()],
        "faults": {},
    }
    for name in faults:
        fault = FAULTS[name]
        faulted = replay.branch(engine, loss_fn, state, size, fault)
        out = measure(clean, faulted, groups, fault)
        sampler.load(faulted[-1]["params"])
        out["kl_end"] = probe_kl(sampler.response_logprobs(probe), clean_lp, probe["response_mask"])
        out["fault"] = dataclasses.asdict(fault)
        record["faults"][name] = out
        total = out["fault_step"][errors.ALL]
        log(f"    seed {state.seed} {arm:>17} {name:<18} error {total['error'] if total['error'] is not None else float('nan'):.3f}"
            f" cos {total['cosine'] if total['cosine'] is not None else float('nan'):+.3f}"
            f" drift_end {out['drift'][errors.ALL][-1] or float('nan'):.3f} kl_end {out['kl_end']:.2e}"
            f"{' NULL' if out['null'] else ''} ({time.time() - t0:.0f}s)")  # fmt: skip
    del clean
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return record


def run(model: Path, out: Path, seeds: int, arms: Sequence[str], faults: Sequence[str], size: replay.ReplaySize,
        log=print) -> list[dict[str, Any]]:  # fmt: skip
    """Every (seed, arm) record, computing the missing ones (resumable)."""
    from aggc_rl.lab.loop import ensure_process_group

    ensure_process_group("cpu")
    (out / "twins").mkdir(parents=True, exist_ok=True)
    settings = {"size": dataclasses.asdict(size), "model": str(model), "faults": list(faults)}
    records = []
    for seed in range(seeds):
        state = None
        for arm in arms:
            path = out / "twins" / f"s{seed}__{arm}.json"
            if path.exists():
                rec = json.loads(path.read_text())
                if {k: rec.get(k) for k in settings} != settings:
                    raise SystemExit(
                        f"{path} was written with other settings: remove {out / 'twins'} or pick another --out"
                    )
                records.append(rec)
                continue
            if state is None:
                t0 = time.time()
                state = replay.warm_state(model, seed, size, log=log)
                log(f"  seed {seed}: warm state in {time.time() - t0:.0f}s")
            rec = run_seed_arm(model, state, arm, size, faults, log=log)
            rec.update(settings)
            tmp = path.with_suffix(".partial")
            tmp.write_text(json.dumps(rec))
            tmp.rename(path)
            records.append(rec)
    return records
