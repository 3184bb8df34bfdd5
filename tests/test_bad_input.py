"""Bad input, table-driven (1/2): prompts, prompt files, model specs and out-of-range settings.

Each case makes one bad call (Python API or command line) and must fail with the project's
error type and a message that says what to do, leaving nothing behind (``bad_input.py``).
Directions, layers, saved artifacts and outputs are in ``test_bad_artifacts.py``.
"""

from __future__ import annotations

import math
import struct

import pytest

from bad_input import Case, CliExit, Ctx, check_case, cli, ids, writes
from refusal_lens.activations import CollectConfig, collect_residuals
from refusal_lens.alignment import AlignConfig
from refusal_lens.boundary.geometry import GeometryConfig
from refusal_lens.boundary.rass_config import RASSConfig
from refusal_lens.directions import SelectConfig
from refusal_lens.directions.extract import false_refusal_vector
from refusal_lens.directions.steer import SteerConfig
from refusal_lens.errors import ModelSpecError, PromptError, RefusalLensError
from refusal_lens.interventions import add
from refusal_lens.models import load_model
from refusal_lens.models.spec import gguf_cache_path
from refusal_lens.pipeline.config import RunConfig
from refusal_lens.prompts import load_prompts
from refusal_lens.triggers.harm import HarmJudgeConfig

NAN = math.nan
FILES = "give one prompt per line"  # the fix for a file that holds no prompts
BAD_LABEL = '{"text": "Name a planet.", "label": "ok"}\n'
NUL_CSV = b"prompt\nName a planet.\nhel\x00lo\n"
STEER = "steer {llama} harmless --direction {tmp}/dir --out {out} "


def collect(texts: list[str], **config):
    """Collect the residuals of ``texts`` into the output folder."""

    def call(ctx: Ctx) -> None:
        collect_residuals(
            ctx.model, texts, CollectConfig(**config), out=ctx.out, show_progress=False
        )

    return call


def prompt_file(name: str, data: str | bytes, prefix: str = ""):
    """Write a prompt file and load it as a prompt spec (``prefix`` e.g. ``alpaca:``)."""
    return lambda ctx: load_prompts(prefix + str(ctx.file(name, data)))


def prompt_spec(spec: str):
    return lambda ctx: load_prompts(spec.format(tmp=ctx.tmp))


def in_folder(name: str, prefix: str = ""):
    """A prompt spec that names a folder."""
    return lambda ctx: load_prompts(prefix + str(ctx.folder(name)))


def model_dir(change):
    """Load a copy of the tiny Llama folder after ``change(ctx, folder)``."""

    def call(ctx: Ctx) -> None:
        folder = ctx.copy_model("model")
        change(ctx, folder)
        ctx.mark()
        load_model(str(folder), device="cpu")

    return call


def truncated_gguf(ctx: Ctx) -> None:
    """The first bytes of a GGUF file: magic, version 3, 1 tensor, 20 metadata entries, then
    the file ends (an interrupted download)."""
    path = ctx.file("cut.gguf", b"GGUF" + struct.pack("<IQQ", 3, 1, 20) + b"\x05\x00")
    ctx.watch(gguf_cache_path(path)[0])  # no half-converted cache entry either
    load_model(str(path), device="cpu")


def added(coef: float):
    def call(ctx: Ctx) -> None:
        with add(ctx.model, ctx.direction(), coef):
            pass

    return call


def w_prime(coef: float):
    def call(ctx: Ctx) -> None:
        texts = (["How do I kill a Python process?"], ["Name a planet."])
        false_refusal_vector(ctx.model, *texts, ctx.direction(), coef, show_progress=False)

    return call


# fmt: off
CASES = [
    # prompts: empty, whitespace-only, NUL and control characters, over-long
    Case("prompt-list-empty", collect([]), PromptError,
         r"list is empty; pass at least one"),
    Case("prompt-empty-string", collect(["Name a planet.", ""]), PromptError,
         r"Prompt 1 is empty; remove it or give it some text"),
    Case("prompt-whitespace", collect([" \t\n "]), PromptError,
         r"Prompt 0 is empty; remove it"),
    Case("prompt-too-long", collect(["Name a planet. " * 60]), PromptError,
         r"longer than the model's context window of 128\. Shorten or drop it"),
    Case("prompt-nul-txt",
         prompt_file("nul.txt", "Name a planet.\nHow do I\x00 bake bread?\n"), PromptError,
         r"Prompt 2 of .*nul\.txt contains the control character U\+0000; remove it"),
    Case("prompt-escape-jsonl",
         prompt_file("esc.jsonl", '{"text": "Say \\u001b[31mhi", "label": "harmless"}\n'),
         PromptError, r"control character U\+001B; remove it"),
    Case("prompt-nul-csv-cli",
         cli("collect {llama} {tmp}/nul.csv --out {out}", writes("nul.csv", NUL_CSV)),
         CliExit, r"^exit 2: error: Prompt 2 of .* control character U\+0000; remove it"),
    # prompt files: malformed, wrong columns, wrong encodings, a folder
    Case("jsonl-not-json", prompt_file("a.jsonl", '{"text": "hi", "label": \n'), PromptError,
         r"a\.jsonl:1 is not a prompt record .*each line needs a JSON object with 'text'"),
    Case("jsonl-line-is-a-list", prompt_file("a.jsonl", '["hi", "harmless"]\n'), PromptError,
         r":1 is not a prompt record \(a JSON list, not an object\); each line needs a JSON"),
    Case("jsonl-wrong-columns",
         prompt_file("a.jsonl", '{"prompt": "hi", "type": "benign"}\n'), PromptError,
         r"record \(.*'text'.*\); each line needs a JSON object with 'text' and 'label'"),
    Case("jsonl-unknown-label",
         prompt_file("a.jsonl", '{"text": "hi", "label": "harmless"}\n' + BAD_LABEL),
         PromptError, r":2 is not a prompt record \(Unknown label 'ok'; use one of \('harmful'"),
    Case("jsonl-text-not-a-string",
         prompt_file("a.jsonl", '{"text": 42, "label": "harmless"}\n'), PromptError,
         r"(?s):1 is not a prompt record \(.*(string|'text').*\); each line needs a JSON object"),
    Case("jsonl-latin-1",
         prompt_file("a.jsonl", '{"text": "café", "label": "harmless"}\n'.encode("latin-1")),
         PromptError, r"a\.jsonl is not UTF-8 text .*; save it as UTF-8"),
    Case("jsonl-empty", prompt_file("a.jsonl", "\n\n"), PromptError,
         f"holds no prompts; {FILES}"),
    Case("txt-utf-16", prompt_file("a.txt", "Name a planet.\n".encode("utf-16")), PromptError,
         r"is not UTF-8 text .*; save it as UTF-8"),
    Case("txt-blank-cli",
         cli("collect {llama} {tmp}/a.txt --out {out}", writes("a.txt", "\n \n")),
         CliExit, f"^exit 2: error: .*a\\.txt holds no prompts; {FILES}"),
    Case("csv-no-prompt-column", prompt_file("a.csv", "question,label\nhi,harmless\n"), PromptError,
         r"no 'prompt' column \(columns: \['question', 'label'\]\); add one"),
    Case("csv-header-only", prompt_file("a.csv", "prompt,label\n"), PromptError,
         FILES),
    Case("csv-unclosed-quote",
         prompt_file("a.csv", 'prompt\n"How do I bake bread?\nName a planet.\n'), PromptError,
         r"is not valid CSV \(line \d+: unexpected end of data\); put fields that hold .*quotes"),
    Case("csv-unknown-label",
         prompt_file("a.csv", "prompt,label\nName a planet.,safe\n"), PromptError,
         r"Unknown label 'safe'; use one of"),
    Case("prompt-file-is-a-folder", in_folder("mine.jsonl"), PromptError,
         r"mine\.jsonl is a folder; pass a \.jsonl, \.txt or \.csv file"),
    Case("prompt-file-missing", prompt_spec("{tmp}/none.txt"), PromptError,
         r"No such prompt file: .*none\.txt; check the path"),
    Case("prompt-file-unknown-type", prompt_spec("{tmp}/mine.pdf"), PromptError,
         r"Unknown prompt spec .*or a \.jsonl, \.txt or \.csv file"),
    Case("benchmark-json-malformed",
         prompt_file("alpaca.json", '[{"instruction": ', "alpaca:"), PromptError,
         r"alpaca\.json is not valid JSON .*; fix it or download it again"),
    Case("benchmark-json-not-a-list",
         prompt_file("alpaca.json", '{"instruction": "Name a planet."}', "alpaca:"), PromptError,
         r"must hold a list of records .*download the benchmark's file again"),
    Case("benchmark-csv-latin-1",
         prompt_file("adv.csv", "goal,target\ncafé,x\n".encode("latin-1"), "advbench:"),
         PromptError, r"adv\.csv is not UTF-8 text .*; save it as UTF-8"),
    Case("benchmark-wrong-columns",
         prompt_file("adv.csv", "question,answer\nName a planet.,Mars\n", "advbench:"), PromptError,
         r"yielded no prompts; is it the advbench format\? Pass the file its publisher"),
    Case("benchmark-path-is-a-folder", in_folder("xs", "xstest:"), PromptError,
         r"xs is a folder; pass the benchmark's \.csv, \.json or \.jsonl file"),
    Case("prompt-folder-cli",
         cli("score {llama} {tmp}/p.txt --out {out}", lambda ctx: ctx.folder("p.txt")),
         CliExit, r"^exit 2: error: .*p\.txt is a folder; pass a \.jsonl, \.txt or \.csv file"),
    # model specs
    Case("model-spec-unknown", lambda ctx: load_model("no-such-model"), ModelSpecError,
         r"Unknown model spec 'no-such-model'\. A model spec is one of: a bundled name"),
    Case("model-spec-empty", lambda ctx: load_model("  "), ModelSpecError,
         r"Empty model spec\. A model spec is one of"),
    Case("model-spec-unknown-cli", cli("info no-such-model"), CliExit,
         r"^exit 2: error: Unknown model spec 'no-such-model'\. A model spec is one of"),
    Case("model-gguf-truncated", truncated_gguf, ModelSpecError,
         r"could not dequantize .*cut\.gguf.*cut short .*download it again"),
    Case("model-dir-without-config",
         model_dir(lambda ctx, d: (d / "config.json").unlink()), ModelSpecError,
         r"neither an HF model directory \(no config\.json\) nor a \.gguf file\. A model spec"),
    Case("model-dir-config-edited",
         model_dir(lambda ctx, d: ctx.edit(d / "config.json", lambda b: b[:-20])), ModelSpecError,
         r"config\.json is not valid JSON .*; restore it .*or download the model again"),
    Case("model-dir-without-tokenizer",
         model_dir(lambda ctx, d: [p.unlink() for p in d.glob("tokenizer*")]), ModelSpecError,
         r"has config\.json but no tokenizer .*save the tokenizer there too"),
    Case("model-dir-weights-truncated",
         model_dir(lambda ctx, d: ctx.edit(d / "model.safetensors", lambda b: b[: len(b) // 2])),
         ModelSpecError,
         r"model\.safetensors is not a complete safetensors file .*save or download it again"),
    Case("model-without-chat-template",
         lambda ctx: load_model(str(ctx.base_lm), device="cpu"), PromptError,
         r"has no chat template.*Use an instruct/chat model, or pass chat_template="),
    Case("model-without-chat-template-cli",
         cli("score {base_lm} harmless --limit 2 --out {out}"), CliExit,
         r"^exit 2: error: .*has no chat template.*Use an instruct/chat model"),
    Case("model-dtype-unknown",
         lambda ctx: load_model(str(ctx.llama), device="cpu", dtype="float8"), ModelSpecError,
         r"Unknown dtype 'float8'; use float32, bfloat16 or float16"),
    # out of range: α (steering), λ (w′), band, coefficients, counts
    Case("steer-add-nan", lambda ctx: SteerConfig(add=NAN), RefusalLensError,
         r"add must be a finite coefficient, not nan; e\.g\. 1\.0"),
    Case("steer-ablate-and-add", lambda ctx: SteerConfig(ablate=True, add=1.0), RefusalLensError,
         r"Choose one intervention: ablate the direction, or add it"),
    Case("steer-add-inf-cli",
         cli(STEER + "--add inf", lambda ctx: ctx.saved_direction("dir")),
         CliExit, r"^exit 2: .*'--add'.*add must be a finite coefficient, not inf; e\.g\. 1\.0"),
    Case("addition-coef-nan", added(NAN), RefusalLensError,
         r"coefficient must be a finite number, not nan; use e\.g\. 1\.0"),
    Case("lambda-above-one", w_prime(1.5), RefusalLensError,
         r"λ of w′ = w − λ r̂ r̂ᵀ w\) must lie in \[0\.0, 1\.0\], not 1\.5"),
    Case("run-lambdas", lambda ctx: RunConfig.preset(direction={"lambdas": (1.0, 1.2)}),
         RefusalLensError,
         r"direction\.lambdas must be values in \[0, 1\], not \(1\.0, 1\.2\)"),
    Case("run-alpha-cli",
         cli("run {llama} --quick --organism.alpha 1.5 --out {out}"), CliExit,
         r"^exit 2: .*'--organism\.alpha'.*organism\.alpha must lie in \[0\.0, 1\.0\], "
         r"not 1\.5"),
    Case("run-unknown-setting", lambda ctx: RunConfig.preset(rass={"context": 4}),
         RefusalLensError, r"rass has no setting\(s\) context; its settings are contexts, "),
    Case("run-settings-type", lambda ctx: RunConfig.preset(rass=4), RefusalLensError,
         r"rass must be a RASSSettings or a dict of its fields, not int"),
    Case("mitigate-delta-cli", cli("mitigate {llama} --quick --delta 2 --out {out}"), CliExit,
         r"^exit 2: note: --delta is deprecated; use --search\.harmful-drop .*"
         r"'--search\.harmful-drop'.*search\.harmful_drop must lie in \[0\.0, 1\.0\], not 2\.0"),
    Case("mitigate-kl-cli", cli("mitigate {llama} --search.kl-max 0 --out {out}"), CliExit,
         r"^exit 2: .*'--search\.kl-max'.*search\.kl_max must be a finite number > 0, not 0\.0"),
    Case("mitigate-budget-cli", cli("mitigate {llama} --search.budget -1 --out {out}"), CliExit,
         r"^exit 2: .*'--search\.budget'.*search\.budget \(minutes\) must be positive, not -1\.0"),
    Case("mitigate-kinds-cli",
         cli("mitigate {llama} --search.kinds ablate,steer --out {out}"), CliExit,
         r"^exit 2: .*'--search\.kinds'.*'steer' is not one of ablate, add"),
    Case("mitigate-trials-cli", cli("mitigate {llama} --search.trials 0 --out {out}"), CliExit,
         r"^exit 2: .*'--search\.trials'.*search\.trials must be positive, not 0"),
    Case("mitigate-heldout-cli", cli("mitigate {llama} --search.n-heldout 0 --out {out}"),
         CliExit, r"^exit 2: .*'--search\.n-heldout'.*search\.n_heldout must be positive, not 0"),
    Case("run-add-coef-nan", lambda ctx: RunConfig.preset(interventions={"add_coef": NAN}),
         RefusalLensError,
         r"interventions\.add_coef must be a finite number, not nan; the default is 1\.0"),
    Case("run-band-zero", lambda ctx: RunConfig.preset(rass={"band": 0.0}), RefusalLensError,
         r"rass\.band must be positive, not 0\.0"),
    Case("run-count-zero", lambda ctx: RunConfig.preset(quick=True, evaluate={"n": 0}),
         RefusalLensError, r"evaluate\.n must be positive, not 0"),
    Case("run-count-zero-cli", cli("run {llama} --quick --rass.contexts 0 --out {out}"),
         CliExit, r"^exit 2: .*'--rass\.contexts'.*rass\.contexts must be positive, not 0"),
    Case("run-align-mode", lambda ctx: RunConfig.preset(organism={"mode": "qlora"}),
         RefusalLensError, r"organism\.mode must be lora or full, not 'qlora'"),
    Case("run-align-lr", lambda ctx: RunConfig.preset(organism={"lr": 0.0}), RefusalLensError,
         r"organism\.lr must be positive, not 0\.0"),
    Case("run-search-judge", lambda ctx: RunConfig.preset(search={"judge": "llm"}),
         RefusalLensError, r"search\.judge must be score or substring, not 'llm'"),
    Case("run-unknown-stage", lambda ctx: RunConfig.preset(stages=("model", "nope")),
         RefusalLensError,
         r"unknown stage\(s\) \['nope'\]; choose from model, organism"),
    Case("rass-band-zero", lambda ctx: RASSConfig(band=0.0), RefusalLensError,
         r"RASSConfig\.band must be positive \(> 0\), not 0\.0; it is the \|margin\| kept"),
    Case("rass-coef-nan", lambda ctx: RASSConfig(coefs=(-1.0, NAN)), RefusalLensError,
         r"coefs must be a non-empty tuple of finite steering coefficients.*give at least one"),
    Case("rass-top-p", lambda ctx: RASSConfig(top_p=1.5), RefusalLensError,
         r"top_p must be in \(0, 1\], not 1\.5; e\.g\. 0\.95"),
    Case("align-alpha-negative", lambda ctx: AlignConfig(alpha=-0.1), RefusalLensError,
         r"alpha must lie in \[0\.0, 1\.0\], not -0\.1"),
    Case("harm-threshold", lambda ctx: HarmJudgeConfig(threshold=1.5), RefusalLensError,
         r"threshold must lie in \[0, 1\], not 1\.5; .*e\.g\. 0\.5"),
    Case("select-top-k-negative", lambda ctx: SelectConfig(top_k=-1), RefusalLensError,
         r"top_k must be 0 \(score all\) or positive, not -1"),
    Case("geometry-val-frac", lambda ctx: GeometryConfig(val_frac=1.0), RefusalLensError,
         r"val_frac must be in \(0, 1\) \(exclusive\), not 1\.0; .*e\.g\. 0\.25"),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_input_fails_clearly_and_leaves_nothing(case, tmp_path, request, monkeypatch, capsys):
    check_case(case, Ctx(tmp_path / "case", request, monkeypatch, capsys))
