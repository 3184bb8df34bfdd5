"""The command line is one language: every command's options are walked here.

One setting has one spelling (a table of known settings and the other names they have had or
could drift to), every option and command has help, enumerated options list their choices
and reject others, every command's help has an example, help is printed as written, old
names are hidden aliases that still work, and ``--version`` and ``--data`` (before or after
the command) work. No model is loaded: the commands stop at the first error or at a patched
loader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from refusal_lens.cli import app

runner = CliRunner()

# the one spelling of a setting -> the other names it has had (or could drift to); none of
# them may be a visible option of any command
SPELLING: dict[str, tuple[str, ...]] = {
    "--judge": ("--judges", "--refused-by", "--judged-by", "--refusal-judge"),
    "--out": ("--output", "--out-dir", "--output-dir", "--outdir"),
    "--positions": ("--position", "--pos"),
    "--triggers": ("--masks", "--lexicon", "--triggers-dir"),
    "--direction": ("--direction-dir", "--dir"),
    "--harm-judge": ("--harm-judge-dir", "--judge-dir"),
    "--search.harmful-drop": ("--delta", "--harmful-drop", "--search-harmful-drop"),
    "--search.trials": ("--trials", "--search-trials", "--n-trials"),
    "--search.seeds": ("--seeds", "--search-seeds"),
    "--search.n-heldout": ("--heldout", "--n-heldout"),
    "--search.tokens": ("--judge-tokens",),
    "--search.budget": ("--budget",),
    "--search.kinds": ("--kinds",),
    "--data": ("--data-dir",),
    "--dtype": ("--precision", "--torch-dtype"),
    "--device": ("--devices",),
    "--n": ("--n-prompts", "--num-prompts", "--sample"),
    "--max-new-tokens": ("--max-tokens", "--answer-length"),
    "--batch-size": ("--bs", "--batch"),
}
# old name -> (commands that keep it hidden for one release, its one spelling)
RENAMED: dict[str, tuple[tuple[str, ...], str]] = {
    "--judges": (("evaluate",), "--judge"),
    "--refused-by": (("geometry",), "--judge"),
    "--position": (("geometry",), "--positions"),
    "--masks": (("sanitize",), "--triggers"),
    "--lexicon": (("rass",), "--triggers"),
    "--trials": (("mitigate",), "--search.trials"),
    "--seeds": (("mitigate",), "--search.seeds"),
    "--delta": (("mitigate",), "--search.harmful-drop"),
    "--kl-max": (("mitigate",), "--search.kl-max"),
    "--budget": (("mitigate",), "--search.budget"),
    "--kinds": (("mitigate",), "--search.kinds"),
    "--heldout": (("mitigate",), "--search.n-heldout"),
    "--judge": (("mitigate",), "--search.judge"),
    "--judge-tokens": (("mitigate",), "--search.tokens"),
}
JUDGES = ("score", "substring")
HOOKS = ("resid_pre", "resid_mid", "resid_post")
# (command, option) -> the values it takes, which its help must list
ENUMERATED: dict[tuple[str, str], tuple[str, ...]] = {
    **{(c, "--judge"): JUDGES for c in ("score", "evaluate", "steer", "geometry")},
    **{(c, "--search.judge"): JUDGES for c in ("run", "mitigate")},
    **{(c, "--search.kinds"): ("ablate", "add") for c in ("run", "mitigate")},
    ("judge", "--judge"): ("substring", "llm"),
    ("collect", "--hook"): HOOKS,
    ("geometry", "--hook"): HOOKS,
    ("align", "--mode"): ("lora", "full"),
    ("align", "--variant"): ("sft", "psft"),
    ("run", "--organism.mode"): ("lora", "full"),
    ("sanitize", "--rewrite"): ("replace", "delete"),
    ("direction", "--fallback-rule"): ("kl", "bypass"),
    ("attribute", "--method"): ("projection", "grad_x_input", "integrated_gradients"),
    ("run", "--attribution.method"): ("occlusion", "grad_x_input", "integrated_gradients"),
    ("run", "--rass.rule"): ("refusal", "margin"),
    ("run", "--stages"): ("model", "organism", "evaluate", "rass", "search"),
    ("run", "--force"): ("model", "organism", "evaluate", "rass", "search"),
    ("run", "--languages"): ("en", "de", "fr", "zh"),
    ("rass", "--languages"): ("en", "de", "fr", "zh"),
}
DEFAULT_JUDGE = "substring"


def _root() -> Any:
    return typer.main.get_command(app)


def _commands() -> Iterator[tuple[str, Any]]:
    yield from _root().commands.items()


def _options(command: Any, hidden: bool = False) -> Iterator[Any]:
    for param in command.params:
        if param.param_type_name == "option" and (hidden or not param.hidden):
            yield param


def _names(param: Any) -> list[str]:
    return [*param.opts, *param.secondary_opts]


def _flat(text: str) -> str:
    """Rich's boxes and wraps removed: one line of words."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_tables_name_real_options():
    """The tables above would pass vacuously if they named options no command has."""
    visible = {n for _, c in _commands() for p in _options(c) for n in _names(p)}
    assert set(SPELLING) <= visible
    for commands, new in RENAMED.values():
        for name in commands:
            assert new in {n for p in _options(_root().commands[name]) for n in _names(p)}


def test_no_command_shows_a_second_spelling_of_a_known_setting():
    for name, command in _commands():
        for param in _options(command):  # the visible ones
            for option in _names(param):
                other = [k for k, alts in SPELLING.items() if option in alts]
                assert not other, f"{name} {option}: a second spelling of {other[0]}"
                old_here = name in RENAMED.get(option, ((), ""))[0]
                assert not old_here, f"{name} shows its old name {option}"


def test_mitigate_spells_the_pipeline_settings_as_run_does():
    run, mitigate = _root().commands["run"], _root().commands["mitigate"]
    spelled = {n for p in _options(run) for n in _names(p)}
    mine = {n for p in _options(mitigate) for n in _names(p)}
    assert mine <= spelled, sorted(mine - spelled)
    assert {"--device", "--dtype", "--search.trials", "--search.harmful-drop"} <= mine


def test_old_names_are_hidden_aliases():
    for old, (commands, _new) in RENAMED.items():
        for name in commands:
            params = [p for p in _root().commands[name].params if old in _names(p)]
            assert params and all(p.hidden for p in params), f"{name} {old}"


def test_an_old_name_still_works_and_says_it_is_deprecated(tmp_path):
    args = ["mitigate", "m", "--trials", "0", "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args, env={"COLUMNS": "2000"})
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert "note: --trials is deprecated; use --search.trials (--trials goes" in text
    assert "'--search.trials'" in text and "search.trials must be positive, not 0" in text
    assert not (tmp_path / "o").exists()
    # an option that was required stays so under either name
    args = ["sanitize", "m", "--harm-judge", str(tmp_path), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args, env={"COLUMNS": "2000"})
    assert result.exit_code == 2 and "--triggers is required" in _flat(result.output)
    result = runner.invoke(app, [*args, "--masks", str(tmp_path / "nope")])
    assert "note: --masks is deprecated" in _flat(result.output)
    assert not (tmp_path / "o").exists()


def test_every_option_argument_and_command_has_help():
    root = _root()
    assert root.help
    for name, command in _commands():
        assert (command.help or "").strip(), f"{name}: no help"
        for param in command.params:
            if not getattr(param, "hidden", False):
                assert (param.help or "").strip(), f"{name} {param.name}: no help"


def test_every_command_help_has_an_example():
    assert "Example: refusal-lens " in _flat(_help())
    for name, _ in _commands():
        assert f"Example: refusal-lens {name} " in _flat(_help(name)), name


def test_enumerated_options_list_their_choices_and_reject_others():
    root = _root()
    for (name, option), choices in ENUMERATED.items():
        command = root.commands[name]
        ctx = command.make_context(name, ["--help"], resilient_parsing=True)
        param = next(p for p in _options(command) if option in _names(p))
        shown = param.display_type_rich(ctx) or ""
        assert all(c in shown for c in choices), f"{name} {option}: {shown!r}"
    for name, command in _commands():  # --dtype wherever a model loads, with its choices
        if any(p.name == "model" for p in command.params):
            params = {n: p for p in _options(command) for n in _names(p)}
            assert {"--device", "--dtype"} <= set(params), name
            ctx = command.make_context(name, ["--help"], resilient_parsing=True)
            assert "bfloat16" in params["--dtype"].display_type_rich(ctx), name
    result = runner.invoke(app, ["score", "m", "harmless", "--judge", "llm"])
    assert result.exit_code == 2
    assert "'llm' is not one of 'score', 'substring'" in _flat(result.output)
    result = runner.invoke(app, ["evaluate", "m", "--judge", "score,nope"])
    assert result.exit_code == 2 and "'nope' is not one of score, substring" in _flat(result.output)


def test_one_judge_default_everywhere():
    for name in ("score", "geometry", "steer", "evaluate"):
        text = _flat(_help(name))
        assert re.search(r"--judge .*?(\[default: \(?substring\)?\]|Default: substring)", text)
    assert "[default: (substring)]" in _flat(_help("run")).split("--search.judge")[1][:400]


def test_one_out_rule():
    for name, command in _commands():
        if name == "info":  # prints the model's facts; writes no file
            assert not any("--out" in p.opts for p in command.params)
            continue
        out = next(p for p in _options(command) if "--out" in p.opts)
        assert not out.required, name
        expected = "stdout" if name == "judge" else "runs/<model>/"
        assert "Default: " in out.help and expected in out.help, (name, out.help)


def test_help_is_printed_as_written():
    """Field comments are not capitalised: λ and grad_x_input stay as in the source."""
    text = _flat(_help("run"))
    assert "λ must keep harmful refusal" in text and "Λ must" not in text
    assert "occlusion, grad_x_input, integrated_gradients" in text
    from refusal_lens.cli.fields import config_fields

    field = next(
        f
        for f in config_fields("refusal_lens.pipeline.stage_settings:AttributionSettings")
        if f.name == "method"
    )
    assert field.help.startswith("occlusion")


def test_version():
    from refusal_lens import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"refusal-lens {__version__}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_data_before_or_after_the_command(tmp_path, monkeypatch, where):
    from refusal_lens.cli.common import Loader
    from refusal_lens.locations import DATA_ENV, data_dir

    monkeypatch.setenv(DATA_ENV, str(tmp_path / "before"))
    seen = []

    def load(self, spec):  # the command's first step: record the data folder, then stop
        seen.append(data_dir())
        raise RuntimeError("stop")

    monkeypatch.setattr(Loader, "__call__", load)
    data = ["--data", str(tmp_path / "d")]
    command = ["evaluate", "some-model", "--out", str(tmp_path / "o")]
    args = [*data, *command] if where == "before" else [*command, *data]
    result = runner.invoke(app, args)
    assert str(result.exception) == "stop" and seen == [tmp_path / "d"]
    assert data_dir() == tmp_path / "before"  # restored after the command
