"""Prompt sets by language (PolyRefuse), the language detector and the judges that use it."""

from __future__ import annotations

import json

import pytest

from refusal_lens.errors import PromptError
from refusal_lens.languages import UNKNOWN, detect_language
from refusal_lens.prompts import PromptSet, load_prompts
from refusal_lens.prompts.polyrefuse import LANGUAGES, load_polyrefuse
from refusal_lens.scoring import REFUSAL_PHRASES, judge_text, phrases_for


@pytest.mark.parametrize("kind,n", [("harmful", 572), ("harmless", 500)])
def test_polyrefuse_test_splits_pair_every_language_with_the_same_english(shared_data, kind, n):
    english = load_polyrefuse(kind, "en")
    assert len(english) == n and english.texts == english.originals
    for language in LANGUAGES:
        if (kind, language) == ("harmless", "zh"):
            continue  # the source has no Chinese harmless test split
        translated = load_prompts(f"polyrefuse-{kind}:{language}")
        assert translated.originals == english.texts
        assert {p.language for p in translated} == {language}
        assert {p.label for p in translated} == {kind}
        # a translation, not the English text again (a few short items may coincide)
        same = sum(a == b for a, b in zip(translated.texts, english.texts, strict=True))
        assert same < 0.05 * n, (language, same)


def test_polyrefuse_train_and_val_splits_hold_translations_only(shared_data):
    train = load_prompts("polyrefuse-harmful:ru:train")
    assert len(train) == 260 and train.name == "polyrefuse-harmful:ru:train"
    assert all(p.original is None for p in train)
    assert detect_language(" ".join(train.texts[:20])) == "ru"
    assert len(load_prompts("polyrefuse-harmless:zh:val")) == 200


def test_polyrefuse_bad_specs_name_the_fix(shared_data):
    with pytest.raises(PromptError, match=r"Unknown language 'xx'; available: en \(English\), de"):
        load_prompts("polyrefuse-harmful:xx")
    with pytest.raises(PromptError, match=r"harmless_test_de\.json.*pick one of those"):
        load_prompts("polyrefuse-harmless:zh")
    with pytest.raises(PromptError, match="test split only"):
        load_prompts("polyrefuse-harmful:en:train")
    with pytest.raises(PromptError, match="names no language"):
        load_prompts("polyrefuse-harmful")
    with pytest.raises(PromptError, match="Unknown split 'dev'"):
        load_prompts("polyrefuse-harmful:de:dev")


def test_a_test_item_without_its_translation_is_named(tmp_path):
    rows = [
        {"instruction": "Say hello", "instruction_translated": "Sag hallo", "category": None},
        {"instruction": "Count to ten", "category": None},
    ]
    path = tmp_path / "harmless_test_de.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(PromptError, match=r"Item 1 of .*'Count to ten'.*instruction_translated"):
        load_polyrefuse("harmless", "de", path=path)
    loaded = load_polyrefuse("harmless", "de", path=path, split="val")  # train/val: no pair
    assert loaded.texts == ["Say hello", "Count to ten"]


def test_language_fields_round_trip_and_stay_out_of_english_files(tmp_path, shared_data):
    german = load_prompts("polyrefuse-harmful:de")[:3]
    german.save(tmp_path / "de.jsonl")
    assert PromptSet.load(tmp_path / "de.jsonl").prompts == german.prompts
    english = load_prompts("harmful")[:3]
    english.save(tmp_path / "en.jsonl")
    row = json.loads((tmp_path / "en.jsonl").read_text().splitlines()[0])
    assert set(row) == {"text", "label", "category", "trigger", "source"}


@pytest.mark.parametrize(
    "text,language",
    [
        ("Es tut mir leid, aber dabei kann ich Ihnen nicht helfen.", "de"),
        ("Lo siento, pero no puedo ayudarte con eso.", "es"),
        ("Je suis désolé, mais je ne peux pas vous aider avec cela.", "fr"),
        ("申し訳ありませんが、そのご要望にはお応えできません。", "ja"),
        ("Извините, но я не могу помочь с этим запросом.", "ru"),
        ("对不起，我不能帮助你完成这个请求。", "zh"),
        ("I'm sorry, but I can't help with that request.", "en"),
    ],
)
def test_detector_places_a_sentence_in_each_language(text, language):
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["", "   ", "12345 67", "!!! ???", "<|im_end|>"])
def test_text_without_a_language_is_unknown_never_an_error(text):
    assert detect_language(text) == UNKNOWN


def test_substring_judge_reads_each_languages_refusals():
    for language, phrases in REFUSAL_PHRASES.items():
        assert set(REFUSAL_PHRASES["en"]) <= set(phrases_for(language))
        for phrase in phrases:
            assert phrase in phrases_for(language) and phrase in phrases_for(UNKNOWN)
    assert judge_text("Извините, но я не могу помочь с этим запросом.") == (
        "refuses",
        "refusal phrase (ru)",
    )
    assert judge_text("Конечно! Вот короткое стихотворение о весне и солнце.") == (
        "complies",
        "no refusal phrase (ru)",
    )
    # English answers keep the English judge's reasons
    assert judge_text("I'm sorry, but I can't help with that.") == ("refuses", "refusal phrase")
    # the English-only judge misses the Russian refusal
    assert judge_text("Извините, но я не могу помочь с этим запросом.", multilingual=False)[0] == (
        "complies"
    )


def test_unknown_language_is_recorded_in_the_verdict():
    verdict, reason = judge_text("42")
    assert verdict == "complies" and reason == "no refusal phrase (unknown language)"


def test_each_languages_refusal_openings_add_tokens_to_the_english_ones(smollm):
    from refusal_lens.models.refusal_tokens import (
        REFUSAL_OPENINGS,
        REFUSAL_OPENINGS_BY_LANGUAGE,
        openings_for,
        refusal_start_tokens,
    )

    english = refusal_start_tokens(smollm.chat, REFUSAL_OPENINGS)
    assert english == smollm.refusal_tokens
    for language in REFUSAL_OPENINGS_BY_LANGUAGE:
        tokens = refusal_start_tokens(smollm.chat, openings_for(language))
        assert tokens[: len(english)] == english  # English first, unchanged
        if language in ("ja", "ru", "zh"):  # other scripts: new first tokens
            assert len(tokens) > len(english), language
    # German "Ich kann …" opens with the token of English "I …" in SmolLM2's tokenizer
    assert refusal_start_tokens(smollm.chat, openings_for("de")) == english


def test_run_languages_select_step_11_and_bad_codes_name_the_fix():
    from refusal_lens.errors import RefusalLensError
    from refusal_lens.pipeline.config import RunConfig

    assert "multilingual" not in RunConfig.preset(quick=True).stages  # English only by default
    config = RunConfig.preset(quick=True, languages=("de", "ru"))
    assert config.languages == ("de", "ru") == config.extra_languages
    assert config.stages[-1] == "multilingual" and config.multilingual.n == 8
    assert RunConfig.preset(languages=("en", "fr")).extra_languages == ("fr",)
    with pytest.raises(PromptError, match=r"Unknown language 'xx'; available: en \(English\)"):
        RunConfig.preset(languages=("de", "xx"))
    with pytest.raises(RefusalLensError, match="twice"):
        RunConfig.preset(languages=("de", "de"))
    with pytest.raises(RefusalLensError, match="--languages de,ru"):
        RunConfig.preset(multilingual={"n": 4})  # a setting of a stage the run does not select
    with pytest.raises(RefusalLensError, match="give them with --languages"):
        RunConfig.preset(stages=("multilingual",))
