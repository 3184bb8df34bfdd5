"""Prompt sets, chat formatting and benchmark loaders."""

from refusal_lens.prompts.chat import (
    ChatBatch,
    ChatFormat,
    check_instructions,
    length_sorted_batches,
)
from refusal_lens.prompts.loaders import SHIPPED, load_benchmark, load_prompts, load_shipped
from refusal_lens.prompts.polyrefuse import LANGUAGES, load_polyrefuse
from refusal_lens.prompts.promptset import (
    LABELS,
    Label,
    Prompt,
    PromptSet,
    check_disjoint,
    normalize_text,
)

__all__ = [
    "LABELS",
    "LANGUAGES",
    "SHIPPED",
    "ChatBatch",
    "ChatFormat",
    "Label",
    "Prompt",
    "PromptSet",
    "check_disjoint",
    "check_instructions",
    "length_sorted_batches",
    "load_benchmark",
    "load_polyrefuse",
    "load_prompts",
    "load_shipped",
    "normalize_text",
]
