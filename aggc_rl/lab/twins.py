"""Lab v2's runs: per seed one warm state, per arm a clean twin and one faulted twin per fault, measured.

One JSON record per (seed, arm) under ``OUT/twins/`` (``OUT/onpolicy/`` in the on-policy mode; a killed lab
continues where it stopped): for every fault, the measurements of :mod:`aggc_rl.lab.errors` against the arm's
clean twin, the clip trace of the fault step, the KL between the twins' policies at the end on a fixed probe
set, and whether the fault was null (excluded from the statistics, reported). On-policy, also the reward of
every step and the greedy held-out accuracy at the end, for both twins.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggc_rl.clipping import rule_knobs
from aggc_rl.inprocess.arms import NONE, WARMUP_KNOBS, Arm
from aggc_rl.inprocess.faults import Fault
from aggc_rl.lab import errors, replay
from aggc_rl.proxy.sampler import Sampler, probe_kl, puzzles_for


def _at_defaults(method: str, **extra: Any) -> Arm:
    """An arm whose step-counted warm-ups stay at the method's defaults (the v1 lab shortened them to fit a
    dozen steps; here the warm-up is long enough for them to end before the fault)."""
    defaults = rule_knobs(method)
    knobs = {k: defaults[k] for k in WARMUP_KNOBS.values() if k in defaults}
    return Arm(method, knobs=knobs, **extra)


#: Lab v2's arms: ``none`` is the control; AdaGC both at its own (per-tensor) grouping and at AGGC's
#: (``module_type``); the step guard.
ARMS: dict[str, Arm] = {
    "none": NONE,
    "global": Arm("global"),
    "aggc": Arm("aggc"),
    "aggc_official": Arm("aggc_official"),
    "adagc": _at_defaults("adagc"),
    "adagc_module_type": _at_defaults("adagc", grouping="module_type"),
    "zclip": _at_defaults("zclip"),
    # The step guard's sigma test (skip a step whose total norm is > 6 sigma above the window's mean) over
    # global clipping; its window fits in the warm-up, so it is ready at the fault.
    "global_guard": Arm("global", guard={"skip_sigma": 6.0, "window": 100}),
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
    "reward_noise": Fault("reward_noise", 1),
}


#: Sizes of the default lab: beta2 0.98, so Adam's second moment averages ~50 steps, and a warm-up of 150 steps
#: (3 / (1 - beta2): beta2^150 = 0.05, so the bias correction is within 5% of its end value, and AdaGC's 100-step
#: and ZClip's 25-step warm-ups and the guard's window end before the fault); 50 replayed steps after it.
FULL_SIZE = replay.ReplaySize(warmup=150, beta2=0.98, replay=50, prompts=2, samples=4, lr=1e-4)


def rule_warmup(arm: str) -> int:
    """Steps the arm's rule needs before it acts as in its steady regime (its warm-up, the guard's history)."""
    a = ARMS[arm]
    steps = int(a.knobs.get(WARMUP_KNOBS[a.method], 0)) if a.method in WARMUP_KNOBS else 0
    if a.guard:
        steps = max(steps, max(2, int(a.guard["window"]) // 2))
    return steps


@dataclass(frozen=True)
class Plan:
    """One lab run: seeds 0..seeds-1 x arms x faults at ``size``; ``on_policy`` for the behavioural mode."""

    seeds: int
    arms: tuple[str, ...]
    faults: tuple[str, ...]
    size: replay.ReplaySize
    on_policy: bool = False
    heldout: int = 0  # on-policy: greedy accuracy of both twins at the end on this many held-out puzzles

    def check(self) -> None:
        self.size.check()
        bad = [a for a in self.arms if a not in ARMS] + [f for f in self.faults if f not in FAULTS]
        if bad:
            raise ValueError(
                f"unknown arm(s) or fault(s) {bad}; arms: {', '.join(ARMS)}; faults: {', '.join(FAULTS)}"
            )
        if self.seeds < 1 or not self.arms or not self.faults:
            raise ValueError(f"seeds={self.seeds}, arms={self.arms}, faults={self.faults}: need >= 1 of each")
        early = {a: rule_warmup(a) for a in self.arms if rule_warmup(a) > self.size.warmup}
        if early:
            raise ValueError(
                f"arm(s) {early} need that many warm-up steps, more than this plan's {self.size.warmup}: the fault "
                "would land inside their warm-up; drop them or use the full plan"
            )

    @property
    def branches(self) -> int:
        return self.seeds * len(self.arms) * (1 + len(self.faults))

    def describe(self) -> str:
        s = self.size
        mode = "on-policy continuation" if self.on_policy else "replay of the clean batches"
        return (
            f"{self.seeds} seeds x {len(self.arms)} arms x (clean + {len(self.faults)} faults) = {self.branches} "
            f"branches; warm-up {s.warmup} steps (AdamW beta2 {s.beta2}), fault at step {s.warmup + 1}, then "
            f"{s.replay} steps of {mode}; {s.prompts} prompts x {s.samples} samples, lr {s.lr:g}"
        )


#: The default lab, sized to finish within an hour on two cores: 7 arms x (clean + 7 faults), ~9 s per replayed
#: branch of 51 steps with two workers side by side (49.6 min in all, measured 2026-12-03). Left out, still
#: available with ``--arms`` / ``--faults``: ``aggc_official`` (AGGC with the official schedule, which differs from ``aggc`` only in its late
#: tightening), ``v_proj_x100`` (a one-step group spike, as ``embed_x100`` and ``lm_head_x100`` are),
#: ``reward_noise`` and ``loss_x1000``.
FULL_ARMS = ("none", "global", "aggc", "adagc", "adagc_module_type", "zclip", "global_guard")
FULL_FAULTS = ("loss_x100", "embed_x100", "lm_head_x100", "drift_v_proj_x5_20", "outlier_x1000", "random_x10",
               "inf_lm_head")  # fmt: skip
FULL = Plan(10, FULL_ARMS, FULL_FAULTS, FULL_SIZE)
QUICK = Plan(2, ("none", "global", "aggc"), ("loss_x100", "lm_head_x100", "inf_lm_head"),
             replay.ReplaySize(warmup=20, beta2=0.95, replay=10, prompts=2, samples=4, lr=1e-4))  # fmt: skip
ON_POLICY = Plan(3, ("none", "global", "aggc", "adagc", "zclip"), ("loss_x1000", "lm_head_x100", "random_x10"),
                 FULL_SIZE, on_policy=True, heldout=500)  # fmt: skip


def _target(fault: Fault) -> str | None:
    """The group whose clean gradient must be non-zero for ``fault`` to act (null-fault detection); None for a
    fault that makes its own gradient (reward noise replaces the advantages: never null)."""
    if fault.kind == "reward_noise":
        return None
    return fault.group if fault.kind in ("group_spike", "inf_group") else errors.ALL


def measure(clean, faulted, groups, fault: Fault) -> dict[str, Any]:
    """The errors of ``faulted`` against ``clean``. Null is judged at the fault's first step (a sustained
    fault whose first step is null is excluded whole)."""
    step = faulted[1]["clip"]
    target = _target(fault)
    return {
        "null": target is not None and errors.is_null(clean, target),
        "fired": bool(faulted[1]["fault_fired"]),
        "skipped": bool(step.skipped),
        "scales": [float(s) for s in step.scales.flatten()],
        "fault_step": errors.fault_step(clean, faulted, groups),
        "drift": errors.drift(clean, faulted, groups),
        "moments": errors.moments(clean, faulted, groups),
    }


def _rewards(trajectory) -> list[float]:
    return [float(x["reward"]) for x in trajectory[1:]]


def run_seed_arm(model: Path, state: replay.WarmState, arm: str, plan: Plan, probe_count: int = 32,
                 log=print) -> dict[str, Any]:  # fmt: skip
    """The clean twin and every faulted twin of ``arm`` for one seed; its record (JSON-safe)."""
    from aggc_rl.proxy.policy import heldout_eval, heldout_puzzles

    size = plan.size
    cfg, setup, engine, loss_fn = replay.build(model, ARMS[arm], size)
    groups = engine.measure_groups
    sampler = Sampler(model, compact=True)
    on_policy = replay.OnPolicy(Sampler(model, compact=True), setup, cfg) if plan.on_policy else None
    probe_puzzles = puzzles_for(0, 0, probe_count, size.people, split="probe")
    heldout = heldout_puzzles(plan.heldout, size.people) if plan.heldout else []
    sampler.load(state.weights)
    probe = sampler.generate(sampler.encode(probe_puzzles), size.response_length, seed=None)
    t0 = time.time()
    clean = replay.branch(engine, loss_fn, state, size, on_policy=on_policy)
    sampler.load(clean[-1]["params"])
    clean_lp = sampler.response_logprobs(probe)
    record: dict[str, Any] = {
        "arm": arm,
        "arm_desc": ARMS[arm].describe(size.lab_size()),
        "seed": state.seed,
        "groups": list(groups),
        "clip_groups": list(engine.clipper.groups),
        "clean_scales": [float(s) for s in clean[1]["clip"].scales.flatten()],
        "clean_pre_norm": clean[1]["pre_norm"],
        "faults": {},
    }
    if plan.on_policy:
        record["clean_rewards"] = _rewards(clean)
        record["clean_acc"] = heldout_eval(sampler, heldout)["acc"] if heldout else None
    for name in plan.faults:
        fault = FAULTS[name]
        faulted = replay.branch(engine, loss_fn, state, size, fault, on_policy=on_policy)
        out = measure(clean, faulted, groups, fault)
        sampler.load(faulted[-1]["params"])
        out["kl_end"] = probe_kl(sampler.response_logprobs(probe), clean_lp, probe["response_mask"])
        if plan.on_policy:
            out["rewards"] = _rewards(faulted)
            out["acc"] = heldout_eval(sampler, heldout)["acc"] if heldout else None
        out["fault"] = dataclasses.asdict(dataclasses.replace(fault, step=size.warmup, seed=state.seed))
        record["faults"][name] = out
        total = out["fault_step"][errors.ALL]
        nan = float("nan")
        log(f"    seed {state.seed} {arm:>17} {name:<18} error {total['error'] if total['error'] is not None else nan:.3f}"
            f" cos {total['cosine'] if total['cosine'] is not None else nan:+.3f}"
            f" drift_end {out['drift'][errors.ALL][-1] or nan:.3f} kl_end {out['kl_end']:.2e}"
            f"{' NULL' if out['null'] else ''} ({time.time() - t0:.0f}s)")  # fmt: skip
    return record


def record_path(out: Path, plan: Plan, seed: int, arm: str) -> Path:
    return out / ("onpolicy" if plan.on_policy else "twins") / f"s{seed}__{arm}.json"


def settings(plan: Plan, model: Path) -> dict[str, Any]:
    """What a saved record must match to be reused (the same size, model, faults, mode)."""
    return {"size": dataclasses.asdict(plan.size), "model": str(model), "fault_names": list(plan.faults),
            "on_policy": plan.on_policy, "heldout": plan.heldout}  # fmt: skip


def load(out: Path, plan: Plan, model: Path, seed: int, arm: str) -> dict[str, Any] | None:
    """The saved record of (seed, arm), or None; a record written with other settings is refused."""
    path = record_path(out, plan, seed, arm)
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    want = settings(plan, model)
    same = {k: rec.get(k) for k in want} == want and rec.get("arm_desc") == ARMS[arm].describe(
        plan.size.lab_size()
    )
    faults = {
        n: dataclasses.asdict(dataclasses.replace(FAULTS[n], step=plan.size.warmup, seed=seed))
        for n in plan.faults
    }
    if not same or {n: x.get("fault") for n, x in rec.get("faults", {}).items()} != faults:
        raise SystemExit(
            f"{path} was written with other settings: remove {path.parent} or pick another --out"
        )
    return rec


def run(
    model: Path, out: Path, plan: Plan, shard: tuple[int, int] = (0, 1), log=print
) -> list[dict[str, Any]]:
    """Every (seed, arm) record of this shard's seeds (``seed % shards == shard``), computing the missing ones
    (resumable)."""
    from aggc_rl.inprocess.loop import ensure_process_group

    ensure_process_group("cpu")
    index, shards = shard
    records = []
    for seed in range(plan.seeds):
        if seed % shards != index:
            continue
        state = None
        for arm in plan.arms:
            rec = load(out, plan, model, seed, arm)
            if rec is not None:
                records.append(rec)
                continue
            if state is None:
                t0 = time.time()
                state = replay.warm_state(model, seed, plan.size, log=log)
                log(f"  seed {seed}: warm state in {time.time() - t0:.0f}s (rewards: warm-up start "
                    f"{sum(state.rewards[:10]) / 10:+.3f}, end {sum(state.rewards[-10:]) / 10:+.3f})")  # fmt: skip
            t0 = time.time()
            rec = run_seed_arm(model, state, arm, plan, log=log)
            rec.update(settings(plan, model), wall_s=time.time() - t0)
            path = record_path(out, plan, seed, arm)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".partial")
            tmp.write_text(json.dumps(rec))
            tmp.rename(path)
            records.append(rec)
            log(f"  seed {seed} {arm}: {rec['wall_s']:.0f}s")
    return records
