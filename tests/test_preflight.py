"""aggc_rl.preflight as functions: model paths, data files, rows and reward settings, on small real files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import aggc_rl.rewards as rewards
from aggc_rl.data import gsm8k, knights_knaves
from aggc_rl.data.parquet_rows import read_rows, write_rows
from aggc_rl.preflight import (
    VALUE,
    PreflightError,
    check_data_files,
    check_model_path,
    check_rl,
    check_sft,
    preflight_rl,
    rl_requirements,
    split_dry_run,
)
from aggc_rl.preflight import data as data_module

GSM8K_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
KEY = "data.train_files"


@pytest.fixture(scope="module")
def kk_rows(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("kk")
    assert knights_knaves.main(["--out", str(out), "--people", "2", "--train", "12", "--test", "2"]) == 0
    return read_rows(out / "train.parquet")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    (path / "config.json").write_text("{}")
    return path


def gsm8k_rows(n: int = 6) -> list[dict]:
    return [gsm8k.build_row(f"q{i}", f"work\n#### {i + 1}", "train", i) for i in range(n)]


def write(rows: list[dict], path: Path) -> str:
    write_rows(rows, path)
    return str(path)


#: PyTorch's attention: these configs pass the attention check on any machine (tests/test_preflight_attention.py).
SDPA = {"attn_implementation": "sdpa"}


def rl_config(model: Path, train: str, val: str, **reward_kwargs) -> dict:
    return {
        "actor_rollout_ref": {"model": {"path": str(model), "override_config": SDPA}},
        "data": {
            "train_files": train,
            "val_files": val,
            "prompt_key": "prompt",
            "reward_fn_key": "data_source",
        },
        "reward": {
            "custom_reward_function": {
                "path": rewards.__file__,
                "name": "compute_score",
                "reward_kwargs": reward_kwargs,
            }
        },
    }


def problems_text(problems) -> str:
    return "\n".join(str(p) for p in problems)


# -- model paths ---------------------------------------------------------------------------------------------


def test_an_existing_model_directory_and_a_hub_id_pass(model_dir):
    assert check_model_path("m", str(model_dir), {}) == []
    assert check_model_path("m", "Qwen/Qwen2.5-0.5B-Instruct", {}) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/nonexistent/model", "no such directory, and not a hub id either"),
        ("~/models/x/y", "not a hub id"),
        ("bad name", "not a hub id"),
        ("", "no model is set"),
        (None, "no model is set"),
    ],
)
def test_a_path_that_is_neither_a_directory_nor_a_hub_id_is_refused(value, message):
    (problem,) = check_model_path("actor_rollout_ref.model.path", value, {})
    assert message in str(problem)
    assert str(problem).startswith(f"actor_rollout_ref.model.path={value!r}")


def test_a_directory_without_config_json_and_a_file_are_refused(tmp_path):
    (problem,) = check_model_path("m", str(tmp_path), {})
    assert "holds no config.json" in str(problem)
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    (problem,) = check_model_path("m", str(file), {})
    assert "is a file, not a model directory" in str(problem)


def test_a_missing_relative_path_under_an_existing_directory_reads_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (problem,) = check_model_path("m", "outputs/model", {})
    assert "./outputs exists" in str(problem)


def test_offline_a_hub_id_must_be_in_the_local_cache(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    (problem,) = check_model_path("m", "org/model", env)
    assert "HF_HUB_OFFLINE is set" in str(problem) and str(tmp_path) in str(problem)
    snapshot = tmp_path / "models--org--model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert check_model_path("m", "org/model", env) == []
    assert check_model_path("m", "org/other", {"HF_HUB_CACHE": str(tmp_path)}) == []  # online: not checked


# -- data files ------------------------------------------------------------------------------------------------


def test_good_knights_knaves_and_gsm8k_files_pass(tmp_path, kk_rows):
    requirements = rl_requirements()
    assert check_data_files(KEY, write(kk_rows, tmp_path / "kk.parquet"), requirements) == []
    assert check_data_files(KEY, [write(gsm8k_rows(), tmp_path / "g.parquet")], requirements) == []


def test_missing_empty_directory_foreign_and_rowless_files_are_refused(tmp_path, kk_rows):
    requirements = rl_requirements()
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    rowless = tmp_path / "rowless.parquet"
    pq.write_table(pa.Table.from_pylist(kk_rows).slice(0, 0), rowless)
    cases = {
        str(tmp_path / "missing.parquet"): "no such file",
        str(empty): "the file is empty (0 bytes)",
        str(tmp_path): "is a directory",
        str(tmp_path / "data.csv"): "verl reads only .parquet, .json, .jsonl",
        str(garbage): "cannot be read",
        str(rowless): "the file holds no rows",
    }
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    for value, message in cases.items():
        (problem,) = check_data_files(KEY, value, requirements)
        assert message in str(problem), value
        assert str(problem).startswith(f"{KEY}={value!r}")
        assert "python -m aggc_rl.data" in str(problem)  # what to do
    (problem,) = check_data_files(KEY, None, requirements)
    assert problem.kind == VALUE and "no data file is set" in str(problem)


def test_a_file_without_reward_model_names_the_missing_column(tmp_path, kk_rows):
    rows = [{k: v for k, v in r.items() if k != "reward_model"} for r in kk_rows]
    (problem,) = check_data_files(KEY, write(rows, tmp_path / "x.parquet"), rl_requirements())
    assert "lacks the column(s) reward_model" in str(problem) and "it has: data_source" in str(problem)


def test_bad_rows_are_counted_by_kind_with_their_first_indices(tmp_path, kk_rows):
    rows = [dict(r) for r in kk_rows]
    for i in (1, 3, 4, 6, 7, 8, 10):  # 7 rows: more than the 5 indices shown
        rows[i]["reward_model"] = None
    rows[2]["reward_model"] = {"style": "rule", "ground_truth": None}
    rows[5]["data_source"] = "openai/gsm8k_v2"
    rows[9]["reward_model"] = {"style": "rule", "ground_truth": "Zoey is nice"}
    problems = check_data_files(KEY, write(rows, tmp_path / "bad.parquet"), rl_requirements())
    text = problems_text(problems)
    assert len(problems) == 4, text
    assert "7 bad row(s) of 12 rows: reward_model is null" in text and "(rows 1, 3, 4, 6, 7, ...)" in text
    assert "1 bad row(s) of 12 rows: reward_model.ground_truth is null (rows 2)" in text
    assert "unknown data_source 'openai/gsm8k_v2'" in text and "(rows 5)" in text
    assert "not in the solution format" in text and "row 9: 'Zoey is nice'" in text


def test_gsm8k_ground_truth_must_be_a_number(tmp_path):
    rows = gsm8k_rows()
    rows[3]["reward_model"] = {"style": "rule", "ground_truth": "eighteen"}
    (problem,) = check_data_files(KEY, write(rows, tmp_path / "g.parquet"), rl_requirements())
    assert "the ground truth is not a number (rows 3; row 3: 'eighteen')" in str(problem)


def test_null_and_empty_prompts_are_refused(tmp_path):
    rows = gsm8k_rows()
    rows[0]["prompt"] = None
    rows[4]["prompt"] = []
    text = problems_text(check_data_files(KEY, write(rows, tmp_path / "g.parquet"), rl_requirements()))
    assert "prompt is null (rows 0)" in text and "prompt is an empty list of messages (rows 4)" in text


def test_another_reward_function_gets_the_structural_checks_only(tmp_path):
    rows = gsm8k_rows()
    rows[1]["data_source"] = "my/own_task"
    rows[2]["reward_model"] = {"style": "rule", "ground_truth": None}
    value = write(rows, tmp_path / "g.parquet")
    (problem,) = check_data_files(KEY, value, rl_requirements(router=False))
    assert "reward_model.ground_truth is null (rows 2)" in str(problem)


def test_a_large_file_is_sampled_by_row_groups_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_ROWS_CHECKED", 20)
    rows = gsm8k_rows(100)
    rows[0]["reward_model"] = None  # in the first row group: always checked
    rows[99]["reward_model"] = None  # in the last row group: always checked
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10)
    (problem,) = check_data_files(KEY, str(path), rl_requirements())
    assert "2 bad row(s) of 20 of 100 rows checked (a sample): reward_model is null (rows 0, 99)" in str(
        problem
    )


def test_jsonl_data_is_read_too(tmp_path):
    rows = gsm8k_rows()
    rows[2]["reward_model"] = None
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (problem,) = check_data_files(KEY, str(path), rl_requirements())
    assert "reward_model is null (rows 2)" in str(problem)


# -- whole configs ---------------------------------------------------------------------------------------------


def test_a_good_rl_config_passes_and_every_problem_is_listed(tmp_path, kk_rows, model_dir):
    train, val = write(kk_rows, tmp_path / "train.parquet"), write(kk_rows[:2], tmp_path / "val.parquet")
    assert check_rl(rl_config(model_dir, train, val), {}) == []
    bad = rl_config(Path("/nonexistent/model"), str(tmp_path / "nope.parquet"), val, methd="flexible")
    with pytest.raises(PreflightError) as err:
        preflight_rl(bad, {})
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "actor_rollout_ref.model.path='/nonexistent/model'" in message
    assert "data.train_files=" in message and "no such file" in message
    assert (
        "reward.custom_reward_function.reward_kwargs.methd='flexible': no scorer takes this argument"
        in message
    )


def test_reward_settings_are_value_problems(tmp_path, kk_rows, model_dir):
    train = write(kk_rows, tmp_path / "train.parquet")
    config = rl_config(model_dir, train, train, method="exact")
    config["reward"]["custom_reward_function"]["name"] = "compute_scores"
    values, files = split_dry_run(check_rl(config, {}))
    assert files == []
    text = problems_text(values)
    assert "reward_kwargs.method='exact': unknown GSM8K scoring method. Allowed: strict, flexible" in text
    assert "custom_reward_function.name='compute_scores'" in text
    config["reward"]["custom_reward_function"] = {"path": str(tmp_path / "r.py"), "name": "f"}
    (problem,) = check_rl(config, {})
    assert "custom_reward_function.path" in str(problem) and "no such file" in str(problem)


def test_dry_run_split_keeps_file_problems_apart(tmp_path, model_dir):
    config = rl_config(model_dir, str(tmp_path / "train.parquet"), str(tmp_path / "val.parquet"), methd=1)
    values, files = split_dry_run(check_rl(config, {}))
    assert [p.key for p in values] == ["reward.custom_reward_function.reward_kwargs.methd"]
    assert [p.key for p in files] == ["data.train_files", "data.val_files"]


def test_sft_data_needs_a_messages_column(tmp_path, model_dir):
    good = write([{"messages": [{"role": "user", "content": "hi"}]}] * 3, tmp_path / "sft.parquet")
    config = {
        "model": {"path": str(model_dir), "override_config": SDPA},
        "data": {"train_files": good, "val_files": None},
    }
    assert check_sft(config, {}) == []
    config["data"]["train_files"] = write(gsm8k_rows(), tmp_path / "rl.parquet")
    (problem,) = check_sft(config, {})
    assert "lacks the column(s) messages" in str(problem)


def test_the_real_gsm8k_test_split_passes_in_well_under_a_second_per_file(tmp_path, model_dir):
    if not GSM8K_TEST.exists():
        pytest.skip(f"the real GSM8K test split is not at {GSM8K_TEST}")
    assert gsm8k.main(["--out", str(tmp_path), "--test-jsonl", str(GSM8K_TEST)]) == 0
    test = str(tmp_path / "test.parquet")
    started = time.perf_counter()
    assert check_rl(rl_config(model_dir, test, test), {}) == []
    assert time.perf_counter() - started < 5.0
    rows = read_rows(Path(test))
    rows[700]["reward_model"] = {"style": "rule", "ground_truth": None}
    (problem,) = check_data_files(KEY, write(rows, tmp_path / "t.parquet"), rl_requirements())
    assert f"1 bad row(s) of {len(rows)} rows: reward_model.ground_truth is null (rows 700)" in str(problem)
