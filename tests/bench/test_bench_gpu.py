"""`python -m bench.gpu --tiny` runs the GPU benchmark's whole code path on CPU; full sizes refuse without CUDA.

Structure and sane values only: speed goals are benchmark figures, never timed assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aggc_rl.clipping import RULE_NAMES
from bench import gpu
from bench.clip_methods import BASELINE, GUARDED
from bench.host_syncs import count_host_syncs, model_host_syncs
from bench.shapes import TINY_SIZES

REPO = Path(__file__).resolve().parents[2]

# Runs the CLI with verl, Ray and vLLM made unimportable, as on the GPU machine where they are absent.
_NO_VERL = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("verl", "ray", "vllm"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["bench.gpu", *sys.argv[1:]]
runpy.run_module("bench.gpu", run_name="__main__")
"""


def expected_methods() -> list[str]:
    return [BASELINE, *RULE_NAMES, GUARDED]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("bench_gpu")
    cmd = [sys.executable, "-c", _NO_VERL, "--tiny", "--device", "cpu", "--runs", "3", "--warmup", "1"]
    cmd += ["--train-runs", "2", "--out", str(out / "gpu.json"), "--md", str(out / "gpu.md")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text(), proc.stdout


def test_tiny_clip_step_covers_every_size_dtype_and_method(tiny_run: tuple[dict, str, str]) -> None:
    report, _, _ = tiny_run
    assert report["tiny"] is True and report["skipped_parts"] == []
    assert not any(report["host"][f"{m}_imported"] for m in ("verl", "ray", "vllm"))
    cases = [(c["model"], c["dtype"]) for c in report["clip_step"]]
    assert cases == [(s, d) for s in TINY_SIZES for d in ("bfloat16", "float32")]
    for case in report["clip_step"]:
        assert list(case["methods"]) == expected_methods()
        assert case["copy_bandwidth_gbps"] > 0 and case["grad_bytes"] > 0
        assert case["grad_bytes"] == case["elements"] * (2 if case["dtype"] == "bfloat16" else 4)
        for row in case["methods"].values():
            assert row["runs"] == 3
            assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
            assert (
                0 < row["ratio_min"] <= row["ratio_q1"] <= row["ratio"] <= row["ratio_q3"] <= row["ratio_max"]
            )
            assert row["floor_ms"] > 0 and row["floor_ratio"] > 0
            assert row["host_syncs"] is None  # not measurable on CPU, and not faked
            assert isinstance(row["host_syncs_modelled"], int) and row["host_syncs_modelled"] >= 0
            assert row["skipped_a_step"] is False
        assert case["methods"][BASELINE]["ratio"] == 1.0
        assert case["methods"][BASELINE]["host_syncs_modelled"] == 0  # torch's clip never waits
        assert all(case["methods"][k]["host_syncs_modelled"] >= 1 for k in RULE_NAMES)  # the one transfer
        assert "not countable" in case["host_sync_method"]


def test_tiny_train_step_times_every_method(tiny_run: tuple[dict, str, str]) -> None:
    report, _, _ = tiny_run
    train = report["train_step"]
    assert train["model"] == "tiny-a" and train["dtype"] == "bfloat16" and train["attention"] == "sdpa"
    assert train["batch"] >= 1 and train["seq"] == 32
    assert list(train["methods"]) == expected_methods()
    for row in train["methods"].values():
        assert row["runs"] == 2 and row["median_ms"] > 0 and row["ratio"] > 0
        assert row["clip_extra_peak_mib"] is None  # CUDA-only measurement


def test_tiny_prints_and_writes_the_markdown_tables(tiny_run: tuple[dict, str, str]) -> None:
    _, md, stdout = tiny_run
    for text in (md, stdout):
        assert "## Clip step" in text and "## Train step" in text and "[TINY shapes]" in text
        assert f"| tiny-b | float32 | {BASELINE} |" in text
        assert "| tiny-a | bfloat16 | floor |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the full run is allowed")
def test_full_sizes_refuse_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu.main(["--device", "cpu"])
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "need a CUDA GPU" in err and "--tiny" in err


def test_host_syncs_are_not_invented_on_cpu() -> None:
    out = count_host_syncs(lambda: torch.ones(3).sum().item(), torch.device("cpu"))
    assert out["count"] is None and "not countable" in out["how"]


def test_sync_model_counts_what_would_synchronize_on_cuda() -> None:
    grad = torch.ones(4)
    host = torch.ones(4)

    def work() -> None:
        total = grad.square().sum()  # stays on the device: no sync
        scale = torch.full((), 2.0, device=grad.device)  # a fill kernel: no sync
        torch.tensor(3.0, device=grad.device)  # blocking host-to-device copy: 1
        (total * scale).cpu()  # device-to-host: 1
        int(grad.sum())  # device-to-host: 1
        float(host.sum())  # a host tensor: no sync
        host.to(grad.device)  # blocking host-to-device copy: 1

    out = model_host_syncs(work, [grad])
    assert out["count"] == 4 and "modelled" in out["how"]
    kinds = [site.split(":")[0] for site in out["sites"]]
    assert kinds == [
        "blocking host-to-device (torch.tensor(..., device=...))",
        "device-to-host (cpu)",
        "device-to-host (__int__)",
        "blocking host-to-device (.to(device))",
    ]
    assert all("test_bench_gpu.py" in site for site in out["sites"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    params[0].grad = torch.ones(3)
    torch_clip = model_host_syncs(
        lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True), [params[0].grad]
    )
    assert torch_clip["count"] == 0


def test_cpu_clip_step_bench_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import clip_step

    report = clip_step.main(["--tiny", "--runs", "2", "--warmup", "0", "--no-collectives", "--device", "cpu"])
    (case,) = report["clip_step"]
    assert list(case["methods"]) == expected_methods()
    assert all(r["ratio"] > 0 and r["floor_ratio"] > 0 for r in case["methods"].values())
    assert any("only 2 rounds" in w for w in case["warnings"])
    assert "/ torch (median of rounds)" in capsys.readouterr().out


def test_profile_clip_tiny_lists_the_operators_of_every_method() -> None:
    from bench import profile_clip

    result = profile_clip.main(["--tiny", "--calls", "1", "--top", "3", "--device", "cpu"])
    assert list(result["methods"]) == expected_methods()
    for rows in result["methods"].values():
        assert 1 <= len(rows) <= 3
        assert all(r["op"] for r in rows)
        assert all(r["self_ms_per_step"] >= 0 and r["calls_per_step"] > 0 for r in rows)
