"""The method registry: name -> LightningModule class (one module per paper + baselines)."""

from .amm import AMM, GAPBaseline
from .base import CXRModule
from .rgt import RGT, ViTBaseline

METHODS = {"amm": AMM, "gap": GAPBaseline, "rgt": RGT, "vit": ViTBaseline}

__all__ = ["METHODS", "CXRModule", "AMM", "GAPBaseline", "RGT", "ViTBaseline"]
