"""Fixtures for the test tiers (see tests/README.md).

- fast tier: tiny random models of three HF architectures (Llama, Qwen2, Gemma2), built offline;
- model tier (``-m model``): the bundled SmolLM2-135M-Instruct, and Qwen2.5-Coder-0.5B-Instruct
  (aligned by its makers);
- slow tier (``-m slow``, left out by default): the full-size reproductions.

``pytest`` runs on two workers (``-n 2 --dist loadfile`` in ``pyproject.toml``), each with one
torch thread. Every file's tests run on one worker, in order: the notebooks (which share one
organism, trained by the first) take one worker, and the other files share the other.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import FAMILIES, save_tiny_model

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one thread each, in this process and in the CLI, script and
    # notebook processes it starts (two threads on a busy core can be tenfold slower)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def tier(item) -> str:
    """slow, model or fast: the tier a test belongs to (tests/README.md)."""
    return next((t for t in ("slow", "model") if item.get_closest_marker(t)), "fast")


# The longest files first, each on a worker of its own (xdist hands each worker one file, then
# a second): the notebooks, which share one organism, and the slow tier's two runs.
FIRST = ("test_notebooks.py", "test_run_quick.py", "test_run_bundled.py")


def pytest_collection_modifyitems(config, items):
    """The files of ``FIRST`` before the others (``--dist loadfile --no-loadscope-reorder``
    keeps this order when it hands out files). Each test records its tier (a JUnit property,
    for scripts/test_times.py)."""
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else 3)
    for item in items:
        item.user_properties.append(("tier", tier(item)))


# The benchmark files of this checkout's workspace: the one place the test suite names them.
# An explicit REFUSAL_LENS_DATA wins; subprocesses (CLI, notebooks, scripts) inherit it.
os.environ.setdefault(
    "REFUSAL_LENS_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
SHARED_DATA = Path(os.environ["REFUSAL_LENS_DATA"])


USER_CACHE: list[Path] = []  # the cache in force before the private one (for notebooks)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests write answers, residuals and models to a private cache; only converted GGUF
    models (``models/``) are shared with the user's cache, so the bundled one converts once."""
    from refusal_lens.models import cache_dir

    USER_CACHE.append(cache_dir())
    shared_models = cache_dir() / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    private = tmp_path_factory.mktemp("cache")
    (private / "models").symlink_to(shared_models, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFUSAL_LENS_CACHE", str(private))
        yield private


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {fam: save_tiny_model(fam, root / fam) for fam in FAMILIES}


@pytest.fixture
def no_template_dir(tiny_dirs, tmp_path) -> Path:
    """A copy of the tiny Llama model folder whose tokenizer has no chat template (a base LM)."""
    import json
    import shutil

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_dirs["llama"], folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session", params=sorted(FAMILIES))
def tiny(request, tiny_dirs):
    """A loaded tiny model of each family in turn."""
    from refusal_lens.models import load_model

    return load_model(str(tiny_dirs[request.param]), device="cpu")


@pytest.fixture(scope="session")
def tiny_llama(tiny_dirs):
    from refusal_lens.models import load_model

    return load_model(str(tiny_dirs["llama"]), device="cpu")


@pytest.fixture(scope="session")
def smollm():
    from refusal_lens.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def qwen():
    from refusal_lens.models import load_model

    return load_model("qwen2.5-coder-0.5b", device="cpu")


@pytest.fixture(scope="session", params=["smollm", pytest.param("qwen", marks=pytest.mark.slow)])
def bundled(request):
    """Each bundled real chat model in turn. Qwen's copy of these checks is in the slow tier:
    the tiny Qwen2 model covers its architecture on every commit."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"The public benchmark files are expected at {SHARED_DATA}; set REFUSAL_LENS_DATA "
            "to the folder that holds them."
        )
    return SHARED_DATA
