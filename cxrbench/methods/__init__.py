"""The method registry: name -> LightningModule class (one module per paper + baselines)."""

from .amm import AMM, GAPBaseline
from .base import Method
from .classification import ClassificationMethod
from .rgt import RGT, ViTBaseline
from .stn import STN, ThoraxBoxRegressor, ThoraxCrop, VGG16Baseline

METHODS = {"amm": AMM, "gap": GAPBaseline, "rgt": RGT, "vit": ViTBaseline, "vgg16": VGG16Baseline, "stn": STN,
           "thorax-crop": ThoraxCrop, "thorax-box": ThoraxBoxRegressor}

__all__ = ["METHODS", "Method", "ClassificationMethod", "AMM", "GAPBaseline", "RGT", "ViTBaseline",
           "VGG16Baseline", "STN", "ThoraxCrop", "ThoraxBoxRegressor"]
