"""Bad flags and data fail early with messages that name the value; the vLLM backend without vLLM."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from eval.backends import BackendUnavailableError, load_backend
from eval.backends.vllm import VllmBackend
from eval.config import BackendOptions, SamplingConfig
from eval.dataset import spread_indices
from eval.run import main


def _base(model: Path, data: Path, out: Path) -> list[str]:
    return ["--model", str(model), "--data", str(data), "--out", str(out), "--backend", "hf"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "math"], "unknown --task 'math'; allowed: gsm8k, knights_knaves"),
        (
            ["--task", "gsm8k", "--method", "loose"],
            "--method 'loose' for task gsm8k: allowed strict, flexible",
        ),
        (["--task", "knights_knaves", "--method", "strict"], "single scorer"),
        (["--task", "gsm8k", "--backend", "tgi"], "unknown --backend 'tgi'; allowed: hf, vllm"),
        (["--task", "gsm8k", "--n", "4"], "greedy decoding gives 4 identical samples"),
        (["--task", "gsm8k", "--top-p", "0"], "--top-p 0.0: must lie in (0, 1]"),
        (["--task", "gsm8k", "--dtype", "fp8"], "--dtype 'fp8': allowed auto, float32"),
        (["--task", "gsm8k", "--labels", "a,b"], "names 2 label(s) for 1 models"),
    ],
)
def test_bad_flags_are_usage_errors_naming_the_value(
    tmp_path: Path, extra: list[str], message: str, capsys
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*_base(tmp_path, tmp_path, tmp_path), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_data_errors_name_the_path(
    tiny_model: Path, gsm8k_dir: Path, kk_dir: Path, tmp_path: Path, capsys
) -> None:
    assert main([*_base(tiny_model, tmp_path, tmp_path / "o"), "--task", "gsm8k"]) == 1
    assert f"--data {tmp_path}: no test.parquet in that directory" in capsys.readouterr().err
    assert main([*_base(tiny_model, kk_dir, tmp_path / "o"), "--task", "gsm8k"]) == 1
    assert "data_source 'knights_knaves' is not a gsm8k source" in capsys.readouterr().err
    missing = tmp_path / "nope"
    assert main([*_base(missing, gsm8k_dir, tmp_path / "o"), "--task", "gsm8k"]) == 1
    assert f"--model {missing}: no such directory" in capsys.readouterr().err


def test_spread_indices_cover_the_split_evenly() -> None:
    assert spread_indices(10, None) == list(range(10))
    assert spread_indices(10, 20) == list(range(10))
    assert spread_indices(10, 5) == [0, 2, 4, 6, 8]
    assert spread_indices(500, 5) == [0, 100, 200, 300, 400]


def test_vllm_backend_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(BackendUnavailableError, match=r"pip install -e '\.\[gpu\]'.*--backend hf"):
        load_backend("vllm", tmp_path, None, BackendOptions())


def test_vllm_error_reaches_the_command_line(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Path, gsm8k_dir: Path, tmp_path: Path, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    args = ["--model", str(tiny_model), "--data", str(gsm8k_dir), "--out", str(tmp_path), "--task", "gsm8k"]
    assert main([*args, "--backend", "vllm"]) == 1
    assert "pip install -e '.[gpu]'" in capsys.readouterr().err


class _FakeOutput:
    def __init__(self, text: str, token_ids: list[int], finish_reason: str) -> None:
        self.text, self.token_ids, self.finish_reason = text, token_ids, finish_reason


def test_vllm_backend_passes_token_ids_and_explicit_sampling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, object] = {}

    class LLM:
        def __init__(self, **kwargs: object) -> None:
            seen["llm"] = kwargs

        def generate(self, requests: list[dict], params: dict, use_tqdm: bool) -> list[types.SimpleNamespace]:
            seen["requests"], seen["params"] = requests, params
            outputs = [_FakeOutput("a", [5, 6], "stop"), _FakeOutput("b", [7, 8, 9], "length")]
            return [types.SimpleNamespace(outputs=outputs[: params["n"]]) for _ in requests]

    fake = types.ModuleType("vllm")
    fake.LLM = LLM
    fake.SamplingParams = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", fake)

    backend = VllmBackend(tmp_path, BackendOptions(tensor_parallel_size=2, max_model_len=4096), seed=3)
    assert seen["llm"] == {
        "model": str(tmp_path),
        "seed": 3,
        "dtype": "auto",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.9,
        "max_model_len": 4096,
    }
    out = backend.generate(
        [[1, 2], [3]], SamplingConfig(n=2, temperature=0.6, top_p=0.9, max_new_tokens=9, seed=4)
    )
    assert seen["requests"] == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    assert seen["params"] == {
        "n": 2,
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": -1,
        "repetition_penalty": 1.0,
        "max_tokens": 9,
        "seed": 4,
        "skip_special_tokens": True,
    }
    assert [[(c.text, c.num_tokens, c.truncated) for c in s] for s in out] == [
        [("a", 2, False), ("b", 3, True)]
    ] * 2
    greedy = backend.sampling_params(SamplingConfig(top_p=0.5))
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and greedy["seed"] is None
    backend.close()
