"""The method registry: name -> LightningModule class (one module per paper + baselines)."""

from .amm import AMM, GAPBaseline
from .base import CXRModule

METHODS = {"amm": AMM, "gap": GAPBaseline}

__all__ = ["METHODS", "CXRModule", "AMM", "GAPBaseline"]
