"""The safety boundary (paper 1): layer-wise geometry, and RASS's boundary prompts."""

from refusal_lens.boundary.geometry import Geometry, GeometryConfig, boundary_geometry
from refusal_lens.boundary.rass import rass
from refusal_lens.boundary.rass_config import RASSConfig
from refusal_lens.boundary.rass_result import RASSResult
from refusal_lens.boundary.refusal_fit import BoundaryFit, boundary_fit

__all__ = [
    "BoundaryFit",
    "Geometry",
    "GeometryConfig",
    "RASSConfig",
    "RASSResult",
    "boundary_fit",
    "boundary_geometry",
    "rass",
]
