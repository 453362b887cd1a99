"""Checks that run before Ray (or torchrun workers) start: a bad setting fails in seconds, naming the key.

Pure: it takes the composed config as a plain mapping (``OmegaConf.to_container(cfg, resolve=True)``) and
the environment, and never imports verl, Ray or vLLM, so every entry point uses the same checks:

    from aggc_rl.preflight import preflight_rl
    preflight_rl(config, os.environ)   # raises PreflightError listing every problem

What is checked (docs/configuration.md, "What is checked before Ray starts"):

* the model path (``actor_rollout_ref.model.path``; ``tokenizer_path``; the critic's when a critic runs):
  an existing directory with a ``config.json``, or a well-formed hub id, which must be in the local cache
  when ``HF_HUB_OFFLINE`` is set;
* the data files (``data.train_files``, ``data.val_files``): exist, non-empty, readable, with the columns
  verl needs (``data.prompt_key``, ``data.reward_fn_key``, ``reward_model``);
* the rows: a ``reward_model`` with a non-null ``ground_truth``, and with our reward router, a known
  ``data_source`` and a ground truth its task can read (GSM8K: a number; K&K: the solution lines), with the
  first bad row indices and the count; prompts non-empty (first rows);
* the reward function: the file exists, the name is in it, and with our router, ``reward_kwargs`` names and
  the GSM8K ``method`` are known (``math_verify`` needs its package);
* the attention implementation: off the CPU platform, verl's default ``flash_attention_2`` needs ``flash_attn``
  to be importable (:mod:`aggc_rl.preflight.attention`; a ``kind=missing`` problem, exit 1).
* the ``hf_cpu`` rollout's settings (``rollout.engine_kwargs.hf_cpu``, ``rollout.max_num_seqs``), when it is the
  rollout.

``kind=value`` problems are wrong whatever is on disk; ``kind=files`` ones depend on files that a dry run
(``--cfg job``) may not have made yet, so :func:`split_dry_run` lets such a run warn about those instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aggc_rl.preflight.attention import check_attention
from aggc_rl.preflight.data import (
    MAX_ROWS_CHECKED,
    PROMPT_ROWS_CHECKED,
    DataRequirements,
    check_data_files,
)
from aggc_rl.preflight.model import check_model_path, is_offline
from aggc_rl.preflight.problems import FILES, MISSING, VALUE, PreflightError, Problem, raise_if_any
from aggc_rl.preflight.values import check_hf_cpu_rollout

__all__ = [
    "FILES",
    "MAX_ROWS_CHECKED",
    "MISSING",
    "PROMPT_ROWS_CHECKED",
    "VALUE",
    "DataRequirements",
    "PreflightError",
    "Problem",
    "check_attention",
    "check_data_files",
    "check_model_path",
    "check_rl",
    "check_sft",
    "is_offline",
    "messages_requirements",
    "preflight_rl",
    "preflight_sft",
    "rl_requirements",
    "split_dry_run",
]

REWARD_MODEL = "reward_model"
GROUND_TRUTH = "ground_truth"
MAKE_DATA = (
    "Make the data with python -m aggc_rl.data.gsm8k --out DIR or python -m aggc_rl.data.knights_knaves --out DIR "
    "(verl's row schema: prompt, data_source, reward_model.ground_truth)."
)


def get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; ``default`` when any part is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def our_reward_file() -> Path:
    import aggc_rl.rewards

    return Path(aggc_rl.rewards.__file__).resolve()


# -- the RL rows -------------------------------------------------------------------------------------------


def _prompt_check(prompt_key: str):
    def check(row: Mapping[str, Any]) -> str | None:
        prompt = row.get(prompt_key)
        if prompt is None:
            return f"{prompt_key} is null"
        if isinstance(prompt, list | tuple):
            if not prompt:
                return f"{prompt_key} is an empty list of messages"
            if not all(isinstance(m, Mapping) and "content" in m for m in prompt):
                return f"{prompt_key} is not chat messages ([{{'role': ..., 'content': ...}}])"
        elif isinstance(prompt, str) and not prompt.strip():
            return f"{prompt_key} is empty"
        return None

    return check


def _reward_row_check(data_source_key: str, router: bool):
    from aggc_rl import rewards

    def check(row: Mapping[str, Any]) -> str | None:
        data_source = row.get(data_source_key)
        holder = row.get(REWARD_MODEL)
        if holder is None:
            return f"{REWARD_MODEL} is null"  # verl reads reward_model["ground_truth"] of every row
        if not isinstance(holder, Mapping):
            return f"{REWARD_MODEL} is a {type(holder).__name__}, not a struct with {GROUND_TRUTH}"
        if GROUND_TRUTH not in holder:
            return f"{REWARD_MODEL} has no {GROUND_TRUTH}"
        if holder[GROUND_TRUTH] is None:
            return f"{REWARD_MODEL}.{GROUND_TRUTH} is null"
        if not isinstance(data_source, str) or not data_source:
            return f"{data_source_key} is {data_source!r}, not a name"
        if router:
            return rewards.ground_truth_problem(data_source, holder[GROUND_TRUTH])
        return None

    return check


def rl_requirements(prompt_key: str = "prompt", data_source_key: str = "data_source", router: bool = True):
    """What verl's RL trainer needs of a data file; ``router``: rows are scored by aggc_rl.rewards."""
    return DataRequirements(
        columns=(prompt_key, data_source_key, REWARD_MODEL),
        row_check=_reward_row_check(data_source_key, router),
        checked_columns=(data_source_key, REWARD_MODEL),
        head_columns=(prompt_key,),
        head_check=_prompt_check(prompt_key),
        how_to_make=MAKE_DATA,
    )


def messages_requirements(messages_key: str = "messages") -> DataRequirements:
    """What verl's multi-turn SFT dataset needs: a ``messages`` column of chat messages."""
    return DataRequirements(
        columns=(messages_key,),
        head_columns=(messages_key,),
        head_check=_prompt_check(messages_key),
        how_to_make=f"SFT data is a parquet with a {messages_key!r} column of chat messages.",
        suffixes=(".parquet",),  # verl's MultiTurnSFTDataset reads parquet only
    )


# -- the reward function -----------------------------------------------------------------------------------


def check_reward(config: Mapping[str, Any]) -> tuple[list[Problem], bool]:
    """Problems of ``reward.custom_reward_function``, and whether rows are scored by our router."""
    base = "reward.custom_reward_function"
    path = get(config, f"{base}.path")
    name = get(config, f"{base}.name", "compute_score")
    kwargs = get(config, f"{base}.reward_kwargs") or {}
    if not path:
        return [], False  # verl's default_compute_score; rows get the structural checks only
    file = Path(str(path)).expanduser()
    if not file.is_file():
        return [
            Problem(
                f"{base}.path",
                path,
                "no such file",
                "Give the reward function's .py file (docs/datasets-and-rewards.md).",
            )
        ], False
    if file.resolve() != our_reward_file():
        return [], False
    from aggc_rl import rewards
    from aggc_rl.rewards import gsm8k, math_verify_sandbox

    problems = []
    if not callable(getattr(rewards, str(name), None)) or str(name).startswith("_"):
        problems.append(
            Problem(f"{base}.name", name, f"{file} has no such function", "Use compute_score.", VALUE)
        )
    if not isinstance(kwargs, Mapping):
        return [*problems, Problem(f"{base}.reward_kwargs", kwargs, "not a mapping", "", VALUE)], True
    for key in sorted(set(kwargs) - rewards.KNOWN_KWARGS - rewards.IGNORED_KWARGS):
        problems.append(
            Problem(
                f"{base}.reward_kwargs.{key}",
                kwargs[key],
                "no scorer takes this argument",
                f"Allowed: {', '.join(sorted(rewards.KNOWN_KWARGS))}.",
                VALUE,
            )
        )
    method = kwargs.get("method", "strict")
    if method not in gsm8k.METHODS:
        problems.append(
            Problem(
                f"{base}.reward_kwargs.method",
                method,
                "unknown GSM8K scoring method",
                f"Allowed: {', '.join(gsm8k.METHODS)}.",
                VALUE,
            )
        )
    elif method == "math_verify":
        try:
            math_verify_sandbox.require_math_verify()
        except ImportError as err:
            problems.append(Problem(f"{base}.reward_kwargs.method", method, str(err), "", VALUE))
    return problems, True


# -- whole configs -----------------------------------------------------------------------------------------


def check_rl(config: Mapping[str, Any], env: Mapping[str, str]) -> list[Problem]:
    """Every problem of a composed RL config (``python -m aggc_rl.train``), without raising."""
    problems = []
    model = "actor_rollout_ref.model"
    problems += check_model_path(f"{model}.path", get(config, f"{model}.path"), env)
    if get(config, f"{model}.tokenizer_path"):
        problems += check_model_path(f"{model}.tokenizer_path", get(config, f"{model}.tokenizer_path"), env)
    critic = get(config, "critic.enable") or get(config, "algorithm.adv_estimator") == "gae"
    if critic and get(config, "critic.model.path") != get(config, f"{model}.path"):
        problems += check_model_path("critic.model.path", get(config, "critic.model.path"), env)
    reward_problems, router = check_reward(config)
    problems += reward_problems
    requirements = rl_requirements(
        prompt_key=get(config, "data.prompt_key", "prompt") or "prompt",
        data_source_key=get(config, "data.reward_fn_key", "data_source") or "data_source",
        router=router,
    )
    for key in ("data.train_files", "data.val_files"):
        problems += check_data_files(key, get(config, key), requirements)
    problems += check_attention(
        model,
        get(config, model),
        env,
        alternative=f"+{model}.override_config.attn_implementation=sdpa (the RL scripts: ATTN=sdpa)",
    )
    problems += check_hf_cpu_rollout(get(config, "actor_rollout_ref.rollout") or {})
    return problems


def check_sft(config: Mapping[str, Any], env: Mapping[str, str]) -> list[Problem]:
    """Every problem of a composed SFT config (verl's sft_trainer_engine): model and messages data."""
    problems = check_model_path("model.path", get(config, "model.path"), env)
    if get(config, "model.tokenizer_path"):
        problems += check_model_path("model.tokenizer_path", get(config, "model.tokenizer_path"), env)
    requirements = messages_requirements(get(config, "data.messages_key", "messages") or "messages")
    problems += check_data_files("data.train_files", get(config, "data.train_files"), requirements)
    problems += check_data_files(
        "data.val_files", get(config, "data.val_files"), requirements, required=False
    )
    problems += check_attention(
        "model",
        get(config, "model"),
        env,
        alternative="+model.override_config.attn_implementation=sdpa (the SFT scripts: ATTN=sdpa)",
    )
    return problems


def split_dry_run(problems: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    """(value problems, file problems): a dry run fails on the first and warns about the second."""
    return [p for p in problems if p.kind == VALUE], [p for p in problems if p.kind != VALUE]


def preflight_rl(config: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Raise :class:`PreflightError` listing every problem of an RL config."""
    raise_if_any(check_rl(config, env), "the RL run")


def preflight_sft(config: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Raise :class:`PreflightError` listing every problem of an SFT config."""
    raise_if_any(check_sft(config, env), "the SFT run")
