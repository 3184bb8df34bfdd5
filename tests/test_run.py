"""``refusal-lens run --quick`` on the bundled model, end to end: interrupted inside alignment
and inside a later stage, resumed, and its report rendered in headless Chromium.

One quick run (about ten minutes on 2 cores) serves every check, so the test is one function
in steps. The fast-tier checks of the bookkeeping are in ``test_pipeline.py``.
"""

from __future__ import annotations

import json

import pytest

from browser import render_in_chromium
from refusal_lens.pipeline import RunConfig, run_pipeline
from refusal_lens.pipeline.runner import FOLDERS, RUN_FILE, STAGE_FILE

pytestmark = pytest.mark.model


def complete(folder) -> list[str]:
    return [s for s, name in FOLDERS.items() if (folder / name / STAGE_FILE).is_file()]


def interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt  # what Ctrl-C raises; a SIGKILL leaves the same files behind


def test_quick_run_resumes_after_interruptions_and_its_report_renders(
    tmp_path, monkeypatch, shared_data
):
    import refusal_lens.alignment.train as train_module
    import refusal_lens.pipeline.explain as explain

    out, config = tmp_path / "run", RunConfig.preset(quick=True)
    say = lambda _: None  # noqa: E731

    # 1. killed inside alignment (training): only the model facts are complete
    with monkeypatch.context() as m:
        m.setattr(train_module, "train", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(config, out, say=say)
    assert complete(out) == ["model"]

    # 2. killed inside geometry, after it saved its tensors into its temporary folder
    with monkeypatch.context() as m:
        m.setattr(explain, "write_geometry_figures", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(config, out, say=say)
    before = complete(out)
    assert before == ["model", "organism", "evaluate", "direction", "interventions",
                      "attribution", "triggers"]  # fmt: skip
    keys = {s: json.loads((out / FOLDERS[s] / STAGE_FILE).read_text())["key"] for s in before}
    assert not (out / FOLDERS["geometry"]).exists() and not list(out.glob(".*.tmp"))

    # 3. the rerun reuses what is complete and resumes at geometry
    report = run_pipeline(config, out, say=say)
    status = {r["name"]: r["status"] for r in json.loads((out / RUN_FILE).read_text())["stages"]}
    assert all(status[FOLDERS[s]] == "cached" for s in before)
    ran = [s for s in FOLDERS if status[FOLDERS[s]] == "ran"]
    assert ran == ["geometry", "rass", "mitigations"]
    assert keys == {
        s: json.loads((out / FOLDERS[s] / STAGE_FILE).read_text())["key"] for s in before
    }
    check_results(out)

    # 4. the report, as a browser shows it
    seen = render_in_chromium(report)
    assert set(seen["stages"]) >= set(FOLDERS.values()) and not seen["errors"]
    assert seen["images"] and all(img["decoded"] for img in seen["images"])
    assert seen["token_views"] and all(v["rendered"] for v in seen["token_views"])
    assert seen["bundles"] == 1 and not seen["resources"]


def check_results(out) -> None:
    """What the quick run found: the organism refuses, the mitigations were judged on the
    same prompts as the unedited model."""
    organism = json.loads((out / FOLDERS["organism"] / "organism.json").read_text())
    assert organism["aligned"]  # SmolLM2-135M-Instruct refuses little on its own
    assert organism["after"]["AdvBench"]["substring"] > organism["before"]["AdvBench"]["substring"]
    record = json.loads((out / FOLDERS["mitigations"] / "mitigations.json").read_text())
    names = [row["condition"] for row in record["rows"]]
    assert names[0].startswith("base") and any("sanitized" in n for n in names)
    assert any("RASS" in n for n in names) and any("w′" in n for n in names)
    n = {s: v["n"] for s, v in record["rows"][0]["rates"].items()}
    assert all({s: v["n"] for s, v in row["rates"].items()} == n for row in record["rows"])
    assert (out / FOLDERS["mitigations"] / "export" / "config.json").is_file()
