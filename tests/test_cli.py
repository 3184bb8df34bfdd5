"""The command line, through typer's runner (same process, real commands)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import torch
from typer.testing import CliRunner

from refusal_lens.activations import Residuals
from refusal_lens.cli import app
from refusal_lens.cli.fields import config_fields, flat_fields
from refusal_lens.cli.options import import_class

runner = CliRunner()


def _fails_cleanly(result, *phrases: str) -> None:
    """A usage error: exit code 2, the message in the output, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    text = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # rich boxes and wraps it
    for phrase in phrases:
        assert phrase in text, text


def test_help_is_instant_and_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from refusal_lens.cli import app\n"
        "for cmd in ([], *([c.name or c.callback.__name__] for c in app.registered_commands)):\n"
        "    assert CliRunner().invoke(app, [*cmd, '--help']).exit_code == 0, cmd\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_commands_are_registered_in_data_flow_order():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert names == [
        "info",
        "collect",
        "score",
        "evaluate",
        "judge",
        "align",
        "direction",
        "steer",
        "orthogonalize",
        "export",
        "attribute",
        "harm-judge",
        "triggers",
        "sanitize",
        "geometry",
        "rass",
        "run",
        "mitigate",
    ]


def test_options_read_from_source_match_the_config_dataclasses():
    """Every field of every config a command uses is an option (or excluded), with the
    default the dataclass really has."""
    targets = {
        t for c in app.registered_commands for t in getattr(c.callback, "config_targets", ())
    }
    assert len(targets) >= 9
    for target, exclude in targets:
        cls = import_class(target)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        parsed = config_fields(target)
        names = [f.name for f in parsed]
        assert names == [n for n in fields if n in names], target
        assert set(fields) - set(names) <= set(exclude), target  # no option: say so
        params = {p.name for p in _options_of(target)}
        for f in parsed:
            if f.nested:
                sub = {g.name: g for g in dataclasses.fields(import_class(f.nested))}
                assert [c.name for c in f.children] == list(sub)
                continue
            default = fields[f.name].default
            if f.name not in exclude and f.default is not None and len(f.default) < 39:
                shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
                assert f.default == shown, (target, f.name)
            assert (f.name in exclude) or f.name in params, (target, f.name)


def _options_of(target):
    return [f for _, f in flat_fields(target)]


def test_a_new_config_field_becomes_an_option(tmp_path, monkeypatch):
    """The decorator builds options from the source: add a field, get an option."""
    import inspect

    import typer

    from refusal_lens.cli.options import config_options

    pkg = tmp_path / "extra_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "conf.py").write_text(
        "from dataclasses import dataclass\n"
        "from refusal_lens.configs import StageConfig, check_range\n\n"
        "@dataclass(frozen=True)\n"
        "class ToyConfig(StageConfig):\n"
        "    ratio: float = 0.5  # a share\n"
        "    names: tuple[str, ...] = ('a', 'b')\n"
        "    layers: tuple[int, ...] | None = None\n"
        "    loud: bool = False\n\n"
        "    def validate(self):\n"
        "        check_range('ratio', self.ratio, 0.0, 1.0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = typer.Typer()
    seen = {}

    @toy.command()
    @config_options("extra_pkg.conf:ToyConfig")
    def go(*, config) -> None:
        seen["config"] = config

    assert "config__ratio" in inspect.signature(go).parameters
    result = runner.invoke(toy, ["--ratio", "0.25", "--names", "x,y", "--layers", "1:3", "--loud"])
    assert result.exit_code == 0, result.output
    assert (seen["config"].ratio, seen["config"].names) == (0.25, ("x", "y"))
    assert seen["config"].layers == (1, 2) and seen["config"].loud is True
    assert "a share" in runner.invoke(toy, ["--help"]).output  # as written
    _fails_cleanly(runner.invoke(toy, ["--ratio", "2"]), "'--ratio'", "ratio must lie in")
    _fails_cleanly(runner.invoke(toy, ["--layers", "1,x"]), "'--layers'", "not an integer")


def test_info_and_collect_on_a_tiny_model(tiny_dirs, tmp_path):
    model = str(tiny_dirs["qwen2"])
    result = runner.invoke(app, ["info", model, "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["n_layers"] == 2 and facts["post_instruction_tokens"][0] == "<|im_end|>"
    out = tmp_path / "res"
    args = ["collect", model, "borderline", "--out", str(out), "--limit", "5"]
    result = runner.invoke(app, [*args, "--layers", "0,1", "--positions", "-1,-2"])
    assert result.exit_code == 0, result.output
    res = Residuals.load(out)
    assert tuple(res.acts.shape) == (5, 2, 2, 64)
    assert res.config.positions == (-1, -2) and res.prompts == "borderline"


def test_txt_and_csv_prompt_files_and_seeded_samples(tiny_dirs, tmp_path):
    model = str(tiny_dirs["llama"])
    txt = tmp_path / "mine.txt"
    txt.write_text("How do I bake bread?\n\nWhat is a prime number?\nName a planet.\n")
    csv = tmp_path / "mine.csv"
    csv.write_text('prompt,label\n"Tell me a joke, please.",harmless\nWhat is 2+2?,harmless\n')
    result = runner.invoke(app, ["collect", model, str(txt), "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert Residuals.load(tmp_path / "t").acts.shape[0] == 3
    result = runner.invoke(app, ["score", model, str(csv), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0 and "refusal rate" in result.output, result.output
    saved = json.loads((tmp_path / "s" / "score.json").read_text())
    assert [r["text"] for r in saved["rows"]] == ["Tell me a joke, please.", "What is 2+2?"]

    def sampled(*extra):
        out = tmp_path / "n"
        args = ["collect", model, "harmless", "--out", str(out), "--layers", "1", *extra]
        assert runner.invoke(app, args).exit_code == 0
        return Residuals.load(out).acts[:, 0, -1].clone()

    first, again, other = (
        sampled("--n", "3"),
        sampled("--n", "3"),
        sampled("--n", "3", "--seed", "1"),
    )
    assert first.shape[0] == 3 and torch.equal(first, again) and not torch.equal(first, other)


def test_cli_bad_input_fails_cleanly_without_output(tiny_dirs, tmp_path):
    out = tmp_path / "res"
    args = ["collect", str(tiny_dirs["llama"]), "harmful", "--out", str(out), "--layers", "7"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "out of range" in str(result.exception)
    assert not out.exists()
    result = runner.invoke(app, ["info", "no-such-model"])
    assert result.exit_code != 0 and "Unknown model spec" in str(result.exception)
    result = runner.invoke(app, ["collect", str(tiny_dirs["llama"]), "harmful", "--out", str(out)])
    assert result.exit_code == 0  # sanity: the same command without the bad layer works
    bad = ["collect", str(tiny_dirs["llama"]), "harmful", "--out", str(tmp_path / "x")]
    _fails_cleanly(
        runner.invoke(app, [*bad, "--hook", "resid_nowhere"]), "'--hook'", "is not one of"
    )
    _fails_cleanly(runner.invoke(app, [*bad, "--batch-size", "0"]), "'--batch-size'", "positive")
    assert not (tmp_path / "x").exists()


def test_main_turns_user_errors_into_exit_code_2(tmp_path):
    cmd = [sys.executable, "-m", "refusal_lens", "info", "no-such-model"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2 and "error: Unknown model spec" in out.stderr


def test_run_writes_stage_folders_and_a_report_and_reuses_them(tiny_dirs, tmp_path):
    from refusal_lens.pipeline.config import QUICK
    from refusal_lens.pipeline.runner import RUN_FILE, STAGE_FILE

    args = ["run", str(tiny_dirs["llama"]), "--out", str(tmp_path), "--stages", "model"]
    result = runner.invoke(app, [*args, "--quick"])
    assert result.exit_code == 0, result.output
    assert "[1/10] 00-model" in result.output and "report.html" in result.output
    run = json.loads((tmp_path / RUN_FILE).read_text())
    assert run["config"]["quick"] and run["config"]["evaluate"]["n"] == 16  # the quick preset
    status = {s["name"]: s["status"] for s in run["stages"]}
    assert status["00-model"] == "ran" and status["03-direction"] == "not run"
    facts = json.loads((tmp_path / "00-model" / "model.json").read_text())
    assert facts["n_layers"] == 2 and (tmp_path / "01-organism" / STAGE_FILE).is_file()
    assert "00-model" in (tmp_path / "report.html").read_text()

    result = runner.invoke(app, [*args, "--quick"])
    assert "00-model: reused" in result.output
    result = runner.invoke(app, [*args, "--force", "nope"])
    _fails_cleanly(result, "'--force'", "'nope' is not one of 'model', 'organism'")
    result = runner.invoke(app, ["run", str(tiny_dirs["llama"]), "--stages", "all"])
    _fails_cleanly(result, "'--stages'", "'all' is not one of model, organism")
    # a stage's settings are --STAGE.SETTING, merged into the preset
    result = runner.invoke(app, [*args, "--quick", "--organism.n-check", "5"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / RUN_FILE).read_text())["config"]
    assert config["organism"]["n_check"] == 5 and config["evaluate"]["n"] == 16
    organism = QUICK["organism"]
    assert config["organism"]["n_harmful"] == organism["n_harmful"]  # the rest: the preset's
    result = runner.invoke(app, [*args, "--evaluate.n", "5"])  # evaluate is not selected
    assert result.exit_code == 2 and "evaluate is a setting of stage(s) evaluate" in result.output
    result = runner.invoke(app, [*args, "--quick", "--n-eval", "5"])
    assert result.exit_code == 2 and "No such option: --n-eval" in result.output


def test_align_then_evaluate_from_the_command_line(tiny_dirs, tmp_path, shared_data):
    from refusal_lens.alignment import AlignResult
    from refusal_lens.evaluation import EvalResult

    model, out = str(tiny_dirs["llama"]), tmp_path / "aligned"
    args = ["align", model, "--benign", "harmless", "--n-harmful", "8", "--n-benign", "8"]
    result = runner.invoke(
        app, [*args, "--answer-tokens", "4", "--alpha", "0.7", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    aligned = AlignResult.load(out)
    assert aligned.config.alpha == 0.7 and aligned.config.n_harmful == 8
    assert aligned.config.lora_rank == 16  # not given: the organism recipe's value
    assert result.output.strip().endswith(str(aligned.path))

    # evaluate into the same folder: its files join alignment.json, which is kept
    args = ["--data", str(shared_data), "evaluate", str(aligned.path), "--n", "4"]
    result = runner.invoke(app, [*args, "--judge", "score", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ASR AdvBench" in result.output and "combined" in result.output
    saved = EvalResult.load(out)
    assert saved.sets["harmless"]["dropped_as_trained"] == 8 and saved.config.judges == ("score",)
    assert AlignResult.load(out).config.alpha == 0.7
    table = (out / "evaluation.md").read_text()  # names the model portably, not by this machine
    assert str(aligned.path) not in table and "| $REFUSAL_LENS_CACHE/aligned/" in table

    result = runner.invoke(app, ["align", model, "--alpha", "2"])
    _fails_cleanly(result, "'--alpha'", "alpha must lie in [0.0, 1.0], not 2.0")
    _fails_cleanly(runner.invoke(app, ["align", model, "--n-harmful", "x"]), "not an integer")


def test_direction_steer_and_orthogonalize_from_the_command_line(tiny_dirs, tmp_path):
    from refusal_lens.directions import Direction
    from refusal_lens.models import load_model

    model, out = str(tiny_dirs["llama"]), tmp_path / "dir"
    args = ["direction", model, "--out", str(out), "--n-train", "8", "--n-val", "4"]
    result = runner.invoke(app, [*args, "--top-k", "3", "--max-layer-frac", "1"])
    assert result.exit_code == 0, result.output
    r = Direction.load(out)
    assert r.model == "llama" and r.config["direction"]["n_train"] == 8
    assert r.config["direction"]["select"]["top_k"] == 3
    table = json.loads((out / "selection.json").read_text())
    assert sum(c["bypass"] is not None for c in table["candidates"]) == 3
    assert (out / "selection.png").stat().st_size > 10_000
    assert "| layer | pos | bypass |" in (out / "selection.md").read_text()

    steer = ["steer", model, "harmless", "--direction", str(out), "--limit", "3"]
    steer += ["--max-new-tokens", "4"]
    result = runner.invoke(app, [*steer, "--add", "8", "--out", str(tmp_path / "steer")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "steer" / "steer.json").read_text())["rows"]
    assert len(rows) == 3 and all("after_completion" in row for row in rows)
    assert any(row["before_completion"] != row["after_completion"] for row in rows)
    result = runner.invoke(app, [*steer, "--ablate", "--add", "1"])
    assert result.exit_code == 2 and "Choose one intervention" in result.output

    ortho = tmp_path / "ortho"
    result = runner.invoke(
        app, ["orthogonalize", model, "--direction", str(out), "--out", str(ortho)]
    )
    assert result.exit_code == 0, result.output
    edited = load_model(str(ortho), device="cpu")
    u = r.unit_vector()
    assert edited.n_layers == 2 and (ortho / "orthogonalized.json").is_file()
    w_out = edited.hf_model.model.layers[0].mlp.down_proj.weight.detach().float()
    assert (u @ w_out).abs().max() < 1e-4


def test_harm_judge_triggers_and_sanitize_chain(tiny_dirs, tmp_path):
    from refusal_lens.triggers import HarmJudge, SanitizedData, TriggerMasks

    model = str(tiny_dirs["llama"])
    judge_dir = tmp_path / "judge"
    args = ["harm-judge", model, "--out", str(judge_dir), "--n", "16", "--benign", "harmless"]
    result = runner.invoke(app, [*args, "--layers", "1", "--threshold", "0.6"])
    assert result.exit_code == 0, result.output
    judge = HarmJudge.load(judge_dir)
    assert judge.layer == 1 and judge.config.threshold == 0.6 and "harm judge" in result.output
    _fails_cleanly(runner.invoke(app, [*args, "--val-frac", "1.5"]), "'--val-frac'")

    masks_dir = tmp_path / "triggers"
    args = ["triggers", model, "harmful", "--harm-judge", str(judge_dir), "--n", "2"]
    result = runner.invoke(app, [*args, "--out", str(masks_dir), "--fillers", "table,river"])
    assert result.exit_code == 0, result.output
    masks = TriggerMasks.load(masks_dir)
    assert len(masks.masks) == 2 and masks.config.fillers == ("table", "river")
    assert masks.masks[0].prompt in result.output or "2 requests" in result.output

    out = tmp_path / "sanitized"
    args = ["sanitize", model, "--triggers", str(masks_dir), "--harm-judge", str(judge_dir)]
    result = runner.invoke(app, [*args, "--out", str(out), "--rewrite", "delete"])
    assert result.exit_code == 0, result.output
    data = SanitizedData.load(out)
    assert len(data.items) == 2 and data.config.rewrite == "delete"
    assert data.judge["layer"] == 1 and "kept" in result.output
    _fails_cleanly(runner.invoke(app, [*args, "--out", str(out), "--rewrite", "x"]), "'--rewrite'")


def test_geometry_and_rass_from_the_command_line(tiny_dirs, tmp_path):
    from refusal_lens.boundary import RASSResult
    from refusal_lens.boundary.geometry import Geometry
    from refusal_lens.directions import Direction
    from refusal_lens.prompts import PromptSet

    model = str(tiny_dirs["llama"])
    out = tmp_path / "geo"
    result = runner.invoke(app, ["geometry", model, "--out", str(out), "--panels", "1"])
    assert result.exit_code == 0, result.output
    geo = Geometry.load(out)
    assert geo.layers == [1] and len(geo.texts["borderline"]) == 170
    assert sorted(p.name for p in out.glob("*.png")) == [
        "grid.png",
        "margins.png",
        "probe_accuracy.png",
    ]

    judge = tmp_path / "judge"
    args = ["harm-judge", model, "--out", str(judge), "--n", "16", "--threshold", "1"]
    assert runner.invoke(app, [*args, "--benign", "harmless"]).exit_code == 0
    r = Direction(torch.randn(64, generator=torch.Generator().manual_seed(0)), 1, -1, "llama")
    r.save(tmp_path / "dir")
    lexicon = tmp_path / "lexicon.json"
    entry = {"kind": "trigger", "carrier_effect": 1.0, "n_requests": 1, "mean_drive": 1.0}
    rows = [{"word": w, **entry, "mean_harm": 0.0} for w in ("how", "can", "i")]
    lexicon.write_text(json.dumps(rows))
    args = ["rass", model, "harmless", "--direction", str(tmp_path / "dir"), "--contexts", "2"]
    args += ["--harm-judge", str(judge), "--samples", "2", "--band", "100", "--coefs", "-5,5"]
    args += ["--triggers", str(lexicon), "--benign-contexts", "harmless"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "r" / "rass.jsonl").open()]
    assert rows and {r["provenance"]["method"] for r in rows} <= {"steer", "recombine"}
    assert len(PromptSet.load(tmp_path / "r" / "rass.jsonl")) == len(rows)
    assert (tmp_path / "r" / "margins.png").is_file() and "Selected" in result.output
    saved = RASSResult.load(tmp_path / "r")
    assert saved.config.coefs == (-5.0, 5.0) and saved.harm_scorer["threshold"] == 1.0
    assert saved.harm_scorer["layer"] >= 0

    result = runner.invoke(app, ["rass", model, "harmless", "--out", str(tmp_path / "x")])
    _fails_cleanly(result, "Missing option", "--direction")
    bad = [a if a != "-5,5" else "a,b" for a in args]
    _fails_cleanly(runner.invoke(app, [*bad, "--out", str(tmp_path / "y")]), "'--coefs'")
    _fails_cleanly(
        runner.invoke(app, [*args[:-4], "--out", str(tmp_path / "y"), "--triggers", str(lexicon)]),
        "--benign-contexts",
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_translator_and_rewriter_options_take_a_model_spec(tiny_dirs, tmp_path, monkeypatch):
    """--translator and --rewriter load another model (here the tiny Qwen2) by its spec and
    hand it to model_translator / model_rewriter (recorded here, and replaced by cheap fakes:
    both are tested on a model in test_rewrite.py); a spec that names no model fails before
    anything is written."""
    from refusal_lens.boundary import RASSResult, translate
    from refusal_lens.directions import Direction
    from refusal_lens.prompts import load_prompts
    from refusal_lens.triggers import SanitizedData, rewrite

    model, helper = str(tiny_dirs["llama"]), str(tiny_dirs["qwen2"])
    loaded: list[str] = []

    def fake_translator(handle):
        loaded.append(handle.model_id)
        return lambda texts, language: [f"[{language}] {t}" for t in texts]

    def fake_rewriter(handle):
        loaded.append(handle.model_id)
        return lambda query, mask: "Plan a picnic for my team."

    monkeypatch.setattr(translate, "model_translator", fake_translator)
    monkeypatch.setattr(rewrite, "model_rewriter", fake_rewriter)
    judge = tmp_path / "judge"
    args = ["harm-judge", model, "--out", str(judge), "--n", "16", "--threshold", "1"]
    assert runner.invoke(app, [*args, "--layers", "1", "--benign", "harmless"]).exit_code == 0
    Direction(torch.randn(64, generator=torch.Generator().manual_seed(0)), 1, -1, "llama").save(
        tmp_path / "dir"
    )
    for name in ("harmful", "harmless"):  # small reference sets
        (tmp_path / f"{name}.txt").write_text("\n".join(load_prompts(name)[:12].texts))
    args = ["rass", model, "harmless", "--direction", str(tmp_path / "dir"), "--n", "3"]
    args += ["--harm-judge", str(judge), "--contexts", "1", "--samples", "1", "--band", "100"]
    args += ["--harmful", str(tmp_path / "harmful.txt"), "--coefs", "0", "--max-new-tokens", "4"]
    args += ["--harmless", str(tmp_path / "harmless.txt"), "--languages", "en,fr"]
    args += ["--no-require-request"]  # a random model writes no requests
    result = runner.invoke(app, [*args, "--translator", helper, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert loaded == ["qwen2"]  # the helper model, not the studied one
    saved = RASSResult.load(tmp_path / "r")
    assert saved.translations["en->fr"] == {"texts": 3 + 24, "empty": 0, "unchanged": 0}
    assert {c.language for c in saved.candidates} == {"en", "fr"}
    bad = runner.invoke(app, [*args, "--translator", "no-such-model", "--out", str(tmp_path / "x")])
    _fails_cleanly(bad, "'--translator'", "Unknown model spec")

    masks_dir = tmp_path / "triggers"
    args = ["triggers", model, "harmful", "--harm-judge", str(judge), "--n", "2"]
    assert runner.invoke(app, [*args, "--out", str(masks_dir)]).exit_code == 0
    args = ["sanitize", model, "--triggers", str(masks_dir), "--harm-judge", str(judge)]
    args += ["--max-new-tokens", "4"]
    result = runner.invoke(app, [*args, "--rewriter", helper, "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert loaded == ["qwen2", "qwen2"]
    items = SanitizedData.load(tmp_path / "s").items
    assert {i.method for i in items} == {"rewriter"}
    assert {i.text for i in items} == {"Plan a picnic for my team."}
    bad = runner.invoke(app, [*args, "--rewriter", "no-such-model", "--out", str(tmp_path / "y")])
    _fails_cleanly(bad, "'--rewriter'", "Unknown model spec")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_run_on_a_model_without_chat_template_fails_before_writing(no_template_dir, tmp_path):
    args = ["run", str(no_template_dir), "--quick", "--out", str(tmp_path / "run")]
    result = runner.invoke(app, args)
    assert "no chat template" in str(result.exception)
    assert not (tmp_path / "run").exists()  # nothing claimed, nothing half-written


def test_run_of_chosen_stages_runs_model_and_organism_and_names_a_missing_input(
    tiny_dirs, tmp_path
):
    from refusal_lens.pipeline.runner import STAGE_FILE

    args = ["run", str(tiny_dirs["llama"]), "--quick", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--stages", "geometry"])
    assert "07-geometry reads the result of 03-direction" in str(result.exception)
    assert (tmp_path / "00-model" / STAGE_FILE).is_file()  # always run, however chosen
    assert (tmp_path / "01-organism" / STAGE_FILE).is_file()
    assert not (tmp_path / "07-geometry").exists()
