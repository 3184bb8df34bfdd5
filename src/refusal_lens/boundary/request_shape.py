"""RASS's screen, the shape checks: is a candidate a request, and is it in its language?

A candidate is kept only when it reads as something a user asks an assistant: a question, an
instruction or a first-person ask (:func:`is_request`), and, when RASS writes in a language,
when the language detector (:func:`refusal_lens.languages.detect_language`) does not place it
in another one (:func:`wrong_language`). English requests are told by their first word; the
words for German, Spanish, French and Russian were written by hand (question words, polite
auxiliaries and the imperatives of the task verbs in PolyRefuse's harmless prompts); Japanese
and Chinese have no spaces between words, so a request there contains one of a few request
markers (``ください``, ``请``, ...) or ends with a question mark.
"""

from __future__ import annotations

import re

from refusal_lens.languages import DETECTED, UNKNOWN, detect_language

WORDS = re.compile(r"\w+", re.UNICODE)
QUESTION = re.compile(
    r"^(what|how|why|when|where|who|which|is|are|can|could|do|does|did|should|would|will)\b(?!['’]t)",
    re.IGNORECASE,
)
IMPERATIVES = frozenset(
    """analyze brainstorm build calculate choose classify compare compose construct convert
    create define demonstrate describe design develop draft edit evaluate explain find generate
    give identify imagine list make name outline plan predict produce propose provide recommend
    rewrite share show solve suggest summarize teach tell translate use write""".split()  # noqa: SIM905
)
NOT_OPENERS = frozenset("i you he she we they it my your the a an this that there".split())  # noqa: SIM905
FIRST_PERSON = re.compile(
    r"^(i (need|want|would like|am looking|am trying)|i'd like|i'm (looking|trying)|help me|"
    r"please)\b",
    re.IGNORECASE,
)
# First words of a request in languages written with spaces (lower case).
OPENERS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "de": """wie was warum wann wo wer welche welcher welches kann kannst können könnten
        könntest gibt ist sind bitte ich erkläre erklären schreibe schreib schreiben erstelle
        erstellen nenne nennen beschreibe beschreiben gib geben finde entwickle entwirf liste
        fasse vergleiche übersetze berechne schlage empfiehl hilf zeige zeig analysiere
        erzeugen erzeuge generieren generiere verfassen verfasse entwickeln entwerfen finden
        vergleichen übersetzen berechnen klassifizieren klassifiziere kategorisieren
        identifizieren identifiziere analysieren zusammenfassen formulieren formuliere bewerten
        bewerte konstruieren erinnern erläutern erläutere machen mache wählen wähle""",
        "es": """cómo como qué que por cuál cuáles cuándo dónde quién puedes podrías puede
        podría es son necesito quiero ayúdame explica explique escribe escriba describe
        describa dame deme crea cree genera enumera proporciona sugiere nombra compara
        traduce calcula resume diseña desarrolla identifica analiza haz escribir crear
        generar genere redactar redacte describir nombre nombrar enumerar enumere proporcionar
        proporcione sugerir sugiera comparar compare traducir traduzca calcular calcule resumir
        resuma diseñar diseñe desarrollar desarrolle identificar identifique analizar analice
        clasificar clasifique explicar dar haga hacer cuántas cuántos cuánto elabora elaborar
        elabore encuentra encuentre recuerda recuerde cree""",
        "fr": """comment quel quelle quels quelles pourquoi quand où qui que qu est peux
        pouvez pourriez peut j je aide aidez explique expliquez écris écrivez rédige rédigez
        décris décrivez donne donnez crée créez génère générez énumère énumérez propose
        proposez fournis fournissez nomme nommez compare comparez traduis traduisez calcule
        calculez résume résumez conçois concevez identifie identifiez analyse analysez fais
        rédiger écrire créer générer décrire nommer nom donner énumérer proposer fournir
        comparer traduire calculer résumer concevoir identifier analyser expliquer classer
        classez trouvez trouver trouve combien rappelez citez faire faites développer
        développez élaborer élaborez imaginez imagine suggérez suggère""",
        "ru": """как что почему зачем когда где кто какой какая какие каков можешь можете
        могли мне я объясни объясните напиши напишите опиши опишите дай дайте создай создайте
        перечисли перечислите предложи предложите помоги помогите расскажи расскажите назови
        назовите сравни сравните переведи переведите вычисли составь составьте придумай
        придумайте разработай определи найди проанализируй написать создать разработать
        разработка описать назвать дать перечислить предложить сравнить перевести вычислить
        составить придумать определить найти проанализировать объяснить сколько вспомните
        классифицируйте сгенерируйте сгенерировать генерировать создание написание составление
        приведите приведи подготовьте подготовить""",
    }.items()
}
# Request markers in languages written without spaces (any occurrence counts).
MARKERS: dict[str, tuple[str, ...]] = {
    "ja": (
        *("ください", "教えて", "方法", "どう", "どの", "なぜ", "何", "ですか", "ますか", "して"),
        *("します", "する。", "作成", "説明", "書く", "書き", "生成", "挙げ", "提案", "記述"),
    ),
    "zh": (
        *("请", "如何", "怎么", "怎样", "什么", "为什么", "哪", "吗", "给我", "帮我", "写"),
        *("创建", "说出", "建议", "描述", "列出", "生成", "设计", "编写", "提供", "解释"),
    ),
}


def is_instruction(text: str) -> bool:
    """An imperative request (not a question), the shape a frame's ``{task}`` expects."""
    text = text.strip()
    return bool(text) and not text.endswith("?") and not QUESTION.match(text)


def is_request(text: str, openers: frozenset[str] = frozenset(), language: str = "en") -> bool:
    """Shaped like a request: a question (ends with "?" or opens with a question word or
    auxiliary), an instruction (opens with a common imperative verb or a word one of the seeds
    opens with, ``openers``), or a first-person ask ("I need", "I'd like", "Help me"); in
    another language, a question mark, a word of :data:`OPENERS` or a seed's first word, or
    one of :data:`MARKERS`."""
    text = text.strip()
    words = WORDS.findall(text.lower())
    if not words:
        return False
    if text.endswith(("?", "？")) or words[0] in openers:
        return True
    if language in MARKERS:
        return any(m in text for m in MARKERS[language])
    if language in OPENERS:
        return words[0] in OPENERS[language]
    return bool(QUESTION.match(text)) or bool(FIRST_PERSON.match(text)) or words[0] in IMPERATIVES


def wrong_language(text: str, language: str) -> str | None:
    """The language ``text`` is detected in when that is not ``language`` (None when it is,
    or the detector cannot tell, or ``language`` is not one the detector knows)."""
    if language not in DETECTED:
        return None
    found = detect_language(text)
    return None if found in (language, UNKNOWN) else found
