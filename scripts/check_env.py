"""Check that the installed packages are exactly the ones requirements.lock names.

    python scripts/check_env.py            # exit 1 and say how to fix it on any mismatch

setup.sh runs it after installing; tests/test_environment.py runs it in CI. torch is installed
by setup.sh on its own (a CUDA build on a GPU machine is kept), so only its release is checked.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
TORCH_RELEASE = "2.13.0"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: Path) -> dict[str, str]:
    """``{package: version}`` from a pip-compile lock (hash and comment lines skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        if match := PIN.match(line.strip()):
            pins[canonical(match[1])] = match[2]
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def mismatches(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per locked package that is missing or at another version."""
    out = []
    for name, version in sorted(pins.items()):
        if name not in have:
            out.append(f"{name}: locked {version}, not installed")
        elif have[name] != version:
            out.append(f"{name}: locked {version}, installed {have[name]}")
    torch = have.get("torch", "")
    if torch.split("+")[0] != TORCH_RELEASE:
        out.append(f"torch: setup pins {TORCH_RELEASE}, installed {torch or 'nothing'}")
    return out


def main() -> int:
    pins = {**locked(ROOT / "requirements.lock"), **locked(ROOT / "requirements-models.txt")}
    problems = mismatches(pins, installed())
    if problems:
        print("The environment does not match requirements.lock:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print(
            "Fix: rebuild it from the lock with `rm -rf .venv && bash scripts/setup.sh`; to move "
            "to newer versions on purpose, refresh the lock with `bash scripts/lock.sh`.",
            file=sys.stderr,
        )
        return 1
    print(f"Environment matches requirements.lock ({len(pins)} packages).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
