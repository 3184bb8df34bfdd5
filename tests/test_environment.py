"""The installed environment is the locked one, and every module imports on its own."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import refusal_lens

ROOT = Path(__file__).resolve().parents[1]


def check_env():
    spec = importlib.util.spec_from_file_location("check_env", ROOT / "scripts" / "check_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_environment_matches_the_lock():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_env.py")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_a_mismatch_is_reported_with_the_fix(capsys, monkeypatch):
    env = check_env()
    pins = {"transformers": "5.23.0", "gguf": "0.19.0"}
    have = {"transformers": "5.24.0", "torch": env.TORCH_RELEASE + "+cpu"}
    assert env.mismatches(pins, have) == [
        "gguf: locked 0.19.0, not installed",
        "transformers: locked 5.23.0, installed 5.24.0",
    ]
    monkeypatch.setattr(env, "installed", lambda: have)
    monkeypatch.setattr(env, "locked", lambda path: pins)
    assert env.main() == 1
    err = capsys.readouterr().err
    assert "transformers: locked 5.23.0, installed 5.24.0" in err
    assert "bash scripts/setup.sh" in err and "scripts/lock.sh" in err


def test_the_lock_keeps_the_known_bad_transformers_out():
    locked = check_env().locked(ROOT / "requirements.lock")
    release = tuple(int(x) for x in locked["transformers"].split(".")[:2])
    assert release < (5, 24)  # 5.24.0 empties the bridge's KV cache (see generation.py)
    assert "transformers>=5.9,<5.24" in (ROOT / "pyproject.toml").read_text()


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Import cycles only show when a module is the first one imported."""
    names = [
        m.name
        for m in pkgutil.walk_packages(refusal_lens.__path__, "refusal_lens.")
        if m.name != "refusal_lens.__main__"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('refusal_lens')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_public_name_resolves_to_its_stage():
    """The lazy export map names real objects, stage entry points included."""
    import refusal_lens

    for name in refusal_lens.__all__:
        if name != "__version__":
            assert getattr(refusal_lens, name) is not None, name
    for entry in (
        "find_direction",
        "DirectionConfig",
        "steer",
        "align",
        "AlignConfig",
        "evaluate",
        "EvalConfig",
        "rass",
        "sanitize",
        "fit_harm_judge",
    ):
        assert entry in refusal_lens.__all__


# The package's layers in data-flow order: a module may import from its own layer or an
# earlier one, never from a later one (docs/development/layout.md).
LAYERS = (
    # __version__: the root package's constant (refusal_lens/__init__.py imports nothing eagerly)
    (
        "__version__",
        "errors",
        "locations",
        "configs",
        "artifacts",
        "cache",
        "progress",
        "plots",
        "stats",
    ),
    ("verdicts", "languages"),
    ("models", "prompts"),
    ("hooks",),
    ("activations", "generation", "scoring", "calibration", "llm_judge", "probes"),
    ("residual_direction", "interventions"),
    ("evaluation",),
    ("alignment",),
    ("directions",),
    ("attribution",),
    ("triggers",),
    ("boundary",),
    ("mitigation",),
    ("pipeline",),
    ("cli", "__main__"),
)


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__main__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("refusal_lens"):
            if node.module == "refusal_lens":
                found |= {f"refusal_lens.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("refusal_lens.")}
    return found


def test_no_module_imports_from_a_later_stage():
    root = Path(refusal_lens.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module == "refusal_lens":
            continue  # the lazy export map names everything
        upward += [(module, t) for t in _imports(path) if _layer(t) > _layer(module)]
    assert not upward, f"upward imports: {upward}"
