"""Stored chat messages -> prompt token ids, through the model's own chat template as in training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eval.dataset import EvalItem


class ChatTemplateError(ValueError):
    """The tokenizer cannot render chat messages; the message says how to proceed."""


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_text(tokenizer: Any, messages: Sequence[dict[str, str]], use_chat_template: bool = True) -> str:
    """The prompt text: the chat template with the generation prompt opened, or the plain message contents.

    Without a template (``use_chat_template=False``, for base models that ship none) the contents are joined
    by blank lines, system first, so the instructions still reach the model; the numbers are then not
    comparable with a templated run.
    """
    if not use_chat_template:
        return "\n\n".join(m["content"] for m in messages)
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ChatTemplateError(
            f"the tokenizer of {name} has no chat template, so the stored chat messages cannot be rendered "
            "as in training; use a tokenizer with one (e.g. the Instruct model's, via --tokenizer), or pass "
            "--no-chat-template to feed the message contents as plain text"
        )
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)


def render_prompts(
    tokenizer: Any, items: Sequence[EvalItem], use_chat_template: bool = True
) -> list[list[int]]:
    """Token ids of every item's prompt.

    With the template, special tokens come from the template alone (``add_special_tokens=False``, so no
    second BOS); without it the tokenizer adds its usual ones.
    """
    texts = [render_text(tokenizer, item.messages, use_chat_template) for item in items]
    encoded = tokenizer(texts, add_special_tokens=not use_chat_template)["input_ids"]
    return [list(ids) for ids in encoded]
