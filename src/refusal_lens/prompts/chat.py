"""Chat formatting with the model's own template, and the positions it defines.

One tokenization path is used everywhere: render each conversation to text with the
tokenizer's chat template, then tokenize that text with ``add_special_tokens=False`` (the
template already carries BOS and the role markers), left-padded. This gives exactly the ids of
``tokenizer.apply_chat_template(..., tokenize=True)``; TransformerBridge's ``to_tokens`` would
prepend a second BOS to chat-formatted text, so it is never used.

A user's text is always tokenized as text: a prompt that contains the template's control strings
(``<|im_end|>``, ``<end_of_turn>``, ``<|start_header_id|>``...) has its user part tokenized with
special-token parsing off, so it cannot forge a turn of the conversation. Prompts without such
strings are tokenized in one piece, exactly as the template's own ``tokenize=True``.

The *post-instruction* tokens (Arditi et al.) are the template tokens between the end of the
user message and the start of the answer, e.g. ``<|im_end|>\\n<|im_start|>assistant\\n``. They
are found from the template itself: the user's text is located in the rendered string and
every token that starts after it is post-instruction. With left padding they sit at the same
negative positions ``-n_post .. -1`` in every row of a batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from refusal_lens.errors import PromptError

_REFERENCE_PROMPT = "Tell me about the weather."


@dataclass
class ChatBatch:
    """A left-padded batch of chat-formatted prompts.

    Shapes: ``batch`` prompts, ``pos`` tokens (the longest prompt; shorter rows are padded on
    the left). ``user_mask`` marks the tokens of the user's own text.
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    user_mask: Bool[Tensor, "batch pos"]
    texts: list[str]

    def to(self, device: torch.device | str) -> ChatBatch:
        return ChatBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.user_mask.to(device),
            self.texts,
        )


@dataclass
class ChatFormat:
    """The model's chat template plus the choice of system prompt.

    ``system_prompt=None`` keeps what the template does on its own (some templates inject a
    default system prompt, e.g. SmolLM2 and Qwen2.5); a string, possibly empty, is sent as an
    explicit system message instead.
    """

    tokenizer: Any
    system_prompt: str | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            raise PromptError(
                f"The tokenizer {type(self.tokenizer).__name__} ({self._name()}) has no chat "
                "template, so prompts cannot be formatted as a conversation. Use an "
                "instruct/chat model, or pass chat_template= (a Jinja string or a .jinja file "
                "path) to load_model."
            )
        if not getattr(self.tokenizer, "is_fast", False):
            raise PromptError(
                "refusal-lens needs a fast (Rust) tokenizer for character offsets; load the "
                "tokenizer with use_fast=True."
            )
        self.post_instruction_ids: list[int] = self._reference_post_ids()
        decoder = getattr(self.tokenizer, "added_tokens_decoder", {})
        # the strings that the tokenizer would turn into control tokens if a user typed them
        self.control_strings: tuple[str, ...] = tuple(
            sorted({t.content for t in decoder.values() if t.special and t.content})
        )

    def _name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "") or "unnamed"

    def messages(self, instruction: str) -> list[dict[str, str]]:
        msgs = (
            []
            if self.system_prompt is None
            else [{"role": "system", "content": self.system_prompt}]
        )
        return [*msgs, {"role": "user", "content": instruction}]

    def render(self, instruction: str) -> str:
        """The full prompt text, ending with the template's generation prompt."""
        try:
            return self.tokenizer.apply_chat_template(
                self.messages(instruction), tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja2 TemplateError from raise_exception() in templates
            if self.system_prompt is not None:
                raise PromptError(
                    f"The chat template of {self._name()} rejected a system message ({exc}). "
                    "Use system_prompt=None for this model, or put the instructions in the "
                    "user message."
                ) from exc
            raise PromptError(f"The chat template of {self._name()} failed: {exc}") from exc

    def _user_span(self, rendered: str, instruction: str) -> tuple[int, int]:
        """Where the user's text sits in ``rendered``: just before the template's fixed tail
        (so a prompt that repeats template text, e.g. ``assistant``, is not mistaken for it)."""
        content = instruction.strip()
        tail = getattr(self, "_tail", None)
        if tail is not None and rendered.endswith(tail):
            end = len(rendered) - len(tail)
            kept = len(instruction) - len(instruction.rstrip())  # a template may keep it
            for e in dict.fromkeys((end, end - kept)):
                if rendered[e - len(content) : e] == content:
                    return e - len(content), e
        start = rendered.rfind(content)
        if start < 0:
            raise PromptError(
                f"The chat template changed the user text beyond stripping whitespace, so its "
                f"tokens cannot be located: {instruction[:60]!r}"
            )
        return start, start + len(content)

    def _reference_post_ids(self) -> list[int]:
        rendered = self.render(_REFERENCE_PROMPT)
        _, end = self._user_span(rendered, _REFERENCE_PROMPT)
        self._tail = rendered[end:]  # what the template writes after every user message
        enc = self.tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        n_post = sum(1 for (s, _e) in offsets if s >= end)
        if n_post == 0:
            raise PromptError(
                f"The chat template of {self._name()} leaves no tokens after the user message; "
                "post-instruction positions are undefined."
            )
        return list(ids[-n_post:])

    @property
    def n_post(self) -> int:
        """Number of post-instruction tokens (positions ``-n_post .. -1``)."""
        return len(self.post_instruction_ids)

    def has_control_strings(self, instruction: str) -> bool:
        """Whether ``instruction`` contains a string the tokenizer reads as a control token."""
        return any(c in instruction for c in self.control_strings)

    def encode(self, instruction: str, suffix: str = "") -> list[int]:
        """The ids of the rendered prompt followed by ``suffix``, the user's text as text."""
        return self._encode_row(self.render(instruction), instruction, suffix)[0]

    def _encode_row(
        self, rendered: str, instruction: str, suffix: str = ""
    ) -> tuple[list[int], list[bool]]:
        """Ids of ``rendered + suffix`` and which of them are the user's text."""
        start, end = self._user_span(rendered, instruction)
        if not self.has_control_strings(instruction):
            enc = self.tokenizer(
                rendered + suffix, add_special_tokens=False, return_offsets_mapping=True
            )
            user = [end >= e > s >= start for s, e in enc["offset_mapping"]]
            return list(enc["input_ids"]), user
        parts = [rendered[:start], rendered[start:end], rendered[end:] + suffix]
        ids = [
            self.tokenizer(part, add_special_tokens=False, split_special_tokens=(i == 1))[
                "input_ids"
            ]
            for i, part in enumerate(parts)
        ]
        user = [False] * len(ids[0]) + [True] * len(ids[1]) + [False] * len(ids[2])
        return ids[0] + ids[1] + ids[2], user

    def token_lengths(self, instructions: list[str]) -> list[int]:
        """Chat-formatted length of each prompt; rejects empty and over-long prompts."""
        check_instructions(instructions)
        lengths: list[int] = []
        for start in range(0, len(instructions), 256):  # chunks: memory stays flat in N
            texts = instructions[start : start + 256]
            chunk = [self.render(t) for t in texts]
            ids = self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
            lengths += [
                len(self._encode_row(r, t)[0]) if self.has_control_strings(t) else len(i)
                for r, t, i in zip(chunk, texts, ids, strict=True)
            ]
        self._check_lengths(lengths)
        return lengths

    def _check_lengths(self, lengths: list[int]) -> None:
        if self.max_length is None:
            return
        for i, n in enumerate(lengths):
            if n > self.max_length:
                raise PromptError(
                    f"Prompt {i} is {n} tokens once chat-formatted, longer than the model's "
                    f"context window of {self.max_length}. Shorten or drop it."
                )

    def tokenize(self, instructions: list[str]) -> ChatBatch:
        """Render and tokenize ``instructions`` into one left-padded batch."""
        check_instructions(instructions)
        rows = [self._encode_row(self.render(t), t) for t in instructions]
        self._check_lengths([len(ids) for ids, _ in rows])
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), 0 if pad is None else pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        user_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for row, (ids, user) in enumerate(rows):
            n = len(ids)
            input_ids[row, width - n :] = torch.tensor(ids)
            attention_mask[row, width - n :] = 1
            user_mask[row, width - n :] = torch.tensor(user)
            if ids[-self.n_post :] != self.post_instruction_ids:
                warnings.warn(
                    f"Prompt {row} does not end with the template's post-instruction tokens "
                    "(its last characters merged with the template); positions near the end "
                    "may be shifted for it.",
                    stacklevel=2,
                )
        return ChatBatch(input_ids, attention_mask, user_mask, list(instructions))


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding); order is restored by
    the caller, which writes each row back to its index."""
    if batch_size < 1:
        raise PromptError(f"batch_size must be at least 1, not {batch_size}.")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def check_instructions(instructions: list[str]) -> None:
    """Reject an empty list, non-strings and empty or whitespace-only prompts."""
    if len(instructions) == 0:
        raise PromptError("The prompt list is empty; pass at least one prompt.")
    for i, text in enumerate(instructions):
        if not isinstance(text, str):
            raise PromptError(f"Prompt {i} is a {type(text).__name__}, not a string.")
        if not text.strip():
            raise PromptError(f"Prompt {i} is empty; remove it or give it some text.")
