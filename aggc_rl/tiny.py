"""``python -m aggc_rl.tiny --out DIR``: a tiny Qwen2 policy and tokenizer built locally, for CPU RL.

No downloads: the tokenizer is byte-level (all 256 bytes, no merges) plus ChatML specials and the
four reasoning tags as single tokens, with a ChatML chat template, so verl's chat-templated prompts and
the Knights-and-Knaves reward work unchanged. The model is a random Qwen2 sized for a 2-core CPU.
``--warm-start STEPS`` runs a short supervised pass on small Knights-and-Knaves puzzles (prompt ->
tagged answer), so that sampling already earns some reward and GRPO has signal from the first step.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

PAD, EOS, IM_START, IM_END = "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|im_end|>"
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Model size: small enough for CPU RL in minutes, large enough to learn a format."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    seed: int = 0
    vocab_size: int | None = None  # None: the tokenizer's size rounded up to a multiple of 8
    attn_implementation: str | None = None  # None: transformers' default


#: The smallest model with Qwen2's real parameter names and layout, for clipping tests (no tokenizer).
UNIT_SPEC = TinySpec(
    hidden_size=32,
    intermediate_size=64,
    max_position_embeddings=64,
    vocab_size=96,
    attn_implementation="eager",
)
#: What :func:`make_tiny_model_dir` saves by default: the unit model's sizes with the tiny tokenizer.
MODEL_DIR_SPEC = TinySpec(hidden_size=32, intermediate_size=64, max_position_embeddings=64)


def build_tokenizer():
    """Byte-level BPE without merges (every byte is a token) + specials, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, additional_special_tokens=list(SPECIALS[1:2])
    )
    tokenizer.add_tokens(list(TAG_TOKENS))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def qwen2_config(spec: TinySpec, tokenizer=None):
    """The ``Qwen2Config`` of ``spec``; with a tokenizer, its vocabulary and special tokens."""
    from transformers import Qwen2Config

    vocab = spec.vocab_size
    if vocab is None:
        if tokenizer is None:
            raise ValueError("TinySpec.vocab_size=None needs a tokenizer to size the vocabulary")
        vocab = 8 * math.ceil(len(tokenizer) / 8)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
    )
    if tokenizer is not None:
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.bos_token_id = None
    if spec.attn_implementation is not None:
        config._attn_implementation = spec.attn_implementation
    return config


def build_model(tokenizer, spec: TinySpec):
    """A random Qwen2 of ``spec`` (seeded); ``tokenizer`` may be None when ``spec.vocab_size`` is set."""
    from transformers import Qwen2ForCausalLM

    config = qwen2_config(spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    if tokenizer is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def tiny_qwen2(seed: int = 0, **overrides):
    """The unit-test model (:data:`UNIT_SPEC`, fields overridable) in memory."""
    return build_model(None, dataclasses.replace(UNIT_SPEC, seed=seed, **overrides))


def lm_loss(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, labels=input_ids).loss


def warm_start_examples(
    tokenizer, people: Sequence[int], count: int, seed: int
) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) pairs: a chat-templated puzzle followed by its tagged answer."""
    from aggc_rl.data.knights_knaves import SYSTEM_PROMPT, generate_puzzle

    rng = random.Random(seed)
    examples = []
    for i in range(count):
        puzzle = generate_puzzle(rng.choice(list(people)), seed=10_000_000 + seed * 100_000 + i)
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": puzzle.text}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if not isinstance(prompt, list):
            prompt = prompt["input_ids"]
        target = f"<think>short</think><answer>{puzzle.answer_text}</answer>{EOS}"
        examples.append((list(prompt) + tokenizer.encode(target, add_special_tokens=False), len(prompt)))
    return examples


def warm_start(
    model, tokenizer, steps: int, people: Sequence[int], batch_size: int = 8, lr: float = 3e-3, seed: int = 0
) -> list[float]:
    """A short supervised pass on response tokens only; returns the loss per step (printed as it goes)."""
    examples = warm_start_examples(tokenizer, people, steps * batch_size, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    t0 = time.time()
    for step in range(steps):
        batch = examples[step * batch_size : (step + 1) * batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, prompt_len) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
            attention[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % 20 == 0 or step == steps - 1:
            print(
                f"warm-start step {step + 1}/{steps}  loss {loss:.3f}  ({time.time() - t0:.0f}s)", flush=True
            )
    model.eval()
    return losses


def build(
    out: str | Path,
    spec: TinySpec = TinySpec(),
    warm_start_steps: int = 0,
    people: Sequence[int] = (2,),
    chat_template: bool = True,
) -> Path:
    """Save a tiny model of ``spec`` and the tiny tokenizer into ``out`` (loadable by ``from_pretrained``).

    ``chat_template=False`` saves the tokenizer without a template, for code paths that must cope with none.
    """
    out = Path(out)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, spec)
    if warm_start_steps > 0:
        warm_start(model, tokenizer, warm_start_steps, people, seed=spec.seed)
    if not chat_template:
        tokenizer.chat_template = None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_model_dir(path: str | Path, seed: int = 0, chat_template: bool = True, **sizes) -> str:
    """:func:`build` with :data:`MODEL_DIR_SPEC` (``sizes`` override its fields): the tests' model directory."""
    spec = dataclasses.replace(MODEL_DIR_SPEC, seed=seed, **sizes)
    return str(build(path, spec, chat_template=chat_template))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for the model and tokenizer")
    ap.add_argument("--hidden", type=int, default=TinySpec.hidden_size)
    ap.add_argument("--layers", type=int, default=TinySpec.num_hidden_layers)
    ap.add_argument(
        "--warm-start", type=int, default=0, metavar="STEPS", help="supervised steps on K&K (0: none)"
    )
    ap.add_argument("--people", type=int, nargs="+", default=[2], help="puzzle sizes for the warm start")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.hidden % TinySpec.num_attention_heads:
        ap.error(
            f"--hidden={args.hidden} must be a multiple of {TinySpec.num_attention_heads} (attention heads)"
        )
    if args.warm_start < 0:
        ap.error(f"--warm-start={args.warm_start} must be >= 0")
    spec = TinySpec(hidden_size=args.hidden, num_hidden_layers=args.layers, seed=args.seed)
    path = build(args.out, spec, args.warm_start, args.people)
    print(
        f"wrote a tiny Qwen2 ({spec.hidden_size}d x {spec.num_hidden_layers} layers) and its tokenizer to {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
