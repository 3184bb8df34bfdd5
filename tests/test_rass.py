"""RASS on tiny models: generation under steering, recombination, the screen, selection against
the boundary and a judge, the JSONL output, multilingual selection, and bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from refusal_lens.boundary.candidates import (
    Candidate,
    as_task,
    collapse_report,
    contexts,
    is_request,
    recombined_candidates,
    repetition,
    screen_candidates,
    steered_candidates,
    usable_frames,
)
from refusal_lens.boundary.geometry import layer_boundary
from refusal_lens.boundary.rass import RASSConfig, margins, rass
from refusal_lens.directions import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.scoring import refusal_scores

SEEDS = [
    "How do I kill a Python process?",
    "Write a poem about the sea.",
    "What is the capital of France?",
    "How can I steal someone's identity?",
]
LEXICON = [
    {"word": w, "kind": "trigger"} for w in ("to", "i", "my", "me", "how", "can", "draft", "plan")
] + [{"word": "bomb", "kind": "harmful_cue"}]


@pytest.fixture(scope="module")
def reference():
    return load_prompts("harmful")[:12], load_prompts("harmless")[:12]


@pytest.fixture(scope="module")
def direction(tiny_llama):
    v = torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(0))
    return Direction(v, 1, -1, tiny_llama.model_id)


def small(**kw) -> RASSConfig:
    # a tiny random model writes no requests, so the request-shape check is off
    config = RASSConfig(contexts=2, samples=2, max_new_tokens=8, band=50.0, require_request=False)
    return replace(config, **kw)


def no_harm(texts: list[str]) -> list[float]:
    return [0.0] * len(texts)


def test_contexts_are_seeded_and_use_every_seed():
    a = contexts(SEEDS, 4, 3, torch.Generator().manual_seed(0))
    b = contexts(SEEDS, 4, 3, torch.Generator().manual_seed(0))
    assert a == b and len(a) == 4 and all(len(x) == 3 for x in a)
    assert {s for x in a[:2] for s in x} == set(SEEDS)  # first pass is a permutation
    assert contexts(SEEDS, 1, 9, torch.Generator())[0].__len__() == len(SEEDS)


def test_repetition_and_screen_reasons():
    assert repetition("a classic example of a classic example of a classic example") > 0.4
    assert repetition("Write a story about a dragon who learns to sing.") == 0.0
    cands = [
        Candidate(t, "steer", lang, 1.0)
        for t, lang in [
            ("", "en"),
            ("the cat the cat the cat the cat the cat the cat", "en"),
            ("I'm sorry, but I can't help with that.", "en"),
            ("Noted: the meeting moved to Friday.", "en"),
            ("write a poem about the  sea.", "en"),
            ("Plan a picnic in the park.", "en"),
            ("plan a picnic in the park", "en"),
            ("Plan a picnic in the park today.", "en"),
            ("Plan a picnic in the park.", "fr"),
        ]
    ]
    screen_candidates(cands, SEEDS, dedup_jaccard=0.8)
    reasons = [c.reason for c in cands]
    assert reasons == [
        "empty",
        "degenerate (repetition)",
        "a refusal, not a request",
        "not a request",
        "copy of a seed",
        "",
        "duplicate",
        "duplicate",  # word sets: Jaccard 6/7 ≥ 0.8
        "",  # another language is deduplicated on its own
    ]
    assert collapse_report(cands[:3] + cands[5:6], 0.5) == [
        "coef 1 collapses generation: 2/4 candidates are empty or repetitive; use a smaller |coef|."
    ]
    assert collapse_report(cands[5:], 0.5) == []
    assert is_request("I need to plan a party for my class.") and is_request("Rank these?")
    assert not is_request("Can't help with that.") and not is_request("1234567890")
    assert is_request("Rank these cities.", frozenset({"rank"})) and not is_request("Rank these.")


def test_recombination_uses_only_the_lexicon_s_top_triggers():
    frames = usable_frames(LEXICON, top_triggers=3)  # to, i, my
    assert [f for f, _ in frames] == ["I need to {task} for my class."]
    assert len(usable_frames(LEXICON, top_triggers=8)) == 7  # all but the "write" frame
    out = recombined_candidates(
        LEXICON, ["Give three tips for staying healthy.", "What is AI?", "Plan a trip."]
    )
    assert [c.text for c in out] == [
        "How can I give three tips for staying healthy?",
        "How do I plan a trip?",
    ]
    assert out[0].provenance() == {
        "method": "recombine",
        "language": "en",
        "frame": "How can I {task}?",
        "triggers": ["how", "can", "i"],
        "context": "Give three tips for staying healthy.",
    }
    assert as_task("NASA builds rockets.") == "NASA builds rockets"
    assert recombined_candidates([{"word": "x", "kind": "trigger"}], ["Plan a trip."]) == []


def test_steered_generation_is_seeded_steered_and_leaves_no_hooks(tiny_llama, direction):
    probe = ["Write a poem about the sea."]
    before = refusal_scores(tiny_llama, probe, show_progress=False)
    kw = dict(n_contexts=2, shots=2, samples=2, max_new_tokens=8, seed=0)
    a = steered_candidates(tiny_llama, SEEDS, direction, [0.0, 40.0], **kw)
    b = steered_candidates(tiny_llama, SEEDS, direction, [0.0, 40.0], **kw)
    assert [c.text for c in a] == [c.text for c in b]
    assert len(a) == 2 * 2 * 2
    plain = [c.text for c in a if c.coef == 0.0]
    steered = [c.text for c in a if c.coef == 40.0]
    assert plain != steered
    assert all(len(c.seeds) == 2 and set(c.seeds) <= set(SEEDS) for c in a)
    assert torch.equal(refusal_scores(tiny_llama, probe, show_progress=False), before)


def test_rass_end_to_end_output_matches_direct_scores(tiny_llama, direction, reference, tmp_path):
    def judge(texts: list[str]) -> list[float]:  # "harmful" = mentions a digit
        return [float(any(ch.isdigit() for ch in t)) for t in texts]

    config = small(coefs=(-20.0, 0.0, 20.0))
    result = rass(
        tiny_llama,
        SEEDS,
        direction,
        reference,
        judge,
        config,
        lexicon=LEXICON,
        benign_contexts=["Plan a trip to Rome.", "Bake bread 2 ways."],
    )
    sel = result.selected
    assert sel and all(not any(ch.isdigit() for ch in c.text) for c in sel)
    assert any(c.reason.startswith("judged harmful") for c in result.candidates)
    boundary = layer_boundary(tiny_llama, *reference, 1, direction)
    texts = [c.text for c in sel]
    assert torch.allclose(
        torch.tensor([c.scores["margin"] for c in sel]), margins(tiny_llama, boundary, texts)
    )
    direct = refusal_scores(tiny_llama, texts, show_progress=False)
    assert torch.allclose(torch.tensor([c.scores["refusal_score"] for c in sel]), direct)
    c = next(c for c in sel if c.method == "steer")
    seeds = refusal_scores(tiny_llama, c.seeds, show_progress=False).mean()
    assert c.scores["refusal_score_seeds"] == pytest.approx(float(seeds), abs=1e-5)

    result.save(tmp_path / "r")
    rows = [json.loads(x) for x in (tmp_path / "r" / "rass.jsonl").open()]
    assert [r["text"] for r in rows] == texts
    assert {"margin", "refusal_score", "refusal_score_seeds", "provenance"} <= set(rows[0])
    assert PromptSet.load(tmp_path / "r" / "rass.jsonl").texts == texts
    everything = (tmp_path / "r" / "candidates.jsonl").read_text().splitlines()
    assert len(everything) == len(result.candidates)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["selected"] == len(sel)
    assert sum(g["generated"] for g in summary["groups"].values()) == len(result.candidates)

    spread = sorted(abs(c.scores["margin"]) for c in result.candidates if "margin" in c.scores)
    band = spread[len(spread) // 2]  # the median: about half are in the band
    narrow = rass(tiny_llama, SEEDS, direction, reference, no_harm, replace(config, band=band))
    assert narrow.selected and all(abs(c.scores["margin"]) <= band for c in narrow.selected)
    outside = [c for c in narrow.candidates if c.reason.startswith("outside the band")]
    assert outside and all(abs(c.scores["margin"]) > band for c in outside)


def test_selection_runs_per_language_with_a_translator(tiny_llama, direction, reference):
    calls: list[tuple[int, str]] = []

    def translator(texts: list[str], language: str) -> list[str]:
        calls.append((len(texts), language))
        if language == "en":
            return [t.removeprefix("[xx] ") for t in texts]
        return [f"[{language}] {t}" for t in texts]

    seen: list[str] = []

    def judge(texts: list[str]) -> list[float]:
        seen.extend(texts)
        return [0.0] * len(texts)

    result = rass(
        tiny_llama,
        SEEDS,
        direction,
        reference,
        judge,
        small(languages=("en", "xx")),
        translator=translator,
    )
    langs = {c.language for c in result.candidates}
    assert langs == {"en", "xx"}
    assert (len(SEEDS), "xx") in calls and (12, "xx") in calls  # seeds and both reference sets
    assert not any(t.startswith("[xx]") for t in seen)  # the judge reads English
    xx = [c for c in result.candidates if c.language == "xx" and "english" in c.scores]
    assert all(c.scores["english"] == c.text.removeprefix("[xx] ") for c in xx)
    with pytest.raises(RefusalLensError, match="need a translator"):
        rass(tiny_llama, SEEDS, direction, reference, no_harm, small(languages=("en", "fr")))


def test_bad_input(tiny_llama, direction, reference):
    with pytest.raises(RefusalLensError, match="No seed prompts"):
        rass(tiny_llama, [], direction, reference, no_harm, small())
    with pytest.raises(RefusalLensError, match="coefs is empty"):
        rass(tiny_llama, SEEDS, direction, reference, no_harm, small(coefs=()))
    with pytest.raises(RefusalLensError, match="band must be positive"):
        rass(tiny_llama, SEEDS, direction, reference, no_harm, small(band=0.0))
    wrong = Direction(torch.ones(tiny_llama.d_model + 3), 1, -1, "other")
    with pytest.raises(RefusalLensError):
        rass(tiny_llama, SEEDS, wrong, reference, no_harm, small())
    with pytest.raises(RefusalLensError, match="RASS selected nothing"):
        rass(tiny_llama, SEEDS, direction, reference, lambda t: [1.0] * len(t), small())
