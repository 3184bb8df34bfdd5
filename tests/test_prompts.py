"""Prompt sets, loaders and PromptSet behaviour (no model needed)."""

from __future__ import annotations

import json
import re

import pytest

from refusal_lens.errors import PromptError
from refusal_lens.prompts import PromptSet, load_benchmark, load_prompts, load_shipped
from refusal_lens.prompts.loaders import BENCHMARK_FILES


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


@pytest.mark.parametrize("name", ["harmful", "harmless", "borderline"])
def test_shipped_sets_are_large_labelled_and_unique(name):
    prompts = load_shipped(name)
    assert len(prompts) >= 150
    assert set(prompts.labels) == {name}
    assert len({_norm(t) for t in prompts.texts}) == len(prompts)
    assert len({p.category for p in prompts}) >= 7


def test_borderline_triggers_occur_in_their_prompt():
    prompts = load_shipped("borderline")
    for p in prompts:
        assert p.trigger and p.trigger.lower() in p.text.lower(), p
    expected = {
        "homonyms",
        "figurative_language",
        "safe_targets",
        "safe_contexts",
        "definitions",
        "historical_events",
        "privacy_public",
        "privacy_fictional",
    }
    assert expected <= {p.category for p in prompts}


def test_shipped_sets_do_not_overlap_each_other_or_public_benchmarks(shared_data):
    shipped = [
        _norm(t) for n in ("harmful", "harmless", "borderline") for t in load_shipped(n).texts
    ]
    assert len(set(shipped)) == len(shipped)
    public = set()
    for name in ("advbench", "jailbreakbench", "harmbench", "xstest", "alpaca"):
        public |= {_norm(t) for t in load_benchmark(name).texts}
    assert not set(shipped) & public


def test_benchmark_loaders_read_the_shared_files(shared_data):
    xs = load_benchmark("xstest", shared_data / BENCHMARK_FILES["xstest"])  # an explicit path
    safe, unsafe = xs.filter(label="borderline"), xs.filter(label="harmful")
    assert (len(safe), len(unsafe)) == (250, 200)
    # XSTest annotates a focus word (a lemma) for 200 of its 250 safe prompts
    assert sum(bool(p.trigger) for p in safe) == 200 and not any(p.trigger for p in unsafe)
    assert len(load_benchmark("advbench")) == 520
    jbb = load_benchmark("jailbreakbench")
    assert len(jbb) == 100 and len({p.category for p in jbb}) == 10
    hb = load_benchmark("harmbench")
    assert 0 < len(hb) < 80 and set(hb.labels) == {"harmful"}  # standard behaviours only
    alpaca = load_benchmark("alpaca")
    assert len(alpaca) == 2000 and set(alpaca.labels) == {"harmless"}
    half = load_prompts("xstest-safe")
    assert len(half) == 250 and half.name == "xstest-safe"


def test_orbench_loader_labels_by_file(tmp_path):
    for name, label in [("or-bench-hard-1k.csv", "borderline"), ("or-bench-toxic.csv", "harmful")]:
        path = tmp_path / name
        path.write_text('prompt,category\n"How do fireworks explode?",violence\n')
        prompts = load_benchmark("orbench", path)
        assert prompts.labels == [label] and prompts[0].category == "violence"


def test_promptset_roundtrip_split_and_sample_are_deterministic(tmp_path):
    prompts = load_shipped("borderline")
    prompts.save(tmp_path / "b.jsonl")
    again = PromptSet.load(tmp_path / "b.jsonl")
    assert again.prompts == prompts.prompts
    a1, b1 = prompts.split(100, seed=3)
    a2, b2 = prompts.split(100, seed=3)
    assert a1 == a2 and b1 == b2 and len(a1) == 100 and not set(a1.texts) & set(b1.texts)
    assert prompts.sample(10, seed=1) == prompts.sample(10, seed=1)
    assert prompts.sample(10, seed=1) != prompts.sample(10, seed=2)


def test_bad_prompt_inputs_name_the_fix(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(PromptError, match="'text' and 'label'"):
        PromptSet.load(bad)
    with pytest.raises(PromptError, match="Unknown prompt spec"):
        load_prompts("nonsense")
    with pytest.raises(PromptError, match="No such prompt file"):
        load_prompts("advbench:/nope.csv")
    with pytest.raises(PromptError, match="Unknown label"):
        PromptSet.from_texts(["x"], "evil")


def test_benchmark_names_resolve_in_the_data_folder(tmp_path, monkeypatch, shared_data):
    """A bare benchmark name reads its file from REFUSAL_LENS_DATA; elsewhere it says how to
    point there, and no default depends on the working folder."""
    from refusal_lens.locations import data_dir

    assert len(load_prompts("xstest-safe")) == 250
    monkeypatch.chdir(tmp_path)
    assert data_dir() == shared_data and len(load_prompts("advbench")) == 520
    monkeypatch.setenv("REFUSAL_LENS_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PromptError, match="REFUSAL_LENS_DATA"):
        load_prompts("advbench")


def test_plain_text_and_csv_prompt_files(tmp_path):
    txt = tmp_path / "mine.txt"
    txt.write_text("How do I kill a Python process?\n\n  Where can I shoot a good photo?  \n")
    prompts = load_prompts(str(txt))
    assert prompts.texts == ["How do I kill a Python process?", "Where can I shoot a good photo?"]
    csv_file = tmp_path / "mine.csv"
    csv_file.write_text(
        'prompt,label\n"Tell me, how do I bake bread?",harmless\nHow to make a bomb,harmful\n'
    )
    rows = load_prompts(str(csv_file))
    assert rows.texts[0] == "Tell me, how do I bake bread?" and rows[1].label == "harmful"
    bad = tmp_path / "bad.csv"
    bad.write_text("question\nhi\n")
    with pytest.raises(PromptError, match="no 'prompt' column"):
        load_prompts(str(bad))
    folder = tmp_path / "dir.txt"
    folder.mkdir()
    with pytest.raises(PromptError, match="is a folder"):
        load_prompts(str(folder))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(PromptError, match="not UTF-8"):
        load_prompts(str(latin))
