"""The safety boundary (paper 1): layer-wise geometry, and RASS's boundary prompts."""

from refusal_lens.boundary.geometry import Geometry, GeometryConfig, boundary_geometry
from refusal_lens.boundary.rass import HarmScorer, RASSConfig, RASSResult, harm_scorer, rass

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
