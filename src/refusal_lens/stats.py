"""Intervals and paired tests for rates of verdicts.

- :func:`wilson`: the 95 % Wilson score interval of ``k`` successes in ``n`` trials (it stays
  inside [0, 1] and is not degenerate at 0 or n, unlike the normal approximation);
- :func:`mcnemar`: the exact McNemar test of two verdicts on the same prompts (two-sided
  binomial test on the discordant pairs);
- :func:`compare`: "lower", "higher" or "not determined", the wording of every verdict that
  compares two conditions.

>>> wilson(8, 16)          # (0.28, 0.72): 16 prompts cannot tell 50 % from 30 %
>>> rate_text(8, 16)       # '50 % [28–72]'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` of ``n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_text(k: int, n: int) -> str:
    """``"50 % [28–72]"``: the rate in percent with its 95 % Wilson interval."""
    if n <= 0:
        return "– (n = 0)"
    lo, hi = wilson(k, n)
    return f"{k / n:.0%} [{lo * 100:.0f}–{hi * 100:.0f}]".replace("%", " %", 1)


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` of ``n`` under p = 0.5 (doubled smaller tail)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar test of paired verdicts ``a`` and ``b`` (the same prompts, in order):
    ``only_a``/``only_b`` discordant counts and the two-sided ``p``."""
    if len(a) != len(b):
        raise ValueError(f"paired verdicts need equal lengths, not {len(a)} and {len(b)}")
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    return {"only_a": only_a, "only_b": only_b, "p": binom_two_sided(only_a, only_a + only_b)}


def compare(a: Sequence[bool], b: Sequence[bool], alpha: float = 0.05) -> str:
    """Whether the rate of ``a`` is ``lower`` or ``higher`` than that of ``b`` on the same
    prompts, by :func:`mcnemar` at level ``alpha``, or ``not determined``."""
    test = mcnemar(a, b)
    if test["p"] >= alpha:
        return "not determined"
    return "lower" if test["only_a"] < test["only_b"] else "higher"


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact p-value that ``k1``/``n1`` and ``k2``/``n2`` share one rate
    (unpaired samples: tables whose probability is at most the observed one's are summed)."""
    total, ks = n1 + n2, k1 + k2

    def prob(a: int) -> float:
        return math.comb(n1, a) * math.comb(n2, ks - a) / math.comb(total, ks)

    observed = prob(k1)
    low, high = max(0, ks - n2), min(ks, n1)
    return min(1.0, sum(p for a in range(low, high + 1) if (p := prob(a)) <= observed * (1 + 1e-9)))


def sign_flip(diffs: Sequence[int | float], resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value that paired differences ``diffs`` (one per prompt, e.g. a condition's
    refusal minus the baseline's, averaged over seeds) are centred on 0: the share of sign
    flips whose mean is at least as far from 0 as the observed one. Exact when at most 16 are
    non-zero, else ``resamples`` seeded random flips (``(hits + 1) / (resamples + 1)``). On
    differences in {-1, 0, 1} the exact form is :func:`mcnemar`'s test."""
    import itertools
    import random

    values = [float(d) for d in diffs if d != 0]
    if not values:
        return 1.0
    observed = abs(sum(values)) - 1e-9 * len(values)
    if len(values) <= 16:
        flips = itertools.product((1, -1), repeat=len(values))
        hits = sum(
            abs(sum(s * v for s, v in zip(f, values, strict=True))) >= observed for f in flips
        )
        return hits / 2 ** len(values)
    rng = random.Random(seed)
    hits = sum(
        abs(sum(v if rng.random() < 0.5 else -v for v in values)) >= observed
        for _ in range(resamples)
    )
    return (hits + 1) / (resamples + 1)


def paired_seeds(
    a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], alpha: float = 0.05
) -> dict[str, float | str]:
    """``b`` against ``a``: per-prompt verdicts of two conditions under the same seeds (one
    list per seed, the same prompts in order). Each prompt's difference is averaged over the
    seeds and the prompts are the units of :func:`sign_flip`; ``diff`` is the difference of the
    mean rates, ``verdict`` ``lower`` / ``higher`` / ``not determined`` at level ``alpha``."""
    if len(a) != len(b) or not a or any(len(x) != len(a[0]) for x in (*a, *b)):
        raise ValueError("paired_seeds needs the same seeds and prompts for both conditions")
    seeds, n = len(a), len(a[0])
    diffs = [sum(int(b[s][i]) - int(a[s][i]) for s in range(seeds)) / seeds for i in range(n)]
    p = sign_flip(diffs)
    diff = sum(diffs) / max(n, 1)
    word = "not determined" if p >= alpha else ("higher" if diff > 0 else "lower")
    return {"diff": diff, "p": p, "verdict": word}


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's κ of two labelings of the same items: agreement beyond what their label
    frequencies give by chance; None when chance agreement is 1 (one label only)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"kappa needs two equal, non-empty labelings, not {len(a)} and {len(b)}")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    labels = set(a) | set(b)
    chance = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in labels)
    return None if chance == 1.0 else (observed - chance) / (1.0 - chance)


def bootstrap_kappa(
    a: Sequence[str], b: Sequence[str], resamples: int = 1000, seed: int = 0
) -> tuple[float, float] | None:
    """A seeded 95 % percentile bootstrap interval of :func:`cohen_kappa` (items resampled)."""
    import random

    rng, n, values = random.Random(seed), len(a), []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        k = cohen_kappa([a[i] for i in idx], [b[i] for i in idx])
        if k is not None:
            values.append(k)
    if len(values) < resamples // 2:
        return None
    values.sort()
    return values[int(0.025 * len(values))], values[min(len(values) - 1, int(0.975 * len(values)))]


__all__ = [
    "Z95",
    "binom_two_sided",
    "bootstrap_kappa",
    "cohen_kappa",
    "compare",
    "fisher_exact",
    "mcnemar",
    "paired_seeds",
    "rate_text",
    "sign_flip",
    "wilson",
]
