"""The command line, through typer's runner (same process, real commands)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from refusal_lens.activations import Residuals
from refusal_lens.cli import app

runner = CliRunner()


def test_help_is_instant_and_does_not_import_torch():
    code = "import sys; from refusal_lens.cli import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_info_and_collect_on_a_tiny_model(tiny_dirs, tmp_path):
    model = str(tiny_dirs["qwen2"])
    result = runner.invoke(app, ["info", model, "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["n_layers"] == 2 and facts["post_instruction_tokens"][0] == "<|im_end|>"
    out = tmp_path / "res"
    result = runner.invoke(
        app,
        [
            "collect",
            model,
            "borderline",
            str(out),
            "--limit",
            "5",
            "--layers",
            "0,1",
            "--positions",
            "-1,-2",
        ],
    )
    assert result.exit_code == 0, result.output
    res = Residuals.load(out)
    assert tuple(res.acts.shape) == (5, 2, 2, 64)
    assert res.config.positions == (-1, -2) and res.prompts == "borderline"


def test_cli_bad_input_fails_cleanly_without_output(tiny_dirs, tmp_path):
    out = tmp_path / "res"
    result = runner.invoke(
        app, ["collect", str(tiny_dirs["llama"]), "harmful", str(out), "--layers", "7"]
    )
    assert result.exit_code != 0 and "out of range" in str(result.exception)
    assert not out.exists()
    result = runner.invoke(app, ["info", "no-such-model"])
    assert result.exit_code != 0 and "Unknown model spec" in str(result.exception)


def test_main_turns_user_errors_into_exit_code_2(tmp_path):
    cmd = [sys.executable, "-m", "refusal_lens", "info", "no-such-model"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2 and "error: Unknown model spec" in out.stderr


@pytest.mark.model
def test_run_pipeline_on_the_bundled_model(tmp_path):
    result = runner.invoke(app, ["run", "smollm2-135m", "--out", str(tmp_path), "--n", "4"])
    assert result.exit_code == 0, result.output
    rates = json.loads((tmp_path / "refusal" / "rates.json").read_text())
    assert set(rates) == {"harmful", "harmless", "borderline"}
    assert set(rates["harmful"]) == {"score", "substring"}
    assert Residuals.load(tmp_path / "residuals" / "harmful").acts.shape == (4, 30, 6, 576)
    assert "refusal rate (score judge)" in (tmp_path / "summary.md").read_text()


def test_align_then_evaluate_from_the_command_line(tiny_dirs, tmp_path, shared_data):
    model = str(tiny_dirs["llama"])
    out = tmp_path / "aligned"
    result = runner.invoke(
        app,
        [
            "align",
            model,
            "--benign",
            "harmless",
            "--n-harmful",
            "8",
            "--n-benign",
            "8",
            "--answer-tokens",
            "4",
            "--alpha",
            "0.2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "align.json").read_text())["config"]["alpha"] == 0.2
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(out),
            "--n",
            "4",
            "--judges",
            "score",
            "--data",
            str(shared_data),
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ASR AdvBench" in result.output and "combined" in result.output
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["result"]["sets"]["harmless"]["dropped_as_trained"] == 8
    result = runner.invoke(app, ["align", model, "--alpha", "2"])
    assert result.exit_code != 0 and "alpha must lie in [0, 1]" in str(result.exception)


def test_direction_then_steer_from_the_command_line(tiny_dirs, tmp_path):
    from refusal_lens.directions import Direction

    model, out = str(tiny_dirs["llama"]), tmp_path / "dir"
    args = ["direction", model, "--out", str(out), "--n-train", "8", "--n-val", "4"]
    result = runner.invoke(app, [*args, "--top-k", "3", "--max-layer-frac", "1"])
    assert result.exit_code == 0, result.output
    r = Direction.load(out)
    assert r.model == "llama" and r.config["direction"]["n_train"] == 8
    table = json.loads((out / "selection.json").read_text())
    assert sum(c["bypass"] is not None for c in table["candidates"]) == 3
    assert (out / "selection.png").stat().st_size > 10_000
    assert "| layer | pos | bypass |" in (out / "selection.md").read_text()

    report = tmp_path / "steer.json"
    steer = ["steer", model, str(out), "harmless", "--limit", "3", "--max-new-tokens", "4"]
    result = runner.invoke(app, [*steer, "--add", "8", "--out", str(report)])
    assert result.exit_code == 0, result.output
    rows = json.loads(report.read_text())["rows"]
    assert len(rows) == 3 and all("after_completion" in row for row in rows)
    assert any(row["before_completion"] != row["after_completion"] for row in rows)
    result = runner.invoke(app, [*steer, "--ablate", "--add", "1"])
    assert result.exit_code != 0 and "Choose one intervention" in str(result.exception)


def test_geometry_and_rass_from_the_command_line(tiny_dirs, tmp_path):
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

    r = Direction(torch.randn(64, generator=torch.Generator().manual_seed(0)), 1, -1, "llama")
    r.save(tmp_path / "dir")
    lexicon = tmp_path / "lexicon.json"
    lexicon.write_text(json.dumps([{"word": w, "kind": "trigger"} for w in ("how", "can", "i")]))
    args = ["rass", model, "harmless", "--direction", str(tmp_path / "dir"), "--contexts", "2"]
    args += ["--samples", "2", "--band", "100", "--coefs", "-5,5", "--out", str(tmp_path / "r")]
    args += ["--lexicon", str(lexicon), "--benign-contexts", "harmless"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "r" / "rass.jsonl").open()]
    assert rows and {r["provenance"]["method"] for r in rows} <= {"steer", "recombine"}
    assert len(PromptSet.load(tmp_path / "r" / "rass.jsonl")) == len(rows)
    assert (tmp_path / "r" / "margins.png").is_file() and "Selected" in result.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["config"]["coefs"] == [-5.0, 5.0] and config["judge"]["layer"] >= 0

    result = runner.invoke(app, ["rass", model, "harmless", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "needs --direction" in str(result.exception)
    bad = [*args[:5], "--coefs", "a,b", "--out", str(tmp_path / "y")]
    result = runner.invoke(app, bad)
    assert result.exit_code != 0 and "--coefs takes numbers" in str(result.exception)
    assert not (tmp_path / "y").exists()
