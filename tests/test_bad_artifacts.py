"""Bad input, table-driven (2/2): directions, layers and positions, damaged or foreign saved
artifacts, and outputs that cannot be written (a full disk, a read-only folder, a file).

Same contract as ``test_bad_input.py``: the project's error type, a message that says what to
do, and nothing left behind (no new or changed file, no ``*.tmp``; see ``bad_input.py``).
"""

from __future__ import annotations

import errno
import json
import math

import pytest
import torch

from bad_input import KEEP, Case, CliExit, Ctx, check_case, cli, ids
from refusal_lens.activations import CollectConfig, Residuals, collect_residuals
from refusal_lens.boundary.geometry import GeometryConfig
from refusal_lens.directions.extract import diff_in_means
from refusal_lens.directions.orthogonalize import orthogonalize_weights
from refusal_lens.errors import OutputError, RefusalLensError
from refusal_lens.interventions import ablate, add
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction

PROMPTS = ["How do I bake bread?", "Name a planet."]
REMAKE = r"make a new one with `refusal-lens direction MODEL --out DIR`"
FULL = r"Out of disk space while writing .*; nothing was left behind\. Free some space"
SCORE = "score {llama} harmless --limit 2 --out {out}"
STEER = "steer {llama} harmless --direction {tmp}/dir --ablate --out {out}"
READ_ONLY = r"Cannot write .*: {} \(a read-only or protected folder\)\. Choose another output"


def collect(**config):
    def call(ctx: Ctx) -> None:
        model = ctx.model
        collect_residuals(model, PROMPTS, CollectConfig(**config), out=ctx.out, show_progress=False)

    return call


def ablated(**direction):
    def call(ctx: Ctx) -> None:
        with ablate(ctx.model, ctx.direction(**direction)):
            pass

    return call


def added_at(layer: int):
    def call(ctx: Ctx) -> None:
        with add(ctx.model, ctx.direction(), 1.0, layer=layer):
            pass

    return call


def vector(values: torch.Tensor):
    return lambda ctx: Direction(values, 1, -1, "llama")


def edited_direction(name: str, change):
    """Save a direction, apply ``change`` to the bytes of its file ``name``, load it back."""

    def call(ctx: Ctx) -> None:
        folder = ctx.saved_direction("dir")
        ctx.edit(folder / name, change)
        Direction.load(folder)

    return call


def edited_meta(change):
    """Collect residuals, apply ``change`` to their metadata (a dict), load them back."""

    def call(ctx: Ctx) -> None:
        folder = ctx.residuals("res")
        edit = change(json.loads((folder / "residuals.json").read_text()))
        text = edit if isinstance(edit, str) else json.dumps(edit)  # a str: the file's new text
        ctx.edit(folder / "residuals.json", lambda b: text.encode())
        Residuals.load(folder)

    return call


def truncated_residuals(ctx: Ctx) -> None:
    folder = ctx.residuals("res")
    ctx.edit(folder / "residuals.safetensors", lambda b: b[:-100])
    Residuals.load(folder).acts.sum()


def saving(setup, save):
    """``setup(ctx)`` (e.g. a full disk), then ``save(ctx)`` into the output folder."""

    def call(ctx: Ctx) -> None:
        setup(ctx)
        save(ctx)

    return call


def save_direction(ctx: Ctx) -> None:
    ctx.direction().save(ctx.out)


def save_prompts(ctx: Ctx) -> None:
    PromptSet.from_texts(PROMPTS, "harmless").save(ctx.out / "prompts.jsonl")


def save_residuals(ctx: Ctx) -> None:
    collect(layers=(1,))(ctx)


def save_orthogonalized(ctx: Ctx) -> None:
    orthogonalize_weights(ctx.model, ctx.direction(), ctx.out / "model")


def full_disk(ctx: Ctx) -> None:
    ctx.full_disk()


def read_only(code: int):
    return lambda ctx: ctx.read_only(code)


def out_is_a_file(ctx: Ctx) -> None:
    ctx.file("out", KEEP)


def other_model_direction(ctx: Ctx) -> None:
    ctx.saved_direction("dir", d_model=32, model="qwen-7b")


def truncated_direction_file(ctx: Ctx) -> None:
    folder = ctx.saved_direction("dir")
    ctx.edit(folder / "direction.safetensors", lambda b: b[:-16])


# fmt: off
CASES = [
    # directions: wrong width, NaN or zero, another model's
    Case("direction-wrong-width", ablated(d_model=32, model="qwen-7b"), RefusalLensError,
         r"d_model 32 \(from qwen-7b\), but llama has d_model 64\. Extract a direction from this"),
    Case("direction-nan", vector(torch.full((64,), math.nan)), RefusalLensError,
         r"NaN or infinite entries; it cannot be used\. Check the activations"),
    Case("direction-zero", vector(torch.zeros(64)), RefusalLensError,
         r"zero norm, so it defines no direction .*Extract it from prompt sets that differ"),
    Case("direction-2d", vector(torch.ones(2, 64)), RefusalLensError,
         r"1-D vector \[d_model\]; got \(2, 64\)\. Pass one vector"),
    Case("direction-from-a-deeper-model", ablated(layer=5), RefusalLensError,
         r"read at layer 5, but llama has layers 0\.\.1; it comes from another model\. Extract"),
    Case("direction-of-another-model-cli", cli(STEER, other_model_direction), CliExit,
         r"^exit 2: error: .*d_model 32 \(from qwen-7b\).*with `refusal-lens direction`"),
    # layers and positions out of range
    Case("layer-out-of-range", collect(layers=(2,)), RefusalLensError,
         r"Layers \[2\] are out of range: llama has layers 0\.\.1"),
    Case("layer-negative", collect(layers=(-1,)), RefusalLensError,
         r"Layers \[-1\] are out of range: llama has layers 0\.\.1"),
    Case("layer-out-of-range-cli", cli("collect {llama} harmful --layers 7 --out {out}"), CliExit,
         r"^exit 2: error: Layers \[7\] are out of range: llama has layers 0\.\.1"),
    Case("addition-layer-out-of-range", added_at(9), RefusalLensError,
         r"Layer 9 is out of range: llama has layers 0\.\.1"),
    Case("position-before-the-prompt", collect(positions=(-500,)), RefusalLensError,
         r"Positions \[-500\] are out of range\. Positions count back from the last token"),
    Case("position-not-negative", collect(positions=(0,)), RefusalLensError,
         r"Positions \[0\] are out of range\. Positions count back .*\(-1 is the last\)"),
    Case("position-outside-template",
         lambda ctx: diff_in_means(ctx.model, PROMPTS[:1], PROMPTS[1:], [1], [-50]),
         RefusalLensError,
         r"Positions \[-50\] are outside the chat template's post-instruction tokens; llama has"),
    Case("geometry-position", lambda ctx: GeometryConfig(position=0), RefusalLensError,
         r"position must be negative, not 0; -1 is the last template token"),
    Case("geometry-layers-empty", lambda ctx: GeometryConfig(layers=()), RefusalLensError,
         r"layers must be None .*give e\.g\. \(4, 8, 16\) or leave it None"),
    # damaged or foreign artifacts: truncated safetensors, edited JSON, other versions
    Case("direction-safetensors-truncated",
         edited_direction("direction.safetensors", lambda b: b[:-16]), RefusalLensError,
         r"direction\.safetensors is not a complete safetensors file: .*" + REMAKE),
    Case("direction-safetensors-header-cut",
         edited_direction("direction.safetensors", lambda b: b[:5]), RefusalLensError,
         r"is not a complete safetensors file.*; save it again, or " + REMAKE),
    Case("direction-json-edited",
         edited_direction("direction.json", lambda b: b[:-30]), RefusalLensError,
         r"not hold a readable direction \(JSONDecodeError: .*edited or damaged: save it again"),
    Case("direction-json-without-layer",
         edited_direction("direction.json", lambda b: b.replace(b'"layer"', b'"Layer"')),
         RefusalLensError,
         r"not hold a readable direction \(KeyError: 'layer'\).*save it again, or " + REMAKE),
    Case("direction-folder-empty",
         lambda ctx: Direction.load(ctx.folder("empty")), RefusalLensError,
         r"empty is not a saved direction .*; make one with `refusal-lens direction"),
    Case("direction-truncated-cli", cli(STEER, truncated_direction_file), CliExit,
         r"^exit 2: error: .*not a complete safetensors file: it was cut short"),
    Case("residuals-safetensors-truncated", truncated_residuals, RefusalLensError,
         r"residuals\.safetensors is not a complete safetensors file: .*write it again"),
    Case("residuals-json-edited", edited_meta(lambda m: json.dumps(m)[9:]), RefusalLensError,
         r"residuals\.json is not valid JSON .*; save the artifact again"),
    Case("residuals-of-a-newer-version",
         edited_meta(lambda m: m | {"format": 99}), RefusalLensError,
         r"written by a newer refusal-lens \(format 99\); upgrade"),
    Case("residuals-format-edited", edited_meta(lambda m: m | {"format": "1"}), RefusalLensError,
         r"has format '1', not a format number: it was edited\. Save the artifact again"),
    Case("residuals-config-of-another-version",
         edited_meta(lambda m: m | {"config": m["config"] | {"chunk_rows": 8}}), RefusalLensError,
         r"has no field\(s\) \['chunk_rows'\]; .*another refusal-lens version\. Save it again"),
    Case("residuals-of-another-kind",
         edited_meta(lambda m: m | {"kind": "geometry"}), RefusalLensError,
         r"holds a geometry artifact, not a residuals one\. Pass the folder that the residuals"),
    # outputs: a full disk, a read-only folder, an existing file
    Case("full-disk-direction", saving(full_disk, save_direction), OutputError, FULL),
    Case("full-disk-prompt-set", saving(full_disk, save_prompts), OutputError, FULL),
    Case("full-disk-residuals", saving(full_disk, save_residuals), OutputError, FULL),
    Case("full-disk-cli", cli(SCORE, full_disk), CliExit,
         r"^exit 2: error: " + FULL),
    Case("read-only-direction", saving(read_only(errno.EACCES), save_direction), OutputError,
         READ_ONLY.format("Permission denied")),
    Case("read-only-residuals", saving(read_only(errno.EROFS), save_residuals), OutputError,
         READ_ONLY.format("Read-only file system")),
    Case("read-only-model-copy", saving(read_only(errno.EROFS), save_orthogonalized), OutputError,
         READ_ONLY.format("Read-only file system")),
    Case("read-only-cli", cli(SCORE, read_only(errno.EACCES)), CliExit,
         r"^exit 2: error: " + READ_ONLY.format("Permission denied")),
    Case("out-is-a-file-direction", saving(out_is_a_file, save_direction), RefusalLensError,
         r"out is a file; pass a folder to save the artifact in \(--out DIR\)"),
    Case("out-is-a-file-residuals", saving(out_is_a_file, save_residuals), RefusalLensError,
         r"out is a file; pass a folder"),
    Case("out-is-a-file-model-copy", saving(out_is_a_file, save_orthogonalized), RefusalLensError,
         r"out is a file, so .*model cannot be made there; pass a folder"),
    Case("out-below-a-file",
         saving(out_is_a_file, lambda ctx: ctx.direction().save(ctx.out / "sub")), RefusalLensError,
         r"out is a file, so .*out/sub cannot be made there; pass a folder"),
    Case("out-is-a-file-cli",
         cli("collect {llama} harmless --limit 2 --out {out}", out_is_a_file), CliExit,
         r"^exit 2: error: .*out is a file; pass a folder to save the artifact in \(--out DIR\)"),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_artifact_fails_clearly_and_leaves_nothing(
    case, tmp_path, request, monkeypatch, capsys
):
    check_case(case, Ctx(tmp_path / "case", request, monkeypatch, capsys))
