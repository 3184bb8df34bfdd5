"""The machinery of the table-driven bad-input suites (``test_bad_input.py``: prompts, models
and settings; ``test_bad_artifacts.py``: directions, layers, saved artifacts and outputs).

A :class:`Case` makes one bad call through the Python API or the command line (:func:`cli`).
:func:`check_case` asserts the project's error type and a message that names the fix, then
that nothing was written: no file under the test's folder is new or changed (inputs made with
the :class:`Ctx` helpers are the baseline), no ``*.tmp`` is left, and every path the case
watched (e.g. a cache entry) is absent.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

KEEP = "an existing file, not a folder\n"  # content of an output path that is a file


@dataclass(frozen=True)
class Case:
    """One bad call: ``call(ctx)`` must raise ``error`` with a message matching ``match``
    (which states what to do), and leave nothing behind."""

    id: str
    call: Callable[[Ctx], Any]
    error: type[BaseException]
    match: str


class CliExit(Exception):
    """``refusal-lens`` exited: ``exit CODE: STDERR`` (stderr with rich's boxes removed)."""


@dataclass
class Ctx:
    """A test's folder, the tiny Llama model, and helpers that make bad inputs."""

    tmp: Path
    request: Any
    monkeypatch: pytest.MonkeyPatch
    capsys: Any
    watched: list[Path] = field(default_factory=list)
    baseline: dict[Path, tuple[int, int]] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        """The output folder every case writes to (it must stay empty or absent)."""
        return self.tmp / "out"

    @property
    def model(self) -> Any:
        return self.request.getfixturevalue("tiny_llama")

    @property
    def llama(self) -> Path:
        return self.request.getfixturevalue("tiny_dirs")["llama"]

    @property
    def base_lm(self) -> Path:
        """A copy of the tiny Llama folder whose tokenizer has no chat template (a base LM)."""
        return self.request.getfixturevalue("no_template_dir")

    def files(self) -> dict[Path, tuple[int, int]]:
        return {
            p: (p.stat().st_size, p.stat().st_mtime_ns)
            for p in self.tmp.rglob("*")
            if p.is_file() or p.is_symlink()
        }

    def mark(self) -> Any:
        """Everything under ``tmp`` now is input: the baseline the bad call must not touch."""
        self.baseline = self.files()

    def file(self, name: str, data: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        self.mark()
        return path

    def folder(self, name: str) -> Path:
        (self.tmp / name).mkdir(parents=True, exist_ok=True)
        self.mark()
        return self.tmp / name

    def copy_model(self, name: str, drop: Callable[[Path], bool] = lambda p: False) -> Path:
        """A copy of the tiny Llama model folder without the files ``drop`` picks."""
        import shutil

        folder = self.tmp / name
        shutil.copytree(self.llama, folder)
        for path in list(folder.iterdir()):
            if drop(path):
                path.unlink()
        self.mark()
        return folder

    def direction(self, d_model: int = 64, layer: int = 1, model: str = "llama", **kw) -> Any:
        from refusal_lens.residual_direction import Direction

        torch.manual_seed(0)
        return Direction(torch.randn(d_model), layer, -1, model, **kw)

    def saved_direction(self, name: str = "dir", **kw: Any) -> Path:
        path = self.direction(**kw).save(self.tmp / name)
        self.mark()
        return path

    def residuals(self, name: str = "res") -> Path:
        from refusal_lens.activations import CollectConfig, collect_residuals

        config = CollectConfig(layers=(1,), positions=(-1,))
        prompts = ["How do I bake bread?", "Name a planet."]
        collect_residuals(self.model, prompts, config, out=self.tmp / name, show_progress=False)
        self.mark()
        return self.tmp / name

    def edit(self, path: Path, change: Callable[[bytes], bytes]) -> Path:
        path.write_bytes(change(path.read_bytes()))
        self.mark()
        return path

    def full_disk(self) -> None:
        """Every file opened for writing under ``out`` fails with ENOSPC half-way through its
        first write, as on a full disk (``open`` is what artifacts.py and Path.write_text use;
        safetensors' own writer is native code and still writes)."""
        self._patch_open(lambda f: _FullFile(f))

    def read_only(self, code: int = errno.EROFS) -> None:
        """``out`` exists but creating a file or folder in it fails with ``code`` (EROFS, or
        EACCES), as in a read-only folder; root ignores chmod, so the failure is simulated."""
        self.out.mkdir(exist_ok=True)
        for name in ("mkstemp", "mkdtemp"):
            real = getattr(tempfile, name)

            def denied(*args: Any, _real: Any = real, dir: Any = None, **kw: Any) -> Any:
                if dir is not None and Path(dir).is_relative_to(self.out):
                    raise OSError(code, os.strerror(code), str(dir))
                return _real(*args, dir=dir, **kw)

            self.monkeypatch.setattr(tempfile, name, denied)
        self.mark()

    def _patch_open(self, wrap: Callable[[Any], Any]) -> None:
        real = io.open

        def fake(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
            f = real(file, mode, *args, **kw)
            writing = any(m in mode for m in "wax+")
            under = isinstance(file, str | os.PathLike) and Path(file).is_relative_to(self.out)
            return wrap(f) if writing and under else f

        self.monkeypatch.setattr(io, "open", fake)
        self.monkeypatch.setattr(builtins, "open", fake)

    def watch(self, path: Path) -> Path:
        """A path outside ``tmp`` that the bad call must not create."""
        self.watched.append(path)
        return path


class _FullFile:
    """A file whose writes stop half-way with ENOSPC."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        self._f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def cli(command: str, setup: Callable[[Ctx], Any] | None = None) -> Callable[[Ctx], None]:
    """A case that runs ``refusal-lens COMMAND`` (split at spaces) through
    ``refusal_lens.cli.main``, where user errors become exit code 2, after ``setup(ctx)``; it
    raises :class:`CliExit`. ``{tmp}``, ``{out}``, ``{llama}`` and ``{base_lm}`` in COMMAND
    are :class:`Ctx`'s attributes of those names."""

    def call(ctx: Ctx) -> None:
        from refusal_lens.cli import main

        if setup is not None:
            setup(ctx)
        names = ("tmp", "out", "llama", "base_lm")
        args = command.split()
        argv = [a.format(**{k: getattr(ctx, k) for k in names if f"{{{k}}}" in a}) for a in args]
        ctx.monkeypatch.setattr(sys, "argv", ["refusal-lens", *argv])
        ctx.monkeypatch.setenv("COLUMNS", "2000")  # rich: no wrapped lines
        ctx.mark()
        ctx.capsys.readouterr()
        try:
            main()
        except SystemExit as exc:
            err = " ".join(re.sub("[│╭╮╰╯─]", " ", ctx.capsys.readouterr().err).split())
            assert "Traceback" not in err, err
            raise CliExit(f"exit {exc.code}: {err}") from None

    return call


def check_case(case: Case, ctx: Ctx) -> None:
    ctx.tmp.mkdir()
    ctx.mark()
    with pytest.raises(case.error, match=case.match):
        case.call(ctx)
    ctx.monkeypatch.undo()  # the real file system again, for the checks
    after = ctx.files()
    new = sorted(str(p.relative_to(ctx.tmp)) for p in set(after) - set(ctx.baseline))
    assert not new, f"files left behind: {new}"
    changed = [str(p.relative_to(ctx.tmp)) for p in ctx.baseline if after.get(p) != ctx.baseline[p]]
    assert not changed, f"inputs changed or removed: {changed}"
    assert not [p for p in ctx.tmp.rglob("*.tmp")], "a temporary file or folder was left"
    if ctx.out.is_dir():
        assert not any(ctx.out.iterdir()), f"{ctx.out} is not empty"
    elif ctx.out.exists():
        assert ctx.out.read_text() == KEEP, "the file given as output folder was changed"
    for path in ctx.watched:
        assert not path.exists(), f"{path} was created"


def writes(name: str, data: str | bytes) -> Callable[[Ctx], Path]:
    """A ``setup`` that writes the input file ``name``."""
    return lambda ctx: ctx.file(name, data)


def ids(cases: list[Case]) -> list[str]:
    names = [c.id for c in cases]
    assert len(names) == len(set(names)), "case ids must be unique"
    return names
