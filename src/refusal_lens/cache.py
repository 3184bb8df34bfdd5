"""Cache keys that cannot go stale, and cache entries that cannot be half-read.

A cached artifact (a converted GGUF model, self-distilled answers, an aligned model) is keyed by
what determines it, never by a path string:

- the *contents* of its inputs (SHA-256 of files and of the data itself);
- the version of the recipe's code (:data:`RECIPES`: bump a recipe's number whenever a change
  would give different bytes);
- the versions of the libraries that change its numerics (:func:`library_versions`).

Each entry is written atomically with a manifest of its files' sizes and hashes
(:data:`MANIFEST_FILENAME`). :func:`verify_entry` checks it before use; an entry that fails is
removed (it lies in the cache, which refusal-lens owns) and rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from refusal_lens.artifacts import to_jsonable, write_json

log = logging.getLogger(__name__)

MANIFEST_FILENAME = "cache_manifest.json"
KEY_LENGTH = 16

# One version number per cached recipe; bump it when the recipe's code changes its output.
RECIPES: dict[str, int] = {
    "gguf-conversion": 2,
    "self-distilled-answers": 2,
    "aligned-model": 2,
}

# Libraries whose versions change the numbers a recipe produces.
NUMERIC_LIBRARIES: tuple[str, ...] = ("torch", "transformers", "transformer-lens", "peft", "gguf")

# Files of an HF model directory that determine its outputs.
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".jinja", ".txt")


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`NUMERIC_LIBRARIES` (``"absent"`` when not installed)."""
    versions = {}
    for name in NUMERIC_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def file_digest(path: str | os.PathLike, chunk: int = 2**22) -> str:
    """SHA-256 of a file's bytes, streamed (~1.5 GB/s here)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_DIR_DIGESTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over the contents of a model directory's config, weight and tokenizer files.

    Memoized per process on each file's size and modification time.
    """
    root = Path(path)
    if not root.is_dir():  # a hub id: its name is all there is to key on
        return hashlib.sha256(str(path).encode()).hexdigest()
    files = sorted(
        p
        for p in root.iterdir()
        if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES and p.name != MANIFEST_FILENAME
    )
    stat_key = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    memo = (str(root.resolve()), stat_key)
    if memo not in _DIR_DIGESTS:
        digest = hashlib.sha256()
        for p in files:
            digest.update(f"{p.name}\0{file_digest(p)}\n".encode())
        _DIR_DIGESTS[memo] = digest.hexdigest()
    return _DIR_DIGESTS[memo]


def cache_key(recipe: str, inputs: Any) -> tuple[str, dict[str, Any]]:
    """``(key, record)``: a short hex key over the recipe's version, the numeric libraries'
    versions and ``inputs`` (JSON-able, hashes of contents rather than paths), and the record
    that was hashed (written beside the entry so a person can see why a key changed)."""
    if recipe not in RECIPES:
        raise KeyError(f"Unknown cache recipe {recipe!r}; add it to RECIPES.")
    record = {
        "recipe": recipe,
        "recipe_version": RECIPES[recipe],
        "libraries": library_versions(),
        "inputs": to_jsonable(inputs),
    }
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH], record


def write_manifest(folder: Path, record: dict[str, Any]) -> None:
    """Record every file's size and hash in ``folder`` (call it last, before publishing)."""
    files = {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILENAME
    }
    write_json(folder / MANIFEST_FILENAME, {"key": record, "files": files})


def verify_entry(folder: Path) -> str | None:
    """``None`` when ``folder`` is a complete entry whose files match its manifest, else why not."""
    manifest = folder / MANIFEST_FILENAME
    if not manifest.is_file():
        return "no manifest (incomplete or written by an older version)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, not {want['bytes']}"
        if file_digest(path) != want["sha256"]:
            return f"{name} does not match its recorded hash"
    return None


def usable_entry(folder: Path) -> bool:
    """True for a verified entry; a folder that fails verification is removed (with a
    warning) so that the caller rebuilds it. Only call this on folders inside the cache."""
    if not folder.exists():
        return False
    problem = verify_entry(folder)
    if problem is None:
        return True
    log.warning("Cache entry %s is unusable (%s); rebuilding it.", folder, problem)
    shutil.rmtree(folder, ignore_errors=True)
    return False
