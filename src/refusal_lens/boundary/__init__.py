"""The safety boundary (paper 1): layer-wise geometry, and RASS's boundary prompts."""

from refusal_lens.boundary.geometry import Geometry, GeometryConfig, boundary_geometry
from refusal_lens.boundary.rass import RASSConfig, RASSResult, rass
from refusal_lens.triggers.harm import HarmScorer, harm_scorer

__all__ = [
    "Geometry",
    "GeometryConfig",
    "HarmScorer",
    "RASSConfig",
    "RASSResult",
    "boundary_geometry",
    "harm_scorer",
    "rass",
]
