"""Attribution of refusals to the prompt's tokens: the methods and their views."""

from refusal_lens.attribution.methods import METHODS, TokenAttribution, attribute, scores_without

__all__ = ["METHODS", "TokenAttribution", "attribute", "scores_without"]
