"""``python -m aggc_rl.report`` end to end on synthetic logs: PNGs, tables, missing metrics, bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from aggc_rl.report import analysis, plots
from aggc_rl.report.cli import main
from aggc_rl.report.logs import load_run
from aggc_rl.report.synthetic import DEMO_RUNS, SyntheticRun, records, write_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMAGES = [
    "overview",
    "reward_validation",
    "grad_norm",
    "clip_groups_global",
    "clip_groups_aggc",
    "kl_entropy_loss",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    for name, run in DEMO_RUNS.items():
        write_jsonl(records(run), logs / name / f"{name}.jsonl")
    out = tmp_path_factory.mktemp("report")
    assert main([str(logs / "global"), str(logs / "aggc"), "--out", str(out)]) == 0
    return out


def test_report_writes_every_picture(report: Path) -> None:
    for name in IMAGES:
        data = (report / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_report_tables_hold_the_known_spikes_and_skips(report: Path) -> None:
    text = (report / "report.md").read_text()
    # global: spikes at 57, 58, 121, 166 and step 140 skipped; aggc: one spike at 121.
    assert "| global | 200 | 4 | 1 |" in text
    assert "| aggc | 200 | 1 | 0 |" in text
    assert "| grad-norm spikes (> 3x median of previous 20) | 4: steps 57, 58, 121, 166 |" in text
    assert "| skipped steps (non-finite gradient) | 1: step 140 |" in text
    assert "| reward at 50% of training |" in text and "(step 100) |" in text
    assert "| final validation `val-core/openai/gsm8k/acc/mean@1` |" in text
    for name in IMAGES:
        assert f"]({name}.png)" in text


def test_labels_and_missing_metrics(tmp_path: Path, capsys) -> None:
    sparse = tmp_path / "sparse.jsonl"  # a run that logged rewards only
    sparse.write_text(
        "\n".join(json.dumps({"step": s, "data": {"critic/rewards/mean": s / 10}}) for s in (1, 2, 3))
    )
    full = write_jsonl(records(SyntheticRun(steps=40, seed=1)), tmp_path / "full.jsonl")
    out = tmp_path / "out"
    assert main([str(sparse), str(full), "--out", str(out), "--labels", "bare,rich"]) == 0
    text = (out / "report.md").read_text()
    assert "| grad-norm spikes | n/a (actor/grad_norm not logged) |" in text
    assert "| clip groups logged (actor/clip/norm/...) | not logged |" in text
    assert "| bare | 3 | not logged | 0 | not logged |" in text
    assert (out / "clip_groups_bare.png").stat().st_size > 1000
    assert "| run | last step |" in capsys.readouterr().out


def test_panels_say_not_logged(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.jsonl"
    sparse.write_text(json.dumps({"step": 1, "data": {"critic/rewards/mean": 0.1}}) + "\n")
    run = load_run(sparse, "bare")
    fig = Figure()
    kl, norm, heat, reward = fig.subplots(1, 4)
    plots.draw_metric(kl, [run], analysis.KL_KEYS, "KL", "KL")
    plots.draw_grad_norm(norm, [run])
    plots.draw_group_heatmap(fig, heat, run, analysis.GROUP_NORM_PREFIX)
    plots.draw_metric(reward, [run], analysis.REWARD_KEYS, "Training reward", "reward")
    for ax in (kl, norm, heat):
        assert any(t.get_text().startswith("not logged") for t in ax.texts)
    assert not any(t.get_text().startswith("not logged") for t in reward.texts)
    assert "critic/rewards/mean" in reward.get_title()  # the fallback key is named


def test_errors_name_the_path_and_the_bad_value(tmp_path: Path, capsys) -> None:
    (tmp_path / "nolog").mkdir()
    assert main([str(tmp_path / "nolog"), "--out", str(tmp_path / "o")]) == 1
    assert f"no log found under {tmp_path / 'nolog'}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o"), "--labels", "one"])
    assert "names 1 label(s) for 2 runs" in capsys.readouterr().err


def test_module_entry_point(tmp_path: Path) -> None:
    log = write_jsonl(records(SyntheticRun(steps=25, seed=0)), tmp_path / "exp.jsonl")
    done = subprocess.run(
        [sys.executable, "-m", "aggc_rl.report", str(log), "--out", str(tmp_path / "r"), "--dpi", "40"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert "| exp | 25 |" in done.stdout


def test_non_finite_group_norms_are_painted_over_the_heat_map(tmp_path: Path) -> None:
    log = write_jsonl(records(SyntheticRun(steps=30, skipped=(12,), seed=0)), tmp_path / "exp.jsonl")
    fig = Figure()
    ax = fig.subplots()
    plots.draw_group_heatmap(fig, ax, load_run(log, "exp"), analysis.GROUP_NORM_PREFIX)
    assert len(ax.images) == 2  # the map, then the magenta "not finite" overlay
    overlay = ax.images[1].get_array()
    assert overlay[..., 3].sum() == 1.0  # exactly one cell: the group that went non-finite at step 12
