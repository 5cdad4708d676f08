"""The method registry: the only place a method is named (registry name -> LightningModule class).

Families (``base.py``): classification, segmentation, pretraining, and evaluation of an encoder.
One module per paper (amm, rgt, …) plus the baselines; ``cxrbench fit --model <name>`` accepts the
registry name or the class name.
"""

from .amm import AMM, GAPBaseline
from .base import Method
from .camcontrast import CAMContrast, CAMContrastCAM
from .classification import ClassificationMethod
from .evaluation import EncoderClassifier, EncoderSegmenter, FineTune, LinearProbe
from .gmml import GMML, UNETRSegmenter
from .pretraining import PretrainingMethod
from .rgt import RGT, ViTBaseline
from .segmentation import SegmentationMethod
from .ssl_baselines import SimCLR, SupCE, SupCon
from .stn import STN, ThoraxBoxRegressor, ThoraxCrop, VGG16Baseline

METHODS = {
    "amm": AMM, "gap": GAPBaseline,
    "rgt": RGT, "vit": ViTBaseline,
    "vgg16": VGG16Baseline, "stn": STN, "thorax-crop": ThoraxCrop, "thorax-box": ThoraxBoxRegressor,
    "supce": SupCE, "simclr": SimCLR, "supcon": SupCon,
    "camcontrast-cam": CAMContrastCAM, "camcontrast": CAMContrast,
    "linear": LinearProbe, "finetune": FineTune, "unet": EncoderSegmenter,
    "gmml": GMML, "unetr": UNETRSegmenter,
}

__all__ = ["METHODS", "Method", "ClassificationMethod", "SegmentationMethod", "PretrainingMethod",
           "EncoderClassifier", "LinearProbe", "FineTune", "EncoderSegmenter", "AMM", "GAPBaseline", "RGT",
           "ViTBaseline", "VGG16Baseline", "STN", "ThoraxCrop", "ThoraxBoxRegressor", "SupCE", "SimCLR", "SupCon",
           "CAMContrastCAM", "CAMContrast", "GMML", "UNETRSegmenter"]
