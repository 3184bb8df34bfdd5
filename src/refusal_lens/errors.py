"""User-facing errors: every message says what went wrong and what to do about it."""

from __future__ import annotations


class RefusalLensError(ValueError):
    """Bad input or environment, with a message that names the fix."""


class ModelSpecError(RefusalLensError):
    """A model spec that cannot be resolved to weights on this machine."""


class PromptError(RefusalLensError):
    """A prompt or prompt set that cannot be formatted or run."""
