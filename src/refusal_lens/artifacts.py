"""Artifact I/O at the edges: atomic writes and a streaming safetensors writer.

Every file refusal-lens writes goes to a temporary sibling first and is renamed into place
only when it is complete, so an interrupted run never leaves a half-written artifact.
Residual tensors can be larger than memory, so :class:`StreamingSafetensorsWriter` writes the
safetensors header for the full shape up front and then appends rows as they are computed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refusal_lens.errors import OutputError, RefusalLensError
from refusal_lens.locations import CACHE_PLACEHOLDER, cache_dir

_DTYPES = {torch.float32: ("F32", np.float32), torch.float16: ("F16", np.float16)}
_CODES = {code: np_dtype for code, np_dtype in _DTYPES.values()}
ARTIFACT_FORMAT = 1  # bumped when a saved layout changes incompatibly


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


@contextlib.contextmanager
def output_errors(path: Path) -> Iterator[None]:
    """Turn a full disk or an unwritable folder met while writing ``path`` into an
    :class:`OutputError` that names the fix (wrap it around the cleanup of temporaries)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise OutputError(
                f"Out of disk space while writing {path} ({exc.strerror}); nothing was left "
                "behind. Free some space, or write to another disk, and run again.",
                exc.errno,
            ) from exc
        if exc.errno in _NOT_WRITABLE:
            raise OutputError(
                f"Cannot write {path}: {exc.strerror} (a read-only or protected folder). "
                "Choose another output folder (--out), or make this one writable.",
                exc.errno,
            ) from exc
        raise


def check_folder(folder: Path) -> None:
    """Raise unless ``folder`` is a folder or can be made one (no file in the way)."""
    for path in (folder, *folder.parents):
        if path.is_dir():
            return
        if path.exists():
            where = "" if path == folder else f", so {folder} cannot be made there"
            raise RefusalLensError(
                f"{path} is a file{where}; pass a folder to save the artifact in (--out DIR)."
            )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    check_folder(path.parent)
    with output_errors(path), _staged(path) as tmp_path:
        yield tmp_path
        os.replace(tmp_path, path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; rename it onto ``path`` only on success.

    For artifacts that *are* a folder (a model directory). ``marker`` is a file the writer
    always puts in it: an existing folder without it holds something else, and is never
    replaced (saving never deletes files it did not write).
    """
    path = Path(path)
    check_folder(path)
    if path.exists() and any(path.iterdir()) and not (path / marker).is_file():
        raise RefusalLensError(
            f"{path} already holds files that refusal-lens did not write there as a {marker} "
            "folder; it will not replace them. Choose another output folder."
        )
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())
        try:
            yield tmp
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


Writer = Callable[[Path], None]


def save_artifact(folder: str | os.PathLike, files: dict[str, Writer]) -> Path:
    """Write a stage result's own files into ``folder``; every other file there is kept.

    ``files`` maps each file name (a module constant of the stage) to a function that writes
    it at the path it is given. All files are written to temporary siblings first and renamed
    into place only when every one succeeded; the last one (by convention the JSON metadata
    that :func:`read_meta` checks) is renamed last, so a reader never sees new metadata
    beside old tensors.
    """
    folder = Path(folder)
    check_folder(folder)
    with output_errors(folder), contextlib.ExitStack() as stack:
        temps = {}
        for name, write in files.items():
            temps[name] = stack.enter_context(_staged(folder / name))
            write(temps[name])
        for name, tmp in temps.items():
            os.replace(tmp, folder / name)
    return folder


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())
    try:
        yield tmp_path
    finally:
        tmp_path.unlink(missing_ok=True)


def json_writer(data: Any) -> Writer:
    """A :func:`save_artifact` writer for indented JSON (paths made portable)."""
    text = json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n"
    return lambda path: path.write_text(text)


def jsonl_writer(rows: list[Any]) -> Writer:
    """A :func:`save_artifact` writer for one JSON object per line. Rows are records of free
    text (prompts, answers), so strings are written verbatim, never rewritten as paths."""
    plain = [asdict(r) if is_dataclass(r) and not isinstance(r, type) else r for r in rows]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in plain)
    return lambda path: path.write_text(text, encoding="utf-8")


def safetensors_writer(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Writer:
    """A :func:`save_artifact` writer for a dict of tensors, with optional string ``metadata``
    in the file's header (what makes the file readable on its own)."""
    from safetensors.torch import save

    plain = {k: v.contiguous() for k, v in tensors.items()}
    return lambda path: Path(path).write_bytes(canonical_safetensors(save(plain, metadata)))


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its JSON header's keys sorted. safetensors writes
    the metadata from a hash map whose order changes from process to process, so the same
    tensors and metadata would give different bytes in each run; the tensors' offsets are
    relative to the data after the header, so only the header changes."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8 : 8 + length]), sort_keys=True, separators=(",", ":"))
    encoded = header.encode()
    encoded += b" " * (-len(encoded) % 8)  # the data stays 8-byte aligned, as safetensors keeps it
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + length :]


def artifact_file(folder: str | os.PathLike, name: str, meta_name: str, fix: str) -> Path:
    """File ``name`` of the artifact whose metadata ``meta_name`` was found in ``folder``;
    a clear error naming ``fix`` when it is missing (a folder edited by hand)."""
    path = Path(folder) / name
    if not path.is_file():
        raise RefusalLensError(f"{folder} has {meta_name} but not {name}; {fix}")
    return path


def save_tensor_artifact(
    folder: str | os.PathLike,
    names: tuple[str, str],
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> Path:
    """A result of tensors plus JSON metadata: ``names`` = (tensor file, metadata file)."""
    return save_artifact(
        folder, {names[0]: safetensors_writer(tensors), names[1]: json_writer(meta)}
    )


def load_tensor_artifact(
    folder: str | os.PathLike, names: tuple[str, str], kind: str, fix: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The metadata and tensors :func:`save_tensor_artifact` wrote; ``fix`` says how to
    remake a missing tensor file."""
    meta = read_meta(folder, names[1], kind)
    return meta, load_safetensors(artifact_file(folder, names[0], names[1], fix), fix)


def artifact_meta(kind: str, config: Any = None, **fields: Any) -> dict[str, Any]:
    """The metadata every saved stage result carries: its kind, format and config."""
    meta: dict[str, Any] = {"kind": kind, "format": ARTIFACT_FORMAT}
    if config is not None:
        meta["config"] = to_jsonable(config)
    return meta | fields


def read_meta(folder: str | os.PathLike, name: str, kind: str) -> dict[str, Any]:
    """Read and check the metadata file ``name`` of a ``kind`` artifact in ``folder``."""
    path = Path(folder) / name
    if not path.is_file():
        raise RefusalLensError(
            f"{folder} holds no {kind} artifact ({name} is missing). Pass the folder that the "
            f"{kind} stage saved into, or run that stage first."
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"{path} is not valid JSON ({exc}); save the artifact again."
        raise RefusalLensError(msg) from None
    if not isinstance(meta, dict) or meta.get("kind", kind) != kind:
        found = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise RefusalLensError(
            f"{path} holds a {found} artifact, not a {kind} one. Pass the folder that the "
            f"{kind} stage saved into."
        )
    version = meta.get("format", ARTIFACT_FORMAT)
    if not isinstance(version, int) or isinstance(version, bool):
        raise RefusalLensError(
            f"{path} has format {version!r}, not a format number: it was edited. Save the "
            "artifact again."
        )
    if version > ARTIFACT_FORMAT:
        raise RefusalLensError(
            f"{path} was written by a newer refusal-lens (format {meta['format']}); upgrade."
        )
    return meta


def portable_path(text: str) -> str:
    """An absolute path as artifacts record it: inside the cache as ``$REFUSAL_LENS_CACHE/…``
    (``models.resolve_spec`` reads it back), inside the working folder relative to it, and
    anything else unchanged. Other strings pass through (also after a ``kind:`` prefix)."""
    prefix, sep, rest = text.partition(":") if ":/" in text else ("", "", text)
    if not rest.startswith("/"):
        return text
    path = Path(rest)
    cache = cache_dir().absolute()
    if path == cache or cache in path.parents:
        rest = CACHE_PLACEHOLDER + "/" + path.relative_to(cache).as_posix()
    elif Path.cwd() in path.parents:
        rest = path.relative_to(Path.cwd()).as_posix()
    return prefix + sep + rest


def local_path(text: str) -> Path:
    """Read back a path that :func:`portable_path` recorded (the cache placeholder expanded)."""
    if text.startswith(CACHE_PLACEHOLDER + "/"):
        return cache_dir() / text.removeprefix(CACHE_PLACEHOLDER + "/")
    return Path(text)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, dtypes and tuples to plain JSON values; paths made portable."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, str | Path):
        return portable_path(str(obj))
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")


class StreamingSafetensorsWriter:
    """Write one tensor of known shape to a ``.safetensors`` file, a slice of rows at a time.

    Rows (the first dimension) are written in order with :meth:`write` or in any order with
    :meth:`write_row`; the file appears at
    ``path`` only after :meth:`close` has checked that every row was written. Use it as a
    context manager: an exception inside the block removes the temporary file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        name: str,
        shape: tuple[int, ...],
        dtype: torch.dtype = torch.float32,
        metadata: dict[str, str] | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise RefusalLensError(f"Streaming supports {list(_DTYPES)}, not {dtype}.")
        self.path, self.name, self.shape, self.dtype = Path(path), name, tuple(shape), dtype
        self._written = np.zeros(self.shape[0], dtype=bool)
        self._next = 0
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        try:
            self._file = open(tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
            self._data_start = self._write_header(metadata)
        except BaseException as exc:  # e.g. a full disk: no temporary file is left behind
            if hasattr(self, "_file"):
                with contextlib.suppress(OSError):
                    self._file.close()
            if not self._ctx.__exit__(type(exc), exc, exc.__traceback__):
                raise

    def _write_header(self, metadata: dict[str, str] | None) -> int:
        """Write the header for the full shape; return the offset of the data section."""
        code, np_dtype = _DTYPES[self.dtype]
        n_bytes = int(np.prod(self.shape)) * np.dtype(np_dtype).itemsize
        header = {
            self.name: {"dtype": code, "shape": list(self.shape), "data_offsets": [0, n_bytes]}
        }
        if metadata:
            header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._file.truncate(8 + len(raw) + n_bytes)  # sparse until rows arrive
        return 8 + len(raw)

    def write(self, rows: torch.Tensor) -> None:
        """Append ``rows`` (shape ``[n, *shape[1:]]``) after the last row written."""
        start = self._next
        for k in range(rows.shape[0]):
            self.write_row(start + k, rows[k])

    def write_row(self, index: int, row: torch.Tensor) -> None:
        """Write one row at ``index`` (rows may come in any order, each exactly once)."""
        if tuple(row.shape) != self.shape[1:]:
            raise RefusalLensError(f"A row of shape {tuple(row.shape)} does not fit {self.shape}.")
        if not 0 <= index < self.shape[0] or self._written[index]:
            raise RefusalLensError(f"Row {index} is out of range or was already written.")
        data = row.detach().to("cpu", self.dtype).contiguous().numpy().tobytes()
        with output_errors(self.path):  # the temporary file goes in abort() (__exit__)
            self._file.seek(self._data_start + index * len(data))
            self._file.write(data)
        self._written[index] = True
        self._next = index + 1

    @property
    def rows_written(self) -> int:
        return int(self._written.sum())

    def close(self) -> None:
        """Finish the file and move it into place; fails if rows are missing."""
        with output_errors(self.path):
            try:
                self._file.close()
            except OSError:
                self.abort()
                raise
        if self.rows_written != self.shape[0]:
            missing = self.shape[0] - self.rows_written
            self.abort()
            raise RefusalLensError(
                f"{missing} of {self.shape[0]} rows were never written to {self.path}; "
                "the partial file was removed."
            )
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the temporary file; nothing appears at ``path``."""
        with contextlib.suppress(OSError):  # a full disk can fail the final flush too
            self._file.close()
        with contextlib.suppress(Exception):
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> StreamingSafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


_REMAKE = "write it again (run the command that made it once more)."


def read_safetensors_header(
    path: str | os.PathLike, fix: str = _REMAKE
) -> tuple[dict[str, Any], int]:
    """Return the JSON header of a safetensors file and the byte offset of its data; a clear
    error naming ``fix`` when the file is cut short or its header is not safetensors."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        text = f.read(n) if 0 <= n < path.stat().st_size else b""
    try:
        header = json.loads(text)
        end = max(
            (int(e["data_offsets"][1]) for k, e in header.items() if k != "__metadata__"),
            default=0,
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        header, end = None, 0
    if not isinstance(header, dict) or path.stat().st_size < 8 + n + end:
        raise RefusalLensError(
            f"{path} is not a complete safetensors file: it was cut short (an interrupted copy "
            f"or a full disk) or edited; {fix}"
        )
    return header, 8 + n


def load_safetensors(path: str | os.PathLike, fix: str = _REMAKE) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a clear error naming ``fix`` when it is damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path, fix)
    try:
        return load_file(path)
    except SafetensorError as exc:
        raise RefusalLensError(
            f"{path} is not a readable safetensors file ({exc}); {fix}"
        ) from None


def load_tensor_mmap(path: str | os.PathLike, name: str) -> torch.Tensor:
    """Memory-map one tensor of a safetensors file (no copy; pages load on access)."""
    header, offset = read_safetensors_header(path)
    if name not in header:
        raise RefusalLensError(f"{path} holds no tensor named {name!r}: {sorted(header)}")
    entry = header[name]
    array = np.memmap(
        path,
        dtype=_CODES[entry["dtype"]],
        mode="r",
        offset=offset + entry["data_offsets"][0],
        shape=tuple(entry["shape"]),
    )
    with warnings.catch_warnings():  # read-only memmap: torch warns about writability
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)
