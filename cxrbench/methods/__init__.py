"""The method registry: name -> LightningModule class (one module per paper + baselines)."""

from .amm import AMM, GAPBaseline
from .base import Method
from .classification import ClassificationMethod
from .rgt import RGT, ViTBaseline

METHODS = {"amm": AMM, "gap": GAPBaseline, "rgt": RGT, "vit": ViTBaseline}

__all__ = ["METHODS", "Method", "ClassificationMethod", "AMM", "GAPBaseline", "RGT", "ViTBaseline"]
