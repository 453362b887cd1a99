"""The proxy policy and task: a 0.4M-parameter Qwen2 warm-started to partial skill on 2-person K&K puzzles.

A policy that can both learn and collapse in minutes on two CPU cores (issue 21, docs/proxy.md):

* Task: the lab's compact prompt (the puzzle alone) -> a short tagged answer, scored by the project's
  K&K reward (-3..3; ``acc`` is 1 when every role is right).
* Split by construction: a puzzle is *held out* when the SHA-256 of its text falls in the lowest 1/8 of the
  hash range (:func:`is_heldout`). Held-out puzzles come only from :func:`heldout_puzzles`; every puzzle for
  the warm start or for RL comes from :func:`train_puzzles`, which skips held-out ones. No seed can leak a
  held-out item into training. (2-person puzzles have only ~180 logical templates, so held-out puzzles
  share templates with training puzzles and differ in the names: "unseen items", not "unseen logic".)
* Warm start: supervised steps on training puzzles through the project's tiny builder (:mod:`aggc_rl.tiny`),
  one torch thread, cached under ``cache_root()/<key>`` where the key hashes every input
  (:class:`ProxySpec`): the same inputs give the same files and are built once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aggc_rl.data.knights_knaves import Puzzle, generate_puzzle
from aggc_rl.proxy.sampler import Sampler, chat, score, short_answer, stable_seed

#: Bump when the warm start's code changes what it writes (part of the cache key).
WARM_START_VERSION = 3
#: One puzzle in HELDOUT_DENOMINATOR is held out (by the hash of its text).
HELDOUT_DENOMINATOR = 8
#: Longest short answer: tags (4 tokens) + "Penelope is a knight, Sebastian is a knave" + EOS, with room.
RESPONSE_LENGTH = 56


def is_heldout(puzzle: Puzzle) -> bool:
    """True for the held-out split: a pure function of the puzzle's text (names and statements)."""
    digest = hashlib.sha256(b"aggc-rl proxy heldout\0" + puzzle.text.encode()).digest()
    return digest[0] < 256 // HELDOUT_DENOMINATOR


def heldout_puzzles(count: int, people: int = 2) -> list[Puzzle]:
    """The first ``count`` distinct held-out puzzles (the same list everywhere)."""
    out, seen, i = [], set(), 0
    while len(out) < count:
        p = generate_puzzle(people, seed=stable_seed("proxy-heldout", people, i) % (2**31))
        i += 1
        if is_heldout(p) and p.text not in seen:
            seen.add(p.text)
            out.append(p)
    return out


def train_puzzles(stream: str, seed: int, step: int, count: int, people: int = 2) -> list[Puzzle]:
    """``count`` training puzzles of (stream, seed, step): never held out, the same in every arm."""
    out, j = [], 0
    while len(out) < count:
        p = generate_puzzle(people, seed=stable_seed("proxy-train", stream, seed, step, j) % (2**31))
        j += 1
        if not is_heldout(p):
            out.append(p)
    return out


@dataclass(frozen=True)
class ProxySpec:
    """Every input of the warm-started proxy (its cache key)."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    people: int = 2
    warm_start_steps: int = 1200
    batch: int = 16
    lr: float = 3e-3
    seed: int = 0
    # The loss covers the prompt too (language modelling of the puzzle): the model learns the names it must
    # copy into the answer ~5x sooner. Answer tokens only: 2.6% held-out after 1,393 steps; prompt and
    # answer: 42.6% (500 held-out puzzles, one seed; docs/proxy.md).
    prompt_loss: bool = True
    # The learning rate falls linearly to 0 over the last ``decay_steps`` (constant before). At a constant lr
    # the held-out accuracy moves by ~10 points from one 100-step snapshot to the next, so a snapshot picked
    # for its score sits on a peak that any further training regresses from; the decay settles the policy.
    decay_steps: int = 400

    def key(self) -> str:
        text = json.dumps({**dataclasses.asdict(self), "version": WARM_START_VERSION}, sort_keys=True)
        return (
            f"kk{self.people}-{self.hidden_size}x{self.num_hidden_layers}-ws{self.warm_start_steps}-"
            + (hashlib.sha256(text.encode()).hexdigest()[:12])
        )


#: The proxy of the demo and the sweep.
PROXY = ProxySpec()
#: A cheap warm start for tests (format learned, little skill).
TEST_PROXY = ProxySpec(hidden_size=64, warm_start_steps=150, decay_steps=0)


def lr_factor(spec: ProxySpec, step: int) -> float:
    """The warm start's lr at ``step`` (0-based) relative to ``spec.lr``: 1, then linear to 0 over the decay."""
    decay_from = spec.warm_start_steps - spec.decay_steps
    if step < decay_from:
        return 1.0
    return max(0.0, (spec.warm_start_steps - step) / max(1, spec.decay_steps))


def cache_root() -> Path:
    """``$AGGC_RL_CACHE`` or ``~/.cache/aggc_rl``."""
    return Path(os.environ.get("AGGC_RL_CACHE", "~/.cache/aggc_rl")).expanduser() / "proxy"


def _encode(tokenizer, puzzle: Puzzle) -> list[int]:
    ids = tokenizer.apply_chat_template(chat(puzzle, compact=True), add_generation_prompt=True, tokenize=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def warm_start(spec: ProxySpec, log=print, callback=None) -> tuple[Any, Any, list[float], float]:
    """The supervised warm start of ``spec`` (clip 1.0, AdamW; the lr constant, then falling linearly to 0 over
    the last ``spec.decay_steps``); returns model,
    tokenizer, the loss per step and the wall time. One torch thread, so the result is reproducible.
    ``callback(step, model)`` runs after every step (probes of the learning curve)."""
    from aggc_rl.tiny import EOS, TinySpec, build_model, build_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tokenizer = build_tokenizer()
        tiny = TinySpec(
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_hidden_layers,
            seed=spec.seed,
        )
        model = build_model(tokenizer, tiny)
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(spec, step))
        model.train()
        losses, t0 = [], time.time()
        for step in range(spec.warm_start_steps):
            rows = []
            for p in train_puzzles("warm", spec.seed, step, spec.batch, spec.people):
                answer = tokenizer.encode(short_answer(p) + EOS, add_special_tokens=False)
                rows.append((_encode(tokenizer, p), answer))
            width = max(len(p) + len(a) for p, a in rows)
            ids = torch.full((len(rows), width), tokenizer.pad_token_id)
            labels = torch.full((len(rows), width), -100)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (p, a) in enumerate(rows):
                ids[r, : len(p) + len(a)] = torch.tensor(p + a)
                first = 0 if spec.prompt_loss else len(p)
                labels[r, first : len(p) + len(a)] = torch.tensor((p + a)[first:])
                mask[r, : len(p) + len(a)] = 1
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if callback is not None:
                callback(step + 1, model)
            if step % 250 == 0 or step == spec.warm_start_steps - 1:
                log(
                    f"  proxy warm start {step + 1}/{spec.warm_start_steps} loss {losses[-1]:.3f} "
                    f"({time.time() - t0:.0f}s)"
                )
        model.eval()
        return model, tokenizer, losses, time.time() - t0
    finally:
        torch.set_num_threads(threads)


def proxy_policy(
    spec: ProxySpec = PROXY,
    root: Path | None = None,
    eval_count: int = 1000,
    log=print,
    snapshot_every: int = 0,
) -> Path:
    """The warm-started proxy's directory (built once; ``meta.json`` says how and what it scored).

    ``snapshot_every`` > 0 also caches the warm start after every that many steps, up to where the decay
    starts, under the key of the constant-lr spec with that many steps: the data stream and the constant lr
    do not depend on the total, so those are exactly the shorter warm starts (used to pick the length;
    docs/proxy.md).
    """
    root = root or cache_root()
    path = root / spec.key()
    if (path / "meta.json").exists():
        return path
    log(f"building the proxy policy {spec.key()} ({spec.warm_start_steps} warm-start steps) in {path}")
    from aggc_rl.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    t0 = time.time()

    def save(model, steps: int, wall: float) -> Path:
        model.eval()
        # before the decay starts, the warm start after ``steps`` is the constant-lr warm start of that length
        sub = (
            spec
            if steps == spec.warm_start_steps
            else dataclasses.replace(spec, warm_start_steps=steps, decay_steps=0)
        )
        target = root / sub.key()
        if not (target / "meta.json").exists():
            _save(model, tokenizer, sub, target, wall, eval_count, log)
        model.train()
        return target

    def snapshot(step: int, model) -> None:
        if snapshot_every and step % snapshot_every == 0 and step <= spec.warm_start_steps - spec.decay_steps:
            save(model, step, time.time() - t0)

    model, _, _, wall = warm_start(spec, log, callback=snapshot)
    return save(model, spec.warm_start_steps, wall)


def _save(model, tokenizer, spec: ProxySpec, path: Path, wall: float, eval_count: int, log) -> None:
    tmp = path.with_name(path.name + f".partial{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    acc = heldout_eval(tmp, heldout_puzzles(eval_count, spec.people)) if eval_count else None
    meta = {
        "spec": dataclasses.asdict(spec),
        "key": spec.key(),
        "params": sum(p.numel() for p in model.parameters()),
        "warm_start_wall_s": wall,
        "heldout": acc,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(path)
    except OSError:  # another process built it at the same time: same inputs, same files
        import shutil

        shutil.rmtree(tmp)
    if acc is not None:
        log(
            f"  proxy {spec.key()}: held-out greedy accuracy {acc['acc']:.3f} on {acc['n']} puzzles ({wall:.0f}s)"
        )


#: A run "collapsed" when its final held-out accuracy is this far below the warm start (about three standard
#: errors of a 1,000-puzzle accuracy near 50%), or when its loss or gradient norm became non-finite.
COLLAPSE_MARGIN = 0.05


def finish_record(
    record: dict[str, Any], nonfinite: bool, evaluate_end: Callable[[], None], t0: float
) -> dict:
    """Close a proxy run's record (GRPO or SFT): the last held-out evaluation (0% for a run that turned
    non-finite), start and final accuracy, and whether it collapsed (:data:`COLLAPSE_MARGIN`)."""
    if nonfinite:
        record["evals"].append({"step": len(record["steps"]), "acc": 0.0, "reward": float("nan"), "n": 0})
    else:
        evaluate_end()
    start, final = record["evals"][0], record["evals"][-1]
    record["start_acc"] = start["acc"]
    record["final_acc"] = final["acc"]
    record["nonfinite"] = nonfinite
    record["below_start"] = final["acc"] < start["acc"]
    record["collapsed"] = nonfinite or final["acc"] < start["acc"] - COLLAPSE_MARGIN
    record["wall_s"] = time.time() - t0
    return record


def heldout_eval(
    policy: Path | Sampler, puzzles: Sequence[Puzzle], chunk: int = 250, max_new: int = RESPONSE_LENGTH
) -> dict[str, float]:
    """Greedy accuracy and mean reward on ``puzzles``, batched, in process."""
    sampler = policy if isinstance(policy, Sampler) else Sampler(policy, compact=True)
    accs, rewards = [], []
    for i in range(0, len(puzzles), chunk):
        part = puzzles[i : i + chunk]
        out = sampler.generate(sampler.encode(part), max_new, seed=None)
        r, a = score(sampler.texts(out["responses"], out["response_mask"]), [p.answer_text for p in part])
        accs.append(a)
        rewards.append(r)
    acc, reward = torch.cat(accs), torch.cat(rewards)
    return {"acc": float(acc.mean()), "reward": float(reward.mean()), "n": len(puzzles)}


def always_knight_accuracy(puzzles: Sequence[Puzzle]) -> float:
    """The accuracy of always answering "everyone is a knight" (the majority guess)."""
    return sum(all(p.solution) for p in puzzles) / len(puzzles)


def write_parquet(
    out: Path, train_count: int, val_count: int, seed: int = 0, people: int = 2
) -> tuple[Path, Path]:
    """verl parquet of the proxy's task (compact prompts): training puzzles of stream ``demo`` and the first
    ``val_count`` held-out puzzles (verl's own validation); rows as :func:`knights_knaves.build_row`."""
    from aggc_rl.data.knights_knaves import build_row
    from aggc_rl.data.parquet_rows import write_rows

    def row(puzzle: Puzzle, split: str, index: int) -> dict[str, Any]:
        return {**build_row(puzzle, split, index), "prompt": chat(puzzle, compact=True)}

    train = [row(p, "train", i) for i, p in enumerate(train_puzzles("demo", seed, 0, train_count, people))]
    val = [row(p, "test", i) for i, p in enumerate(heldout_puzzles(val_count, people))]
    write_rows(train, out / "train.parquet")
    write_rows(val, out / "test.parquet")
    return out / "train.parquet", out / "test.parquet"
