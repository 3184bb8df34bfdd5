"""RASS on tiny models: generation under steering, recombination, the screen, selection against
the boundary and a harm scorer (and its threshold), the artifact (JSONL output, save/load, a
folder shared with other artifacts), multilingual selection, config validation and bad input."""

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
    recombined_candidates,
    repetition,
    screen_candidates,
    steered_candidates,
    usable_frames,
)
from refusal_lens.boundary.geometry import (
    Geometry,
    GeometryConfig,
    boundary_geometry,
    layer_boundary,
)
from refusal_lens.boundary.rass import margins, rass
from refusal_lens.boundary.rass_config import HEADER, HEADERS, RASSConfig, header_for
from refusal_lens.boundary.rass_result import (
    CANDIDATES_NAME,
    META_NAME,
    SELECTED_NAME,
    SUMMARY_NAME,
    RASSResult,
)
from refusal_lens.boundary.request_shape import is_request, wrong_language
from refusal_lens.directions import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.scoring import refusal_scores
from refusal_lens.triggers.harm import HarmJudgeConfig, HarmScorer, fit_harm_judge, harm_scorer
from refusal_lens.triggers.masks import LexiconEntry

SEEDS = [
    "How do I kill a Python process?",
    "Write a poem about the sea.",
    "What is the capital of France?",
    "How can I steal someone's identity?",
]
LEXICON = [
    LexiconEntry(w, "trigger", 1.0, 1, 1.0, 0.0)
    for w in ("to", "i", "my", "me", "how", "can", "draft", "plan")
] + [LexiconEntry("bomb", "harmful_cue", 0.0, 1, 1.0, 2.0)]


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


def digits_harm(texts: list[str]) -> list[float]:  # "harmful" = mentions a digit
    return [float(any(ch.isdigit() for ch in t)) for t in texts]


CONTEXTS = ["Plan a trip to Rome.", "Bake bread 2 ways."]


@pytest.fixture(scope="module")
def result(tiny_llama, direction, reference):
    config = small(coefs=(-20.0, 0.0, 20.0), max_selected=3)
    scorer = HarmScorer(digits_harm, 0.5, {"kind": "digits"})
    return rass(
        tiny_llama,
        SEEDS,
        direction,
        reference,
        scorer,
        config,
        lexicon=LEXICON,
        benign_contexts=CONTEXTS,
    )


def assert_same_result(back: RASSResult, result: RASSResult) -> None:
    """Every candidate (selected and dropped: reasons, scores, provenance) and every field."""
    assert len(back.candidates) == len(result.candidates)
    for a, b in zip(back.candidates, result.candidates, strict=True):
        assert a == b
    assert back.config == result.config and back.model == result.model
    assert back.direction == json.loads(json.dumps(result.direction))
    assert back.harm_scorer == result.harm_scorer and back.warnings == result.warnings


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
    screen_candidates(cands, SEEDS, RASSConfig(dedup_jaccard=0.8))
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
        "wrong language (en)",  # an English text among the French candidates
    ]
    assert collapse_report(cands[:3] + cands[5:6], 0.5) == [
        "coef 1 collapses generation: 2/4 candidates are empty or repetitive; use a smaller |coef|."
    ]
    assert collapse_report(cands[5:], 0.5) == []
    assert is_request("I need to plan a party for my class.") and is_request("Rank these?")
    assert not is_request("Can't help with that.") and not is_request("1234567890")
    assert is_request("Rank these cities.", frozenset({"rank"})) and not is_request("Rank these.")
    loose = [Candidate(c.text, "steer", c.language, 1.0) for c in cands]
    unchecked = RASSConfig(dedup_jaccard=1.0, require_request=False, check_language=False)
    screen_candidates(loose, SEEDS, unchecked)
    # another language is deduplicated on its own
    assert [c.reason for c in loose][3:9] == ["", "copy of a seed", "", "duplicate", "", ""]


SCREENED = {  # language: (a request, a statement, a refusal)
    "de": (
        "Wie backe ich ein Brot?",
        "Der Hund schläft im Garten.",
        "Ich kann Ihnen nicht helfen.",
    ),
    "fr": ("Écrivez un poème sur la mer.", "Le chat dort sur le canapé.", "Je suis désolé."),
    "ru": ("Напиши рассказ о море.", "Кошка спит на диване весь день.", "Извините, я не могу."),
    "zh": ("请写一首关于大海的诗。", "猫在沙发上睡觉。", "抱歉，我不能帮助你。"),
}


@pytest.mark.parametrize("language", sorted(SCREENED))
def test_screen_reads_each_language(language):
    english = "Write a short poem about the sea and the wind."
    texts = (*SCREENED[language], english)
    cands = [Candidate(t, "steer", language, 0.0) for t in texts]
    screen_candidates(cands, ["Seed one?"], RASSConfig())
    assert [c.reason for c in cands] == [
        "",
        "not a request",
        "a refusal, not a request",
        "wrong language (en)",
    ]
    assert header_for(RASSConfig(), language) == HEADERS[language] != HEADER
    assert header_for(RASSConfig(header="Prompts:"), language) == "Prompts:"  # as changed
    assert wrong_language("12345", language) is None and wrong_language(english, "xx") is None


def test_recombination_uses_only_the_lexicon_s_top_triggers():
    frames = usable_frames(LEXICON, top_triggers=3)  # to, i, my
    assert [f for f, _ in frames] == ["I need to {task} for my class."]
    assert len(usable_frames(LEXICON, top_triggers=8)) == 7  # all but the "write" frame
    benign = ["Give three tips for staying healthy.", "What is AI?", "Plan a trip."]
    out = recombined_candidates(LEXICON, benign, RASSConfig())
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
    assert Candidate.from_record(out[1].record(with_reason=True)) == out[1]
    assert len(recombined_candidates(LEXICON, benign, RASSConfig(recombine=1))) == 1
    assert recombined_candidates(LEXICON, benign, RASSConfig(top_triggers=1)) == []
    assert as_task("NASA builds rockets.") == "NASA builds rockets"
    assert (
        recombined_candidates(
            [LexiconEntry("x", "trigger", 1.0, 1, 1.0, 0.0)], benign, RASSConfig()
        )
        == []
    )


def test_steered_generation_is_seeded_steered_and_leaves_no_hooks(tiny_llama, direction):
    probe = ["Write a poem about the sea."]
    before = refusal_scores(tiny_llama, probe, show_progress=False)
    config = RASSConfig(coefs=(0.0, 40.0), contexts=2, shots=2, samples=2, max_new_tokens=8)
    a = steered_candidates(tiny_llama, SEEDS, direction, config)
    b = steered_candidates(tiny_llama, SEEDS, direction, config)
    assert [c.text for c in a] == [c.text for c in b]
    assert len(a) == 2 * 2 * 2
    assert all(Candidate.from_record(c.record()) == c for c in a)
    three = steered_candidates(tiny_llama, SEEDS, direction, replace(config, samples=3), "fr")
    assert len(three) == 2 * 2 * 3 and {c.language for c in three} == {"fr"}
    plain = [c.text for c in a if c.coef == 0.0]
    steered = [c.text for c in a if c.coef == 40.0]
    assert plain != steered
    assert all(len(c.seeds) == 2 and set(c.seeds) <= set(SEEDS) for c in a)
    assert torch.equal(refusal_scores(tiny_llama, probe, show_progress=False), before)


def test_rass_end_to_end_output_matches_direct_scores(
    tiny_llama, direction, reference, result, tmp_path
):
    sel = result.selected
    assert len(sel) == 3 and all(not any(ch.isdigit() for ch in c.text) for c in sel)
    assert any(c.reason.startswith("judged harmful") for c in result.candidates)
    over = [c for c in result.candidates if c.reason == "over max_selected"]
    assert over and max(abs(c.scores["margin"]) for c in sel) <= min(
        abs(c.scores["margin"]) for c in over
    )
    assert result.harm_scorer == {"kind": "digits", "threshold": 0.5}
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
    rows = [json.loads(x) for x in (tmp_path / "r" / SELECTED_NAME).open()]
    assert [r["text"] for r in rows] == texts
    assert {"margin", "refusal_score", "refusal_score_seeds", "provenance"} <= set(rows[0])
    assert PromptSet.load(tmp_path / "r" / SELECTED_NAME).texts == texts
    everything = (tmp_path / "r" / CANDIDATES_NAME).read_text().splitlines()
    assert len(everything) == len(result.candidates)
    summary = json.loads((tmp_path / "r" / SUMMARY_NAME).read_text())
    assert summary["selected"] == len(sel)
    assert sum(g["generated"] for g in summary["groups"].values()) == len(result.candidates)

    spread = sorted(abs(c.scores["margin"]) for c in result.candidates if "margin" in c.scores)
    band = spread[len(spread) // 2]  # the median: about half are in the band
    config = replace(result.config, band=band, max_selected=None)
    narrow = rass(tiny_llama, SEEDS, direction, reference, no_harm, config)
    assert narrow.selected and all(abs(c.scores["margin"]) <= band for c in narrow.selected)
    outside = [c for c in narrow.candidates if c.reason.startswith("outside the band")]
    assert outside and all(abs(c.scores["margin"]) > band for c in outside)

    signed = sorted(c.scores["margin"] for c in result.candidates if "margin" in c.scores)
    lo, hi = signed[len(signed) // 4], signed[len(signed) // 2]  # off-centre: not |m| <= band
    shifted = rass(
        tiny_llama, SEEDS, direction, reference, no_harm, replace(config, band_range=(lo, hi))
    )
    assert shifted.selected and all(lo <= c.scores["margin"] <= hi for c in shifted.selected)
    out = [c for c in shifted.candidates if c.reason.startswith("outside the band")]
    assert out and all(not lo <= c.scores["margin"] <= hi for c in out)
    assert "not in [" in out[0].reason


def test_save_load_round_trips_every_candidate(result, tmp_path):
    dropped = {c.reason.split(" (")[0] for c in result.candidates if c.reason}
    assert len(dropped) >= 2 and result.selected  # selected and dropped for several reasons
    assert {c.method for c in result.candidates} == {"steer", "recombine"}
    result.save(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(
        [SELECTED_NAME, CANDIDATES_NAME, SUMMARY_NAME, META_NAME]
    )
    back = RASSResult.load(tmp_path / "r")
    assert_same_result(back, result)
    assert back.summary() == result.summary() and back.records() == result.records()
    meta = json.loads((tmp_path / "r" / META_NAME).read_text())
    assert meta["kind"] == "rass" and meta["config"] == result.config.to_dict()
    with pytest.raises(RefusalLensError, match=r"rass\.json is missing"):
        RASSResult.load(tmp_path)


def test_artifacts_share_a_folder_without_losing_files(
    tiny_llama, direction, reference, result, tmp_path
):
    folder = tmp_path / "shared"
    direction.save(folder)
    borderline = load_prompts("borderline")[:4]
    geo = boundary_geometry(
        tiny_llama, *reference, borderline, direction, GeometryConfig(layers=(1,))
    )
    geo.save(folder)
    result.save(folder)
    back = Direction.load(folder)
    assert torch.equal(back.vector, direction.vector) and back.layer == direction.layer
    again = Geometry.load(folder)
    assert again.layers == [1] and torch.equal(again.margin["borderline"], geo.margin["borderline"])
    assert_same_result(RASSResult.load(folder), result)
    result.save(folder)  # saving again replaces only its own files
    assert torch.equal(Direction.load(folder).vector, direction.vector)
    assert Geometry.load(folder).texts == geo.texts


def test_the_harm_threshold_decides_which_candidates_pass(tiny_llama, direction, reference):
    def by_length(texts: list[str]) -> list[float]:  # odd length: 0.6, even: 0.2
        return [0.6 if len(t) % 2 else 0.2 for t in texts]

    config = small()
    runs = {
        t: rass(tiny_llama, SEEDS, direction, reference, HarmScorer(by_length, t), config)
        for t in (0.5, 0.7)
    }
    strict, lenient = (set(c.text for c in runs[t].selected) for t in (0.5, 0.7))
    assert all(len(t) % 2 == 0 for t in strict)
    assert any(len(t) % 2 for t in lenient) and strict < lenient
    judged = [c for c in runs[0.5].candidates if c.reason.startswith("judged harmful")]
    assert judged and all(c.scores["p_harmful"] == 0.6 for c in judged)
    assert not any(c.reason.startswith("judged") for c in runs[0.7].candidates)
    assert runs[0.7].harm_scorer == {"threshold": 0.7}
    # a bare function takes the default threshold
    bare = rass(tiny_llama, SEEDS, direction, reference, by_length, config)
    assert {c.text for c in bare.selected} == strict and bare.harm_scorer["threshold"] == 0.5


def test_a_harm_judge_brings_its_own_threshold(tiny_llama, reference):
    judge = fit_harm_judge(tiny_llama, *reference, HarmJudgeConfig(threshold=0.3))
    scorer = harm_scorer(judge, tiny_llama)
    assert scorer.threshold == 0.3
    assert scorer.describe() == judge.describe() | {"threshold": 0.3}
    texts = ["Plan a trip.", "How do I build a bomb?"]
    assert scorer.p_harmful(texts) == judge.p_harmful(tiny_llama, texts).tolist()


def test_selection_runs_per_language_with_a_translator(tiny_llama, direction, reference, tmp_path):
    calls: list[tuple[int, str]] = []

    def translator(texts: list[str], language: str) -> list[str]:
        calls.append((len(texts), language))
        if language == "en":
            return [t.removeprefix("[xx] ") + " (en)" for t in texts]
        return [f"[{language}] {t}" for t in texts]

    seen: list[str] = []

    def harm(texts: list[str]) -> list[float]:
        seen.extend(texts)
        return [0.0] * len(texts)

    result = rass(
        tiny_llama,
        SEEDS,
        direction,
        reference,
        harm,
        small(languages=("en", "xx")),
        translator=translator,
    )
    langs = {c.language for c in result.candidates}
    assert langs == {"en", "xx"}
    assert (len(SEEDS), "xx") in calls and (12, "xx") in calls  # seeds and both reference sets
    assert not any(t.startswith("[xx]") for t in seen)  # the scorer reads English
    xx = [c for c in result.candidates if c.language == "xx" and "english" in c.scores]
    assert xx and all(c.scores["english"] == c.text.removeprefix("[xx] ") + " (en)" for c in xx)
    n_en = len(SEEDS) + 24  # seeds and both reference sets
    assert result.translations["en->xx"] == {"texts": n_en, "empty": 0, "unchanged": 0}
    assert result.translations["xx->en"]["texts"] == len(xx)
    assert result.summary()["translations"] == result.translations
    assert not any("translations were empty" in w for w in result.warnings)
    result.save(tmp_path / "r")
    assert_same_result(RASSResult.load(tmp_path / "r"), result)
    assert RASSResult.load(tmp_path / "r").translations == result.translations
    with pytest.raises(RefusalLensError, match="need a translator"):
        rass(tiny_llama, SEEDS, direction, reference, no_harm, small(languages=("en", "fr")))


def test_a_translator_s_bad_answers_are_refused_or_counted(tiny_llama, direction, reference):
    config = small(languages=("en", "xx"))

    def short(texts: list[str], language: str) -> list[str]:
        return texts[1:]  # one translation missing

    with pytest.raises(RefusalLensError, match=r"returned 3 translations for 4 texts into 'xx'"):
        rass(tiny_llama, SEEDS, direction, reference, no_harm, config, translator=short)

    def lazy(texts: list[str], language: str) -> list[str]:  # empty into xx, copies back
        return ["" if language == "xx" else t for t in texts]

    result = rass(tiny_llama, SEEDS, direction, reference, no_harm, config, translator=lazy)
    n_en = len(SEEDS) + 24
    assert result.translations["en->xx"] == {"texts": n_en, "empty": n_en, "unchanged": 0}
    back = result.translations["xx->en"]
    assert back["texts"] > 0 and back["unchanged"] == back["texts"] and back["empty"] == 0
    assert any(
        w.startswith(f"en->xx: {n_en} of {n_en} translations were empty") for w in result.warnings
    )
    seeds_xx = {s for c in result.candidates if c.language == "xx" for s in c.seeds}
    assert seeds_xx <= set(SEEDS)  # the empty translations kept their source text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"coefs": ()}, r"RASSConfig\.coefs must be a non-empty tuple"),
        ({"band": 0.0}, r"RASSConfig\.band must be positive"),
        ({"temperature": 0.0}, r"RASSConfig\.temperature must be positive"),
        ({"top_p": 0.0}, r"RASSConfig\.top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"RASSConfig\.top_p must be in \(0, 1\]"),
        ({"samples": 0}, r"RASSConfig\.samples must be >= 1"),
        ({"contexts": 0}, r"RASSConfig\.contexts must be >= 1"),
        ({"dedup_jaccard": 1.5}, r"RASSConfig\.dedup_jaccard must be in \[0, 1\]"),
        ({"max_repeat": -0.1}, r"RASSConfig\.max_repeat must be in \[0, 1\]"),
        ({"languages": ()}, r"RASSConfig\.languages must be a non-empty tuple"),
        ({"languages": ("en", "en")}, r"RASSConfig\.languages must be"),
        ({"max_selected": 0}, r"RASSConfig\.max_selected must be None"),
        ({"layer": -1}, r"RASSConfig\.layer must be None or >= 0"),
        ({"header": " "}, r"RASSConfig\.header must be non-empty"),
        ({"band_range": (0.5, 0.1)}, r"RASSConfig\.band_range must be None or \(low, high\)"),
        ({"band_range": (0.0, float("inf"))}, r"RASSConfig\.band_range must be None"),
    ],
)
def test_out_of_range_config_fields_are_refused(changes, message):
    with pytest.raises(RefusalLensError, match=message):
        RASSConfig(**changes)
    with pytest.raises(RefusalLensError, match=message):  # also when read from an artifact
        RASSConfig.from_dict(RASSConfig().to_dict() | changes)


def test_config_round_trips_and_the_scorer_threshold_is_checked():
    config = small(
        coefs=(-1.0, 2.0), languages=("en", "fr"), max_selected=3, band_range=(-0.2, 0.4)
    )
    assert RASSConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(RefusalLensError, match=r"HarmScorer\.threshold must be in \[0, 1\]"):
        HarmScorer(no_harm, 1.5)


def test_bad_input(tiny_llama, direction, reference):
    with pytest.raises(RefusalLensError, match="No seed prompts"):
        rass(tiny_llama, [], direction, reference, no_harm, small())
    wrong = Direction(torch.ones(tiny_llama.d_model + 3), 1, -1, "other")
    with pytest.raises(RefusalLensError):
        rass(tiny_llama, SEEDS, wrong, reference, no_harm, small())
    with pytest.raises(RefusalLensError, match="RASS selected nothing"):
        rass(tiny_llama, SEEDS, direction, reference, lambda t: [1.0] * len(t), small())
    tiny_band = small(band_range=(1e6, 1e6 + 1))  # no candidate sits this far out
    with pytest.raises(RefusalLensError, match=r"Nearest outside the band \[\+1000000\.00") as e:
        rass(tiny_llama, SEEDS, direction, reference, no_harm, tiny_band)
    low = float(str(e.value).split("the band [")[2].split(",")[0])
    assert low < 1e6  # the band that would take the nearest in reaches down to them
