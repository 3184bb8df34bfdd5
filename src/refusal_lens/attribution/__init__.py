"""Attribution of refusals to the prompt's tokens: the registered methods and their views."""

from refusal_lens.attribution.methods import (
    METHODS,
    AttributionConfig,
    AttributionMethod,
    Attributions,
    TokenAttribution,
    attribute,
    scores_without,
)

__all__ = [
    "METHODS",
    "AttributionConfig",
    "AttributionMethod",
    "Attributions",
    "TokenAttribution",
    "attribute",
    "scores_without",
]
