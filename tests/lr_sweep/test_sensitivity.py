"""The lr sweep's sensitivity as defined in aggc_rl.lr_sweep.sensitivity, compared by seed; its report."""

from __future__ import annotations

import pytest

from aggc_rl.lr_sweep import sensitivity
from aggc_rl.stats import paired_difference

LRS = (1e-4, 1e-3, 1e-2)


def rec(arm, lr, seed, final, start=0.4, collapsed=False):
    return {
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "final_acc": final,
        "start_acc": start,
        "collapsed": collapsed,
    }


def test_sensitivity_counts_a_collapse_in_full_and_is_paired_by_seed():
    records = []
    for seed, jitter in enumerate((0.0, 0.01, -0.01)):
        # global: best 0.6 at 1e-3, collapses to 0.1 at 1e-2 (below its start of 0.4: no cap)
        records += [rec("global", 1e-4, seed, 0.5 + jitter), rec("global", 1e-3, seed, 0.6 + jitter)]
        records.append(rec("global", 1e-2, seed, 0.1, collapsed=True))
        # aggc: the same best, and 0.55 at 1e-2
        records += [rec("aggc", 1e-4, seed, 0.5 + jitter), rec("aggc", 1e-3, seed, 0.6 + jitter)]
        records.append(rec("aggc", 1e-2, seed, 0.55 + jitter))
    out = sensitivity.sensitivity(records, ("global", "aggc"), LRS)
    assert out["global"]["best_lr"] == 1e-3 and out["global"]["best"] == pytest.approx(0.6)
    # seed 0: global (0.1 + 0 + 0.5) / 3; aggc (0.1 + 0 + 0.05) / 3
    assert out["global"]["per_seed"][0] == pytest.approx(0.6 / 3)
    assert out["aggc"]["per_seed"][0] == pytest.approx(0.15 / 3)
    diff = paired_difference(out["aggc"]["per_seed"], out["global"]["per_seed"])
    assert diff[2] == 3 and diff[0] == pytest.approx(-0.45 / 3)


def test_an_arm_that_never_beats_its_start_still_ranks_collapses():
    """No lr improves on the start (0.4): staying put and collapsing to 0 must not count the same."""
    records = []
    for seed in range(2):
        records += [rec("a", 1e-4, seed, 0.38), rec("a", 1e-3, seed, 0.36), rec("a", 1e-2, seed, 0.0)]
        records += [rec("b", 1e-4, seed, 0.38), rec("b", 1e-3, seed, 0.36), rec("b", 1e-2, seed, 0.35)]
    out = sensitivity.sensitivity(records, ("a", "b"), LRS)
    assert out["a"]["S"][0] == pytest.approx((0 + 0.02 + 0.38) / 3)
    assert out["b"]["S"][0] == pytest.approx((0 + 0.02 + 0.03) / 3)
    assert out["a"]["S"][0] > out["b"]["S"][0] > 0


def test_an_arm_with_a_missing_lr_has_no_sensitivity_and_duplicates_are_refused():
    records = [rec("global", lr, 0, 0.5) for lr in LRS[:2]]
    assert sensitivity.sensitivity(records, ("global",), LRS) == {}
    with pytest.raises(ValueError, match="two records"):
        sensitivity.table([rec("global", 1e-3, 0, 0.5), rec("global", 1e-3, 0, 0.6)])


def test_report_writes_markdown_and_png(tmp_path):
    records = [rec(a, lr, s, 0.4 + 0.01 * s + (0.1 if lr == 1e-3 else 0)) for a in ("global", "aggc") for lr in LRS
               for s in range(3)]  # fmt: skip
    path = sensitivity.write_report(records, ("global", "aggc"), LRS, tmp_path, {"title": "t"}, "lr_sweep")
    text = path.read_text()
    assert "| global |" in text and "sensitivity" in text and "vs global (paired)" in text
    assert (tmp_path / "lr_sweep.png").stat().st_size > 1000


def test_an_arm_identical_to_an_earlier_one_is_marked_as_an_identity(tmp_path):
    def run(arm, lr, seed, norms, scales, final):
        steps = [
            {"grad_norm": g, "scales": [c], "skipped": False} for g, c in zip(norms, scales, strict=True)
        ]
        return {**rec(arm, lr, seed, final), "steps": steps}

    records = []
    for seed in range(2):
        for lr in LRS:
            records.append(run("none", lr, seed, [0.2, 0.3], [1.0, 1.0], 0.4))
            records.append(run("global", lr, seed, [0.2, 0.3], [1.0, 1.0], 0.4))  # never binds: identical
            clipped = 0.5 if lr == 1e-2 else 1.0  # aggc acts only at the largest lr
            records.append(run("aggc", lr, seed, [0.2, 0.3], [1.0, clipped], 0.4 if lr != 1e-2 else 0.3))
    cells = sensitivity.table(records)
    arms = ("none", "global", "aggc")
    assert sensitivity.identical_to(cells, "global", 1e-3, arms[:1]) == "none"
    assert sensitivity.identical_to(cells, "aggc", 1e-3, arms[:2]) == "none"
    assert sensitivity.identical_to(cells, "aggc", 1e-2, arms[:2]) is None
    text = sensitivity.write_report(records, arms, LRS, tmp_path, {"title": "t"}, "x").read_text()
    assert "(= none)" in text and "an identity" in text
