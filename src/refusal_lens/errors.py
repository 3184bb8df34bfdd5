"""User-facing errors: every message says what went wrong and what to do about it."""

from __future__ import annotations


class RefusalLensError(ValueError):
    """Bad input or environment, with a message that names the fix."""


class ModelSpecError(RefusalLensError):
    """A model spec that cannot be resolved to weights on this machine."""


class PromptError(RefusalLensError):
    """A prompt or prompt set that cannot be formatted or run."""


class OutputError(RefusalLensError, OSError):
    """An output that cannot be written: a full disk, or a read-only or protected folder.

    Also an ``OSError`` carrying the ``errno`` of the failure, so handlers that catch a full
    disk (``errno.ENOSPC``) to add their own advice still see it."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


class ModelMismatchWarning(UserWarning):
    """A direction (or other artifact) used on a model other than the one it came from, where
    the shapes fit so that nothing else would say so."""
