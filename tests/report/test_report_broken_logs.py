"""The report on logs that crashes and resumes left behind: missing steps, steps written twice, all-NaN norms."""

from __future__ import annotations

import json
from pathlib import Path

from aggc_rl.report.cli import main
from aggc_rl.report.logs import load_run


def write_log(path: Path, records: list[tuple[int, dict]]) -> Path:
    path.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in records))
    return path


def train(step: int, norm: float | None = 1.0, score: float = 0.5) -> tuple[int, dict]:
    return step, {"actor/grad_norm": norm, "critic/score/mean": score, "training/global_step": step}


def test_a_step_killed_between_checkpoint_and_log_is_reported_missing(tmp_path, capsys):
    log = write_log(tmp_path / "m.jsonl", [(0, {"val-core/x/acc/mean@1": 0.1}), train(1), train(3), train(4)])
    run = load_run(log, "r")
    assert run.missing_steps == [2] and run.duplicate_steps == []
    assert "training step 2 is missing" in capsys.readouterr().err
    assert main([str(log), "--out", str(tmp_path / "out"), "--dpi", "40"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| training steps missing from the log | 1: step 2 |" in report
    assert "training step(s) missing from the log: 1: step 2" in report


def test_a_step_written_twice_keeps_the_last_record_and_says_so(tmp_path):
    records = [
        train(1, 1.0, 0.1),
        train(2, 2.0, 0.2),
        train(3, 3.0, 0.3),
        train(2, 20.0, 0.9),
        train(3, 30.0, 1.0),
    ]
    records.insert(4, (2, {"val-core/x/acc/mean@1": 0.7}))  # the resumed run's validation before training
    run = load_run(write_log(tmp_path / "d.jsonl", records), "r")
    assert run.duplicate_steps == [2, 3] and run.missing_steps == []
    assert run.metrics["actor/grad_norm"].to_dict() == {1: 1.0, 2: 20.0, 3: 30.0}
    assert run.metrics["val-core/x/acc/mean@1"].to_dict() == {
        2: 0.7
    }  # validation-only: merged, not a duplicate
    assert main([str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "out"), "--dpi", "40"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| training steps written twice (last record kept) | 2: steps 2, 3 |" in report
    assert report.count("| 0 / 2 |") == 1  # steps missing / twice, in the side-by-side table


def test_a_run_whose_every_norm_is_non_finite_is_drawn_not_a_traceback(tmp_path, capsys):
    records = [
        (s, {"actor/grad_norm": None, "critic/score/mean": 0.1 * s, "actor/clip/norm/q_proj": None,
             "actor/clip/scale/q_proj": None, "actor/clip/skipped": 1.0})
        for s in range(1, 6)
    ]  # fmt: skip
    diverged = write_log(tmp_path / "diverged.jsonl", records)
    healthy = write_log(tmp_path / "healthy.jsonl", [train(s, 1.0 + s) for s in range(1, 6)])
    out = tmp_path / "out"
    assert main([str(diverged), str(healthy), "--out", str(out), "--dpi", "40"]) == 0
    report = (out / "report.md").read_text()
    assert "no finite values (5 logged steps all NaN/inf)" in report
    assert "| skipped steps (non-finite gradient) | 5: steps 1, 2, 3, 4, 5 |" in report
    for name in ("overview.png", "grad_norm.png", "clip_groups_diverged.png"):
        assert (out / name).stat().st_size > 1000
    assert (
        main([str(diverged), "--out", str(tmp_path / "alone"), "--dpi", "40"]) == 0
    )  # alone: no finite panel
    assert "Traceback" not in capsys.readouterr().err


def test_the_no_finite_panel_says_so(tmp_path):
    from matplotlib.figure import Figure

    from aggc_rl.report import plots

    run = load_run(write_log(tmp_path / "n.jsonl", [train(s, None) for s in range(1, 4)]), "n")
    fig = Figure()
    ax = fig.subplots()
    plots.draw_grad_norm(ax, [run])
    texts = [t.get_text() for t in ax.texts]
    assert any("no finite values" in t and "3 steps logged, 3 skipped" in t for t in texts), texts
