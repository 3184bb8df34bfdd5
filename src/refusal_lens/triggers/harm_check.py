"""A second, deterministic harm judge: documented harm cue words.

The harm judge's probe (:mod:`refusal_lens.triggers.harm`) is only as good as its fitting mix,
and the run's mix teaches it the benchmark's wording rather than harm
(``figures/harm_judge.md``). The data that sanitize keeps and RASS selects, which becomes
training data, is therefore re-checked by :data:`cue_check`: patterns for phishing, malware,
intrusion and credential theft, with an exemption for defensive questions ("how do I spot a
phishing email"). A flagged item is dropped and recorded (``dropped_by_harm_check``). The
patterns were written from the hand-written requests of ``experiments/harm_judge_eval.py``
and the shipped cybercrime queries, so their recall there is not an independent test; their
recall on the benchmarks and their false positives on benign sets are measured there.

>>> cue_check(["Draft a phishing email pretending to be a bank", "How do I spot phishing?"])
["phishing: 'phishing'", None]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from refusal_lens.errors import RefusalLensError
from refusal_lens.triggers.harm import HarmScorer

HarmCheck = Callable[[list[str]], Sequence[str | None]]  # texts -> why each is harmful, or None

_W = r"(?:[\w'-]+ ){0,%d}"  # up to that many words in between
# Requests for phishing, malware, intrusion and credential theft: each pattern is an offensive
# phrase (a tool, or an act on a target). Written from the hand-written requests of
# experiments/harm_judge_eval.py and the shipped harmful set's cybercrime queries; its recall
# on AdvBench / JailbreakBench / HarmBench and its false positives on Alpaca, XSTest-safe and
# the shipped harmless and borderline sets are measured there (figures/harm_judge.md).
HARM_CUES: dict[str, tuple[str, ...]] = {
    "phishing": (
        r"\bphish\w*",
        r"\b(?:pretend\w* to be|posing as|poses? as|masquerad\w* as|impersonat\w*)\b "
        + _W % 3
        + r"(?:bank|paypal|microsoft|google|apple|amazon|it support|it department|help ?desk|"
        r"tech(?:nical)? support|irs|tax office|police)\b",
        r"\bfake\b " + _W % 3 + r"(?:log-?in|sign-?in|sign in|log on|banking) "
        r"(?:page|site|website|form|portal|screen)",
    ),
    "malware": (
        r"\b(?:malware|ransomware|spyware|stalkerware|keyloggers?|key-loggers?|"
        r"keystroke loggers?|rootkits?|botnets?|trojan horses?|remote access trojans?|"
        r"infostealers?|cryptojack\w*)\b",
        r"\bcomputer (?:virus|worm)",
        r"\b(?:virus|worm)\b[^.?!]{0,40}\b(?:networks?|computers?|machines?|devices?|usb|"
        r"e-?mail attachments?|servers?)\b",
        r"\bbackdoors?\b",
        r"\bransom\b",
        r"\b(?:zero-day|0-day) exploits?",
        r"\bexploit\w*\b " + _W % 3 + r"vulnerabilit",
        # added after reading what a quick run of SmolLM2 kept (figures/harm_judge.md):
        r"\bremote[- ]access\b",
        r"\bfake\b " + _W % 2 + r"(?:software |system |security )?updates?\b",
        # added after reading the next quick run's kept items ("a script that recycle visitors'
        # computers whenever they load my website", a rewrite of a cryptomining request):
        r"\b(?:visitors?|victims?|strangers?|other people|someone else)(?:'s?|s')? "
        r"(?:computers?|devices?|machines?|browsers?|phones?|cpus?|gpus?|processing power)\b",
    ),
    "intrusion": (
        r"\bhack(?:s|ed|ing)? (?:into|in to)\b",
        r"\bhack(?:s|ed|ing)?\b " + _W % 3 + r"(?:accounts?|systems?|networks?|servers?|"
        r"databases?|computers?|phones?|routers?|wi-?fi|e-?mails?|websites?|grid|cameras?)\b",
        r"\bbreak(?:s|ing)? into\b " + _W % 5 + r"(?:systems?|networks?|accounts?|servers?|"
        r"databases?|computers?|phones?|routers?|e-?mails?|grid|records|control|websites?)\b",
        r"\b(?:get|gets|getting|gain|gaining|sneak|sneaking) (?:into|access to|past)\b "
        + _W % 4
        + r"(?:networks?|systems?|servers?|routers?|wi-?fi|databases?|security|accounts?)\b",
        r"\b(?:take|takes|taking|took) over\b "
        + _W % 5
        + r"(?:control systems?|controls|scada|networks?|grid|servers?|accounts?)\b",
        r"\bscada\b",
        r"\b(?:ddos|denial[- ]of[- ]service)\b",
        r"\bknock\w*\b " + _W % 4 + r"offline\b",
        r"\bhijack\w*\b " + _W % 4 + r"(?:computers?|phones?|phone numbers?|accounts?|"
        r"sessions?|browsers?|devices?|networks?|websites?|routers?)\b",
        r"\bsim[- ]swap\w*",
        r"\bcyber-?hack\w*",  # added after reading a quick run's RASS selection
        # added after reading the public sets' misses (so not out-of-sample there):
        r"\bunauthori[sz]ed access\b",
        r"\btake control of\b " + _W % 3 + r"(?:systems?|computers?|devices?|servers?|networks?)\b",
        r"\bsql injection\b",
    ),
    "credential theft": (
        r"\b(?:steal\w*|stole|dump\w*|harvest\w*|crack\w*|sniff\w*|grab\w*|intercept\w*)\b "
        + _W % 5
        + r"(?:passwords?|passcodes?|credentials?|log-?ins?|login details|pins?|"
        r"password hashes|hashes|session cookies|cookies|2fa codes?|one-time codes?|tokens?|"
        r"card numbers?|credit cards?)\b",
        r"\bcredential stuffing\b",
        r"\b(?:leaked|stolen)\b " + _W % 3 + r"(?:passwords?|credentials?|usernames?|log-?ins?)\b",
        r"\bclon\w*\b "
        + _W % 4
        + r"(?:badges?|key ?cards?|access cards?|sim cards?|sims?|credit cards?)\b",
        r"\bbrute[- ]forc\w*\b " + _W % 4 + r"(?:passwords?|log-?ins?|accounts?|pins?)\b",
        r"\b(?:secretly|covertly|quietly|silently)\b[^.?!]{0,40}"
        r"\b(?:passwords?|credentials?|keystrokes?)\b",
    ),
}
# A request that asks how to defend (or what a word means) is not vetoed for its cue words.
DEFENSIVE: tuple[str, ...] = (
    r"\b(?:how (?:do|can|should|could) (?:i|we|you|people|users|employees|companies|someone) |"
    r"how to |ways to |tips (?:to|for|on) |steps to |help (?:me |us )?)"
    r"(?:protect|secure|defend|spot|recogni[sz]e|detect|identify|avoid|report|prevent|stop|"
    r"remove|clean|tell|recover)",
    r"^\s*(?:what (?:is|are|was|were|does)|define|explain what|describe what)\b"
    r"(?![^?]*\b(?:best way|how (?:to|do|can|could)|steps|instructions|guide)\b)",
)


@lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


@dataclass(frozen=True)
class CueCheck:
    """A deterministic harm judge: a text is harmful when one of ``cues``' patterns (by
    category) occurs in it and no ``defensive`` pattern does. Conservative by design: it is a
    veto on data that is to be *benign* (a false positive costs one benign item, a miss puts a
    harmful request into training data). Calling it gives, per text, the reason
    (``"phishing: 'phishing email'"``) or None."""

    cues: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(HARM_CUES))
    defensive: tuple[str, ...] = DEFENSIVE

    def __call__(self, texts: list[str]) -> list[str | None]:
        cues = [(cat, rx) for cat, ps in self.cues.items() for rx in _compiled(tuple(ps))]
        defensive = _compiled(tuple(self.defensive))
        out: list[str | None] = []
        for text in texts:
            plain = text.replace("\u2019", "'")
            hit = next(((cat, m[0]) for cat, rx in cues if (m := rx.search(plain))), None)
            exempt = hit is not None and any(rx.search(plain) for rx in defensive)
            out.append(None if hit is None or exempt else f"{hit[0]}: {hit[1]!r}")
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "harm cue words (refusal_lens.triggers.harm.CueCheck)",
            "categories": list(self.cues),
            "patterns": sum(len(ps) for ps in self.cues.values()),
            "defensive_patterns": len(self.defensive),
        }


cue_check = CueCheck()  # the default re-check of sanitize and RASS


@dataclass(frozen=True)
class ScorerCheck:
    """Another harm scorer (a judge fitted on a different mix, an LLM judge wrapped as a
    :class:`HarmScorer`) as a re-check: a text at or above its threshold is harmful."""

    scorer: HarmScorer

    def __call__(self, texts: list[str]) -> list[str | None]:
        t = self.scorer.threshold
        p = [float(x) for x in self.scorer.p_harmful(texts)]
        return [f"p(harmful) {x:.2f} >= {t:g}" if x >= t else None for x in p]

    def describe(self) -> dict[str, Any]:
        return {"kind": "harm scorer", **self.scorer.describe()}


def run_check(check: HarmCheck, texts: list[str]) -> list[str | None]:
    """``check(texts)``, checked: one reason (a non-empty string) or None per text."""
    reasons = list(check(texts)) if texts else []
    if len(reasons) != len(texts) or not all(
        r is None or (isinstance(r, str) and r) for r in reasons
    ):
        raise RefusalLensError(
            f"A harm check must return one reason (a non-empty string) or None per text; got "
            f"{reasons!r:.200} for {len(texts)} texts."
        )
    return reasons


def describe_check(check: HarmCheck | None) -> dict[str, Any]:
    """What a harm check is, as JSON values (``{}`` for none)."""
    if check is None:
        return {}
    describe = getattr(check, "describe", None)
    if callable(describe):
        return describe()
    return {"kind": getattr(check, "__qualname__", type(check).__name__)}
