"""Run the refusal-lens CLI in this process and SIGKILL it at a chosen point (``test_run.py``).

    python tests/kill_at.py POINT -- run --quick --out DIR

POINT is where the process dies, with no chance to clean up (no ``finally``, no ``atexit``):

- ``alignment``: inside the organism's fine-tuning, at its third training step;
- ``residuals``: inside a streamed residual write (the geometry stage's), after ten rows are
  on disk in the temporary file;
- ``report``: inside the report's write, after half of the page is on disk.

Without POINT (``python tests/kill_at.py -- ARGS``) the command runs to its end.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(owner: Any, name: str, after: int, before_dying=None) -> None:
    """Replace ``owner.name`` so that its call number ``after + 1`` kills the process."""
    original, calls = getattr(owner, name), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            if before_dying is not None:
                before_dying(*args, **kwargs)
            die()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def arm(point: str) -> None:
    if point == "alignment":
        import refusal_lens.alignment.train as train

        kill_on_call(train, "answer_loss", after=2)
    elif point == "residuals":
        from refusal_lens.artifacts import StreamingSafetensorsWriter as Writer

        kill_on_call(Writer, "write_row", after=10, before_dying=lambda w, *_: w._file.flush())
    elif point == "report":
        original = Path.write_text

        def write_text(self: Path, data: str, *args, **kwargs):
            if self.name.startswith(".report.html."):  # the report's temporary file
                original(self, data[: len(data) // 2], *args, **kwargs)
                die()
            return original(self, data, *args, **kwargs)

        Path.write_text = write_text  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main(argv: list[str]) -> None:
    split = argv.index("--")
    points, args = argv[:split], argv[split + 1 :]
    for point in points:
        arm(point)
    from refusal_lens.cli import main as cli_main

    sys.argv = ["refusal-lens", *args]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
