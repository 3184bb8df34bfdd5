"""The stage registry: one record per stage, from which the run's folders, dependencies, keys
and the CLI's stage lists are derived; a new stage is one record and one function."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from refusal_lens.errors import RefusalLensError
from refusal_lens.pipeline import REGISTRY, RunConfig, Stage
from refusal_lens.pipeline.registry import (
    COMMON_FIELDS,
    DIRECTION,
    GEOMETRY,
    ORGANISM,
    Registry,
)
from refusal_lens.pipeline.runner import RUN_FILE, STAGE_FILE, stage_key

SRC = Path(__file__).resolve().parents[1] / "src" / "refusal_lens"


def noop(ctx) -> None:
    pass


@pytest.mark.parametrize(
    "stages, message",
    [
        ((Stage("a", "A", noop), Stage("a", "A again", noop)), "'a' is registered twice"),
        ((Stage("a", "A", noop, depends=("nope",)),), "'a' depends on 'nope', which is not"),
        (
            (Stage("a", "A", noop, depends=("b",)), Stage("b", "B", noop, depends=("a",))),
            "a → b → a is a cycle",
        ),
        ((Stage("a", "A", noop, depends=("a",)),), "a → a is a cycle"),
        (
            (Stage("a", "A", noop, depends=("b",)), Stage("b", "B", noop)),
            "'a' depends on 'b', which does not run before it: register it earlier",
        ),
    ],
)
def test_a_registry_with_a_duplicate_a_missing_dependency_or_a_cycle_names_the_stage(
    stages, message
):
    with pytest.raises(RefusalLensError, match=re.escape(message)):
        Registry(stages)


def test_every_table_of_the_run_is_derived_from_the_registry():
    from refusal_lens.cli.run import MITIGATE_STAGES, STAGE_LIST

    names = REGISTRY.names
    assert [REGISTRY.folder(n) for n in names] == [f"{i:02d}-{n}" for i, n in enumerate(names)]
    assert STAGE_LIST.split(", ") == [s.name for s in REGISTRY if not s.optional]
    assert RunConfig().stages == REGISTRY.default
    # `mitigate` runs the search and, transitively, what it reads, and the always-run stages
    assert MITIGATE_STAGES[-1] == "search" and "interventions" not in MITIGATE_STAGES
    for name in MITIGATE_STAGES:
        assert set(REGISTRY[name].depends) <= set(MITIGATE_STAGES)
    inserted = REGISTRY.with_stage(Stage("toy", "Toy", noop, depends=("direction",)), "direction")
    assert inserted.folder("toy") == "04-toy" and inserted.folder("search") == "11-search"


def test_the_key_sees_every_field_of_every_library_config_a_stage_uses():
    """Changing any field of a stage's settings (as a changed default would) changes its key;
    a changed run setting changes only the keys of the stages that read it."""
    config = RunConfig.preset(quick=True)
    changed = 0
    for stage in REGISTRY:
        settings = stage.settings_of(config)
        key = stage_key(config, stage, settings, {})
        for name, setting in settings.items():
            for f in dataclasses.fields(setting):
                value = getattr(setting, f.name)
                other = _perturbed(value)
                if other is None:
                    continue
                moved = {**settings, name: _replace_unchecked(setting, f.name, other)}
                assert stage_key(config, stage, moved, {}) != key, (stage.name, name, f.name)
                changed += 1
    assert changed > 60  # every stage's configs, not a few


def test_every_run_setting_changes_the_keys_of_exactly_the_stages_that_read_it():
    """Each field of each stage's settings (``RunConfig.<stage>``) and each run-level
    setting, changed alone, changes the keys of the stages that read it (its own stage, the
    stages naming it in ``Stage.fields``, and those whose library configs it reaches) and of
    no other."""
    config = RunConfig.preset(quick=True)

    def keys(c):
        return {s.name: stage_key(c, s, s.settings_of(c), {}) for s in REGISTRY}

    before = keys(config)
    checked = 0
    for top in dataclasses.fields(RunConfig):
        value = getattr(config, top.name)
        subs = dataclasses.fields(value) if dataclasses.is_dataclass(value) else [None]
        for sub in subs:
            name = top.name if sub is None else f"{top.name}.{sub.name}"
            old = value if sub is None else getattr(value, sub.name)
            other = _valid_change(old)
            if other is None or top.name in SELECTION:
                continue
            new = other if sub is None else _replace_unchecked(value, sub.name, other)
            changed = _replace_unchecked(config, top.name, new)
            differs = {n for n, k in keys(changed).items() if k != before[n]}
            readers = set(REGISTRY.readers(top.name)) | {
                s.name for s in REGISTRY if name in s.fields
            }
            assert differs, name  # every setting reaches some stage's key
            if sub is not None and top.name in REGISTRY:
                assert top.name in differs, name
            assert differs <= readers | _settings_readers(name), (name, differs)
            checked += 1
    assert checked > 45


# settings that choose what runs (and the model, device and dtype, changed in no key test)
SELECTION = ("model", "stages", "quick", "with_search", "device", "dtype")
ALTERNATIVES = {"lora": "full", "refusal": "margin", "occlusion": "grad_x_input"}
ALTERNATIVES |= {"substring": "score"}


def _valid_change(value):
    """Another value the settings accept (a float halved: shares stay in [0, 1])."""
    if isinstance(value, float):
        return value / 2
    if isinstance(value, str):
        return ALTERNATIVES.get(value)
    return _perturbed(value)


def _settings_readers(name: str) -> set[str]:
    """Stages whose library configs read a setting the stage does not name: the search's
    held-out sets default to the evaluation's size; the mitigations judge on the evaluation's
    sets, with its answer length."""
    if name in COMMON_FIELDS:  # the model, its dtype, the system prompt, the seed
        return set(REGISTRY.names)
    return {
        "evaluate.n": {"search", "mitigations"},
        "evaluate.sets": {"mitigations"},
        "max_new_tokens": {"mitigations"},
    }.get(name, set())


def test_a_changed_default_of_a_library_config_reruns_the_stage(monkeypatch):
    """A new default of GeometryConfig (a field RunConfig does not set) changes the keys of the
    stages that fit boundaries with it (geometry; multilingual refits its English boundary)
    and no other's."""
    from refusal_lens.boundary.geometry import GeometryConfig
    from refusal_lens.pipeline import settings

    config = RunConfig.preset(quick=True)
    before = {s.name: stage_key(config, s, s.settings_of(config), {}) for s in REGISTRY}
    field = next(f for f in dataclasses.fields(GeometryConfig) if f.name != "seed")
    default = GeometryConfig()
    new_default = _perturbed(getattr(default, field.name))

    monkeypatch.setattr(  # what an edit of the default would do
        settings,
        "GeometryConfig",
        lambda **kw: _replace_unchecked(GeometryConfig(**kw), field.name, new_default),
    )
    after = {s.name: stage_key(config, s, s.settings_of(config), {}) for s in REGISTRY}
    assert [n for n in before if before[n] != after[n]] == ["geometry", "multilingual"]


def _perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple) and value:
        return value[:-1]
    if isinstance(value, tuple):
        return (1,)
    if value is None:
        return 1
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            other = _perturbed(getattr(value, f.name))
            if other is not None:
                return _replace_unchecked(value, f.name, other)
    if isinstance(value, dict):
        return {**value, "x": "y"}
    return None


def _replace_unchecked(config, name, value):
    """A copy of a frozen config with one field set, without its validation (the key must
    see the field whatever its value)."""
    copy = object.__new__(type(config))
    for f in dataclasses.fields(config):
        object.__setattr__(copy, f.name, getattr(config, f.name))
    object.__setattr__(copy, name, value)
    return copy


def layers(ctx) -> None:
    """The toy stage: the model's depth and its refusal score on one prompt."""
    from refusal_lens.scoring import refusal_scores

    model = ctx.model()
    score = float(refusal_scores(model, ["How do I bake bread?"], show_progress=False)[0])
    (ctx.out / "toy.json").write_text(json.dumps({"n_layers": model.n_layers, "score": score}))
    ctx.write_section(text=[f"{model.n_layers} layers; refusal score {score:+.2f}."])


def reads_geometry(ctx) -> None:
    ctx.input(GEOMETRY)


def test_a_new_stage_is_one_record_and_one_function(tiny_dirs, tmp_path):
    """A toy stage registered after the direction runs in a tiny run: its folder takes its
    position, it is keyed, reused, reported, and a step reading a stage it does not list in
    depends is an error that says where to add it."""
    from refusal_lens.pipeline import run_pipeline

    toy = Stage("toy", "Toy: depth and refusal score", layers, depends=(ORGANISM.name,))
    registry = REGISTRY.with_stage(toy, after=DIRECTION.name)
    # RunConfig.preset checks stage names against the method's registry; the run against its own
    config = RunConfig.preset(quick=True, model=str(tiny_dirs["llama"])).replace(
        stages=("model", "toy")
    )
    out = tmp_path / "run"
    said: list[str] = []
    report = run_pipeline(config, out, say=said.append, registry=registry)
    record = json.loads((out / "04-toy" / "toy.json").read_text())
    assert record["n_layers"] == 2 and (out / "04-toy" / STAGE_FILE).is_file()
    assert "Toy: depth and refusal score" in report.read_text()
    run = json.loads((out / RUN_FILE).read_text())
    assert [s["name"] for s in run["stages"]][:5] == [
        "00-model",
        "01-organism",
        "02-evaluate",
        "03-direction",
        "04-toy",
    ]
    said.clear()
    run_pipeline(config, out, say=said.append, registry=registry)
    assert any("04-toy: reused" in line for line in said)

    wrong = Stage("toy", "Toy", reads_geometry, depends=(ORGANISM.name,))
    with pytest.raises(RefusalLensError, match=r"'toy' reads the result of 'geometry'.*depends"):
        run_pipeline(
            config,
            tmp_path / "wrong",
            say=said.append,
            registry=REGISTRY.with_stage(wrong, after=GEOMETRY.name),
        )


def test_no_folder_name_or_stage_name_is_written_as_a_string_outside_the_registry():
    """Folder names (``NN-stage``) appear nowhere in the source; stage folders are reached
    through the registry's records (``ctx.input(DIRECTION)``), never a string; result file
    names are constants of the registry's and the result classes' modules."""
    folder = re.compile(r"^\d\d-[a-z]+")
    files = re.compile(r"\.(json|jsonl|html)$")
    owners = {"registry.py", "records.py", "runner.py"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(SRC)
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and folder.match(text):
                found.append(f"{where}:{node.lineno} folder {text!r}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                strings = [a for a in node.args if isinstance(a, ast.Constant)]
                if node.func.attr in ("input", "require", "folder") and strings:
                    found.append(f"{where}:{node.lineno} stage {strings[0].value!r}")
        if where.parts[0] == "pipeline" and where.name not in owners:
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and files.search(node.value)
                    and "/" not in node.value
                ):
                    found.append(f"{where}:{node.lineno} file {node.value!r}")
    assert not found, "\n".join(found)
