"""The run folder's bookkeeping (fast tier, no model): reuse, --force, interruption, old
folders, missing inputs, a full disk; and the pure choices of the pipeline's steps."""

from __future__ import annotations

import errno
import json

import pytest

from refusal_lens.errors import RefusalLensError
from refusal_lens.pipeline import REGISTRY, RunConfig
from refusal_lens.pipeline.measure import check_organism, choose_lambda
from refusal_lens.pipeline.registry import FOLDERS
from refusal_lens.pipeline.runner import RUN_FILE, RUN_FORMAT, STAGE_FILE, Runner, stage_fields
from refusal_lens.pipeline.stage_settings import EvaluateSettings

ORDER = ["model", "organism", "evaluate", "direction"]


class Steps:
    """Fake steps that write one file each and count their calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, BaseException] = {}

    def step(self, stage: str):
        def write(out):
            self.calls.append(stage)
            (out / "part.txt").write_text("half")
            if stage in self.fail:
                raise self.fail[stage]
            (out / "result.txt").write_text(stage)

        return write

    def run(self, folder, config, force=None):
        runner = Runner(folder, config, force, say=lambda _: None)
        for stage in ORDER:
            runner.run(stage, self.step(stage), always=stage in ("model", "organism"))
        return runner


def config(**changes) -> RunConfig:
    return RunConfig.preset(quick=True, **({"stages": tuple(ORDER)} | changes))


def test_complete_stages_are_reused_and_a_changed_setting_reruns_what_reads_it(tmp_path):
    steps = Steps()
    steps.run(tmp_path, config())
    assert steps.calls == ORDER
    first = {s: (tmp_path / FOLDERS[s] / STAGE_FILE).read_text() for s in ORDER}
    runner = steps.run(tmp_path, config())
    assert steps.calls == ORDER  # nothing ran again
    assert {r.status for r in runner.records.values()} == {"cached"}
    took = json.loads(first["direction"])["seconds"]  # a reused stage keeps its time
    assert runner.records["direction"].seconds == took >= 0
    steps.run(tmp_path, config(direction={"n_train": 40}))  # only the direction reruns
    assert steps.calls == [*ORDER, "direction"]
    steps.run(tmp_path, config(organism={"n_check": 8}))  # it and all that read it
    assert steps.calls[-3:] == ["organism", "evaluate", "direction"]
    assert (tmp_path / FOLDERS["model"] / STAGE_FILE).read_text() == first["model"]


def test_force_reruns_the_stage_and_every_later_one(tmp_path):
    steps = Steps()
    steps.run(tmp_path, config())
    steps.run(tmp_path, config(), force="evaluate")
    assert steps.calls == [*ORDER, "evaluate", "direction"]
    with pytest.raises(RefusalLensError, match="unknown stage 'nope'"):
        steps.run(tmp_path, config(), force="nope")


@pytest.mark.parametrize("where", ["organism", "direction"])
def test_an_interrupted_stage_leaves_nothing_and_the_rerun_resumes_there(tmp_path, where):
    steps = Steps()
    steps.fail[where] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        steps.run(tmp_path, config())
    done = ORDER[: ORDER.index(where)]
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == sorted([FOLDERS[s] for s in done] + [RUN_FILE])
    assert not (tmp_path / FOLDERS[where]).exists()  # nothing half-written under its name
    steps.fail.clear()
    steps.calls.clear()
    steps.run(tmp_path, config())
    assert steps.calls == ORDER[ORDER.index(where) :]
    assert not list(tmp_path.glob(".*.tmp"))  # the killed run's temporary folder is gone
    assert (tmp_path / FOLDERS[where] / "result.txt").read_text() == where


def test_files_and_folders_left_by_a_killed_run_are_removed_and_nothing_else(tmp_path):
    Steps().run(tmp_path, config())
    (tmp_path / ".report.html.k1ll3d.tmp").write_text("<html>half a page")
    (tmp_path / ".02-evaluate.k1ll3d.tmp").mkdir()
    (tmp_path / ".02-evaluate.k1ll3d.tmp" / "part.txt").write_text("half")
    (tmp_path / "notes.tmp").write_text("mine")  # not hidden: not a name refusal-lens writes
    Steps().run(tmp_path, config())
    assert not list(tmp_path.glob(".*.tmp")) and (tmp_path / "notes.tmp").is_file()


def test_a_full_disk_is_a_clear_error_and_completed_stages_stay(tmp_path):
    steps = Steps()
    steps.fail["evaluate"] = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RefusalLensError, match="disk filled while stage 02-evaluate") as e:
        steps.run(tmp_path, config())
    assert "resume" in str(e.value)
    assert (tmp_path / FOLDERS["organism"] / STAGE_FILE).is_file()
    assert not (tmp_path / FOLDERS["evaluate"]).exists()


def test_a_stage_whose_input_was_left_out_says_which_and_how(tmp_path):
    runner = Runner(tmp_path, config(stages=("direction",)), say=lambda _: None)
    with pytest.raises(RefusalLensError) as e:
        runner.run("direction", Steps().step("direction"))
    message = str(e.value)
    assert "03-direction reads the result of 01-organism" in message
    assert "--stages organism,direction" in message


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"summary.md": "x", "residuals/a.json": "{}"}, "older refusal-lens run"),
        ({"notes.txt": "mine"}, "not a refusal-lens run"),
        ({RUN_FILE: json.dumps({"format": RUN_FORMAT + 1})}, "of format"),
        ({RUN_FILE: json.dumps({"format": 1})}, "of format 1 .*rerun into a new folder"),
    ],
)
def test_a_folder_of_another_version_or_owner_is_refused_and_kept(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(RefusalLensError, match=expected):
        Runner(tmp_path, config())
    for name, text in files.items():
        assert (tmp_path / name).read_text() == text


def test_presets_and_settings(tmp_path):
    quick, full = RunConfig.preset(quick=True), RunConfig.preset()
    assert quick.quick and not full.quick
    assert quick.evaluate.n < full.evaluate.n
    assert quick.organism.n_benign < full.organism.n_benign
    changed = RunConfig.preset(quick=True, evaluate={"n": 5})
    assert changed.evaluate.n == 5 and changed.evaluate.sets == quick.evaluate.sets  # merged
    whole = RunConfig.preset(quick=True, evaluate=EvaluateSettings(n=5))  # an object: as given
    assert whole.evaluate.sets == full.evaluate.sets
    assert RunConfig.from_dict(quick.to_dict()) == quick
    with pytest.raises(RefusalLensError, match="unknown stage"):
        RunConfig.preset(stages=("direction", "everything"))
    with pytest.raises(RefusalLensError, match="unknown stage"):  # the run checks too
        Runner(tmp_path, RunConfig(stages=("direction", "everything")))
    with pytest.raises(RefusalLensError, match="direction is a setting of stage"):
        RunConfig.preset(quick=True, stages=("model", "evaluate"), direction={"n_train": 40})
    # another stage's setting that a selected stage reads is not refused
    RunConfig.preset(quick=True, stages=("model", "rass"), triggers={"n_masks": 8})
    with pytest.raises(RefusalLensError, match="lambdas"):
        RunConfig.preset(direction={"lambdas": (1.5,)})
    # every stage by default, in order, but the search (behind a flag: `mitigate`, --search)
    optional = ("search", "multilingual")
    assert RunConfig().stages == tuple(s for s in REGISTRY.names if s not in optional)
    assert RunConfig(with_search=True).stages == REGISTRY.names[:-1]
    assert RunConfig(with_search=True, languages=("de",)).stages == REGISTRY.names
    assert stage_fields(quick, REGISTRY["search"])["search"] == quick.search.to_dict()
    assert "search" not in stage_fields(quick, REGISTRY["mitigations"])
    assert stage_fields(quick, REGISTRY["direction"])["direction"]["n_train"] == 64
    assert "direction" not in stage_fields(quick, REGISTRY["evaluate"])
    assert stage_fields(quick, REGISTRY["rass"])["triggers.n_masks"] == 16  # another stage's


def conditions(harmful_by_lambda: dict[float, float], benign_by_lambda: dict[float, float]):
    out = {"no edit": {"a": {"score": 0.9}, "b": {"score": 0.5}}}
    for lam in harmful_by_lambda:
        out[f"ablate w′ (λ={lam:g})"] = {
            "a": {"score": harmful_by_lambda[lam]},
            "b": {"score": benign_by_lambda[lam]},
        }
    return out


def test_lambda_is_the_one_with_fewest_benign_refusals_that_keeps_harmful_refusal():
    kinds = {"a": "harmful", "b": "benign"}
    cond = conditions({1.0: 0.9, 0.8: 0.88, 0.6: 0.7}, {1.0: 0.5, 0.8: 0.3, 0.6: 0.1})
    lam, why = choose_lambda(cond, kinds, (1.0, 0.8, 0.6), 0.05)
    assert lam == 0.8 and "fewest benign" in why  # 0.6 frees too many harmful prompts
    lam, why = choose_lambda(cond, kinds, (1.0, 0.8, 0.6), 0.25)
    assert lam == 0.6
    cond = conditions({1.0: 0.5, 0.6: 0.4}, {1.0: 0.1, 0.6: 0.0})
    lam, why = choose_lambda(cond, kinds, (1.0, 0.6), 0.05)
    assert lam == 1.0 and "no λ kept" in why
    cond = conditions({1.0: 0.9, 0.6: 0.9}, {1.0: 0.7, 0.6: 0.6})  # both worse than no edit
    lam, why = choose_lambda(cond, kinds, (1.0, 0.6), 0.05)
    assert lam == 0.6 and "no λ refused fewer benign prompts" in why


@pytest.mark.parametrize(
    "harmful, benign, expected",
    [(0.05, 0.1, "no refusal to study"), (0.9, 0.95, "refuses everything"), (0.6, 0.2, None)],
)
def test_an_organism_that_refuses_nothing_or_everything_is_a_clear_error(harmful, benign, expected):
    rates = {"AdvBench": {"substring": harmful}, "Alpaca": {"substring": benign}}
    record = {"base": "m", "aligned": True, "before": rates, "after": rates}
    if expected is None:
        check_organism(record)
    else:
        with pytest.raises(RefusalLensError, match=expected):
            check_organism(record)


def test_prompt_rows_carry_both_verdicts_and_mark_disagreement():
    from refusal_lens.evaluation import prompt_rows
    from refusal_lens.prompts import PromptSet
    from refusal_lens.scoring import RefusalReport

    prompts = PromptSet.from_texts(["a", "b"], "harmless", "set")
    reports = {
        "score": RefusalReport("score", "set", [False, True], scores=[-0.19, 2.0]),
        "substring": RefusalReport(
            "substring", "set", [True, True], completions=["I'm sorry", "No"]
        ),
    }
    rows = prompt_rows("set", "benign", prompts, reports)
    assert [r["disagree"] for r in rows] == [True, False]
    assert rows[0]["refused"] == {"score": False, "substring": True}
    assert rows[0]["score"] == -0.19 and rows[0]["completion"] == "I'm sorry"


def test_token_views_share_one_symmetric_scale_and_keep_both_verdicts():
    import torch

    from refusal_lens.attribution.methods import Attributions, TokenAttribution
    from refusal_lens.evaluation import EvalResult
    from refusal_lens.pipeline.explain import over_refused, token_views

    def item(text, scores):
        return TokenAttribution(text, "occlusion", ["x", "y"], [1, 2], 1.0, torch.tensor(scores))

    rows = [
        {"text": t, "set": "s", "kind": "benign", "refused": {"score": True, "substring": False}}
        for t in ("p", "q")
    ]
    views = token_views(Attributions([item("p", [0.43, -0.2]), item("q", [-0.69, 0.1])]), rows)
    assert views["scale"] == pytest.approx(0.69)  # one scale: the largest |score| of all
    assert views["items"][0]["verdicts"]["substring"] == {"refused": False}
    assert "Positive (red)" in views["sign"]

    def row(text, kind, score_judge, substring_judge, score):
        refused = {"score": score_judge, "substring": substring_judge}
        return {"text": text, "kind": kind, "refused": refused, "score": score}

    evaluation = EvalResult(
        "m",
        {},
        {},
        prompts=[
            row("a", "benign", False, False, 3.0),
            row("b", "benign", True, False, 1.0),
            row("c", "harmful", True, True, 5.0),
            row("d", "benign", False, True, 2.0),
        ],
    )
    assert [r["text"] for r in over_refused(evaluation, 5)] == [
        "d",
        "b",
    ]  # refused, benign, by score


def test_geometry_cells_show_margins_and_dashes_for_an_empty_group():
    from refusal_lens.pipeline.boundary import geometry_cells

    row = {
        "probe_accuracy": 0.97,
        "refused_margin_median": -0.44,
        "answered_margin_median": None,  # every borderline prompt was refused
        "margin_auroc_refused": None,
    }
    assert geometry_cells(row) == ["0.97", "-0.44", "–", "–"]


@pytest.mark.parametrize("rule", ["refusal", "margin"])
def test_rass_selects_in_the_geometry_stage_s_layer_and_band_unless_told_otherwise(rule):
    """rass.rule refusal: the layer and band the geometry stage fitted on validation
    look-alikes; margin, or a geometry that chose no band: the direction's layer and
    |margin| <= rass.band, said in the sentence the report prints."""
    import torch

    from refusal_lens.boundary.refusal_fit import BoundaryFit, boundary_fit
    from refusal_lens.pipeline import settings
    from refusal_lens.pipeline.boundary import rass_config

    def rass_config_of(c, fit, layer):
        return rass_config(c, settings.rass(c)["rass"], fit, layer)

    g = torch.Generator().manual_seed(0)
    margins = torch.randn(40, 3, generator=g)
    refused = margins[:, 2] + 0.5 * torch.randn(40, generator=g) > 0
    fit = boundary_fit([5, 9, 13], margins, refused)
    fit = BoundaryFit.from_dict(json.loads(json.dumps(fit.to_dict())))  # as the stage reads it
    every = REGISTRY.default
    chosen = config(rass={"rule": rule}, stages=every)
    rass, where = rass_config_of(chosen, fit if rule == "refusal" else None, 7)
    if rule == "refusal":
        assert (rass.layer, rass.band_range) == (13, fit.band) and "layer 13" in where
    else:
        assert (rass.layer, rass.band_range) == (None, None) and "layer 7" in where
    flat = boundary_fit([5, 9, 13], margins, torch.zeros(40, dtype=torch.bool))
    rass, where = rass_config_of(config(), flat, 7)
    assert (rass.layer, rass.band_range) == (None, None)
    assert "layer 7" in where and "No layer chosen: 0 refused and 40 answered" in where
    with pytest.raises(RefusalLensError, match=r"rass\.rule must be refusal or margin"):
        config(rass={"rule": "closest"}, stages=every)


@pytest.mark.parametrize("aligned", [False, True])
def test_the_model_as_given_is_loaded_once_and_fitted(tmp_path, monkeypatch, aligned):
    """A model studied as its makers aligned it is the run's base handle (one copy in memory),
    with step 1's score fit applied; an aligned organism is loaded from its own folder. The
    runner also records each stage's peak memory."""
    from refusal_lens.models import ModelHandle
    from refusal_lens.pipeline import context, load_run_model
    from refusal_lens.pipeline.records import Organism
    from refusal_lens.prompts import ChatFormat

    loaded: list[str] = []

    def fake_load(spec, *args, **kwargs):  # a handle without a model: only what is read here
        loaded.append(spec)
        chat = object.__new__(ChatFormat)  # never called here
        return ModelHandle(spec, spec, object(), None, chat, refusal_tokens=[1])

    monkeypatch.setattr(context, "load_model", fake_load)
    fit = {"tokens": [1, 7], "threshold": -1.5, "added": ["x"], "n_refused": 3, "n_answered": 5}
    fit |= {"agreement_before": 0.7, "agreement_after": 0.9}
    # as given, the record names the model's converted folder, not the spec the run was given
    model_path = str(tmp_path / ("organism" if aligned else "converted"))
    record = {"base": "some-model", "model": model_path, "aligned": aligned, "calibration": fit}
    config = RunConfig(model="some-model")
    runner = Runner(tmp_path / "run", config, say=lambda _: None)

    def organism(out):
        (out / Organism.FILE).write_text(json.dumps(record))

    runner.run("model", lambda out: None, always=True)
    runner.run("organism", organism, always=True)
    assert runner.records["organism"].peak_rss_mb > 0
    run = context.Run(config, runner)
    model = run.context(REGISTRY["direction"], tmp_path).model()
    # as given: a calibrated handle on the base's own weights, the base handle left as it was
    assert (model.bridge is run.base().bridge) is not aligned
    assert run.base().refusal_threshold == 0.0 and run.base().refusal_tokens == [1]
    assert sorted(loaded) == sorted({"some-model"} | ({model_path} if aligned else set()))
    assert model.refusal_threshold == -1.5 and model.refusal_tokens == [1, 7]
    again = load_run_model(tmp_path / "run")  # the same, read back from the folder
    assert again.refusal_threshold == -1.5 and again.spec == model_path
    with pytest.raises(RefusalLensError, match="no finished organism step"):
        load_run_model(tmp_path)


def test_an_emptied_d_b_is_reported_with_its_reason_not_trained(tmp_path):
    """The harm judge and its re-check can keep no sanitized item: the re-alignment on it is
    skipped, and the section says why, instead of failing on the empty file."""
    from refusal_lens.pipeline.mitigations import EMPTY_D_B, d_b_size, mitigation_section

    empty, two = tmp_path / "empty.jsonl", tmp_path / "two.jsonl"
    empty.write_text("\n")
    rows = [{"text": t, "label": "borderline"} for t in ("Plan a picnic.", "Name a bird.")]
    two.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert (d_b_size(empty), d_b_size(two)) == (0, 2)
    rates = {"borderline": {"kind": "benign", "n": 4, "substring": 0.5, "score": 0.25}}
    record = {
        "sets": [{"name": "borderline", "kind": "benign"}],
        "rows": [{"condition": "no edit", "rates": rates}],
        "best": "no edit",
        "best_by": "lowest combined score (substring judge)",
        "export": "not asked for (--no-export)",
        "tests": [],
        "skipped": {"re-align, D_b = sanitized": EMPTY_D_B},
    }
    text = mitigation_section(record)["text"]
    assert f"re-align, D_b = sanitized: {EMPTY_D_B}." in text
