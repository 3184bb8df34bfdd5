"""Where refusal-lens keeps what it builds (the cache) and finds what it reads (the data).

- :func:`cache_dir`: converted models, self-distilled answers, aligned models, streamed
  residuals. ``$REFUSAL_LENS_CACHE``, else ``$XDG_CACHE_HOME/refusal-lens`` (``~/.cache``).
- :func:`data_dir`: the public benchmark files (XSTest, AdvBench, JailbreakBench, HarmBench,
  Alpaca, OR-Bench) under their usual file names (``prompts.loaders.BENCHMARK_FILES``).
  ``$REFUSAL_LENS_DATA``, else ``$XDG_DATA_HOME/refusal-lens`` (``~/.local/share``); the CLI's
  ``--data`` sets it for one command. A benchmark that is not there is fetched from the
  dataset hub by name when the machine is online.

Neither depends on the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_PLACEHOLDER = "$REFUSAL_LENS_CACHE"  # how artifacts record paths inside the cache
DATA_ENV = "REFUSAL_LENS_DATA"


def cache_dir() -> Path:
    """The user cache folder: ``$REFUSAL_LENS_CACHE`` or ``$XDG_CACHE_HOME/refusal-lens``."""
    if env := os.environ.get("REFUSAL_LENS_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "refusal-lens"


def data_dir() -> Path:
    """The benchmark data folder: ``$REFUSAL_LENS_DATA`` or ``$XDG_DATA_HOME/refusal-lens``."""
    if env := os.environ.get(DATA_ENV):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "refusal-lens"
