"""Evaluate merged checkpoints on a test split with the training reward functions.

    python -m eval.run --model CKPT [--model CKPT2 ...] --task gsm8k|knights_knaves --backend vllm|hf \\
        --data PARQUET_OR_DIR --out DIR [--limit N] [--n K --temperature T --top-p P] [--method strict]

Per model, ``OUT/<label>/items.jsonl`` holds one scored response per line and ``OUT/<label>/summary.json``
the accuracy (Wilson 95% CI), pass@k / maj@k (K > 1), format-failure and truncation rates, mean response
length and, for Knights and Knaves, accuracy per puzzle size. ``OUT/comparison.md`` puts every model side
by side (also printed). Definitions: :mod:`eval.metrics`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aggc_rl.data.gsm8k import TEMPLATES as GSM8K_TEMPLATES
from aggc_rl.report.labels import parse_labels, safe_name, unique_labels
from eval.backends import BACKENDS, Backend, BackendUnavailableError, load_backend
from eval.backends.isolated import ISOLATED_BACKENDS, generate_here, generate_isolated
from eval.comparison import comparison_table
from eval.config import DTYPES, BackendOptions, EvalConfig, SamplingConfig
from eval.dataset import EvalItem, load_items, resolve_data_path
from eval.metrics import Summary, summarize
from eval.prompts import ChatTemplateError, render_prompts
from eval.scoring import ItemRecord, score_completions
from eval.tasks import TASKS, Task, get_task

SCORER = "aggc_rl.rewards.compute_score"
CI_METHOD = "Wilson score interval, 95%, n = number of prompts"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

BackendLoader = Callable[[str, Path, Any, BackendOptions, int], Backend]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class ModelResult:
    """One model's records, summary and output files."""

    label: str
    records: list[ItemRecord]
    summary: Summary
    items_path: Path
    summary_path: Path


def check_model(path: Path) -> None:
    """A local directory, or something that looks like a hub id (``org/name``); ValueError otherwise."""
    if path.is_dir():
        return
    if path.exists():
        raise ValueError(
            f"--model {path}: not a directory (pass the merged Hugging Face checkpoint directory)"
        )
    if not _HUB_ID.match(str(path)):
        raise ValueError(f"--model {path}: no such directory")
    log(f"note: --model {path} is not a local directory; loading it as a Hugging Face hub id")


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"could not load a tokenizer from {path} ({err}); pass --tokenizer DIR (e.g. the base model's)"
        ) from err


def summary_json(
    config: EvalConfig, label: str, model: Path, summary: Summary, timing: dict[str, float]
) -> dict[str, Any]:
    """summary.json: the numbers plus everything needed to reproduce and interpret them."""
    task = get_task(config.task)
    return {
        "label": label,
        "model": str(model),
        "task": config.task,
        "data": str(resolve_data_path(config.data)),
        "limit": config.limit,
        "backend": config.backend,
        "scorer": SCORER,
        "method": task.scorer_kwargs(config.method).get("method"),
        "chat_template": config.use_chat_template,
        "sampling": asdict(config.sampling),
        "ci_method": CI_METHOD,
        "format_failure_definition": task.format_failure_definition,
        **asdict(summary),
        "seconds": timing,
    }


def evaluate_model(
    model: Path,
    label: str,
    config: EvalConfig,
    items: Sequence[EvalItem],
    tokenizer: Any,
    backend_loader: BackendLoader = load_backend,
) -> ModelResult:
    """Generate, score, summarise and write one model's outputs."""
    task = get_task(config.task)
    sampling = config.sampling
    prompts = render_prompts(tokenizer, items, config.use_chat_template)
    # vLLM runs in a child process per model, so its GPU memory is free before the next model loads.
    generate = generate_isolated if config.backend in ISOLATED_BACKENDS else generate_here
    generated = generate(
        backend_loader,
        config.backend,
        model,
        tokenizer,
        config.options,
        sampling.seed,
        prompts,
        sampling,
        label,
    )
    started = time.perf_counter()
    records = score_completions(items, generated.completions, task, config.method)
    summary = summarize(records, task.vote_key, by_size=task.has_sizes)
    timing = {
        "load": generated.load_seconds,
        "generate": generated.generate_seconds,
        "score": time.perf_counter() - started,
    }

    folder = config.out / safe_name(label)
    folder.mkdir(parents=True, exist_ok=True)
    items_path, summary_path = folder / "items.jsonl", folder / "summary.json"
    with items_path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    summary_path.write_text(
        json.dumps(summary_json(config, label, model, summary, timing), indent=2) + "\n", encoding="utf-8"
    )
    log(
        f"[{label}] accuracy {summary.accuracy:.4f} [{summary.ci95_low:.4f}, {summary.ci95_high:.4f}], "
        f"format failures {summary.format_failure_rate:.3f}, {timing['generate']:.1f}s generating -> {folder}"
    )
    return ModelResult(label, records, summary, items_path, summary_path)


def _warn_on_mismatch(task: Task, method: str | None, items: Sequence[EvalItem]) -> None:
    """The GSM8K boxed template asks for \\boxed{}, which only math_verify reads."""
    if task.name != "gsm8k" or (method or task.default_method) == "math_verify":
        return
    boxed = GSM8K_TEMPLATES["boxed"]
    if any(boxed in m["content"] for item in items for m in item.messages):
        log(
            f"warning: the prompts ask for \\boxed{{}} but --method is {method or task.default_method!r}; "
            "use --method math_verify to read boxed answers"
        )


def run(
    config: EvalConfig, backend_loader: BackendLoader = load_backend, tokenizer_dir: Path | None = None
) -> str:
    """Evaluate every model of ``config``; returns the comparison text, also written to OUT/comparison.md."""
    task = get_task(config.task)
    task.scorer_kwargs(config.method)  # a bad --method fails before any model loads
    for model in config.models:
        check_model(model)
    items = load_items(config.data, task, config.limit)
    _warn_on_mismatch(task, config.method, items)
    results = []
    for i, (model, label) in enumerate(zip(config.models, config.labels, strict=True), start=1):
        log(f"model {i}/{len(config.models)}: {label}")
        tokenizer = load_tokenizer(tokenizer_dir or model)
        results.append(evaluate_model(model, label, config, items, tokenizer, backend_loader))
    table = comparison_table([r.label for r in results], [r.summary for r in results])
    method = task.scorer_kwargs(config.method).get("method")
    header = f"# {task.name}: {len(items)} prompts from {resolve_data_path(config.data)}"
    scorer = f"scorer: {SCORER}" + (f" (method={method})" if method else "")
    sampling = config.sampling
    decoding = (
        "greedy" if sampling.greedy else f"n={sampling.n}, T={sampling.temperature}, top_p={sampling.top_p}"
    )
    settings = f"{scorer}; {decoding}; max {sampling.max_new_tokens} new tokens; backend {config.backend}"
    text = f"{header}\n\n{settings}\n\n{table}\n"
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "comparison.md").write_text(text, encoding="utf-8")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        required=True,
        metavar="DIR",
        help="merged HF checkpoint directory; repeat for a side-by-side comparison",
    )
    parser.add_argument(
        "--labels", metavar="A,B", help="comma-separated names for the models (default: from the paths)"
    )
    parser.add_argument(
        "--tokenizer", type=Path, metavar="DIR", help="tokenizer directory when a checkpoint has none"
    )
    parser.add_argument("--task", required=True, help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--backend", default="vllm", help=f"one of: {', '.join(BACKENDS)} (default vllm)")
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="PARQUET_OR_DIR",
        help="test parquet, or the directory holding test.parquet",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument("--method", help="GSM8K scorer: strict (training default), flexible or math_verify")
    parser.add_argument("--limit", type=int, help="evaluate N prompts, evenly spaced over the split")
    parser.add_argument("--n", type=int, default=1, help="samples per prompt (default 1)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (hf backend)")
    parser.add_argument(
        "--dtype", default="auto", help=f"one of: {', '.join(DTYPES)} (auto: bf16 on GPU, fp32 on CPU)"
    )
    parser.add_argument("--device", help="hf backend device (default: cuda if available, else cpu)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm backend")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm backend")
    parser.add_argument("--max-model-len", type=int, help="vllm backend (default: the model's)")
    parser.add_argument(
        "--no-chat-template",
        action="store_true",
        help="feed message contents as plain text (models without a chat template)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """EvalConfig from parsed flags; ValueError naming the bad flag and what is allowed."""
    get_task(args.task).scorer_kwargs(args.method)
    if args.backend not in BACKENDS:
        raise ValueError(f"unknown --backend {args.backend!r}; allowed: {', '.join(BACKENDS)}")
    labels = parse_labels(args.labels, len(args.model), "models") or unique_labels(args.model)
    sampling = SamplingConfig(args.n, args.temperature, args.top_p, args.max_new_tokens, args.seed)
    options = BackendOptions(
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
    )
    return EvalConfig(
        models=tuple(args.model),
        labels=tuple(labels),
        task=args.task,
        backend=args.backend,
        data=args.data,
        out=args.out,
        method=args.method,
        limit=args.limit,
        use_chat_template=not args.no_chat_template,
        sampling=sampling,
        options=options,
    )


def main(argv: Sequence[str] | None = None, backend_loader: BackendLoader = load_backend) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    try:
        text = run(config, backend_loader, args.tokenizer)
    except (ValueError, FileNotFoundError, BackendUnavailableError, ChatTemplateError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
