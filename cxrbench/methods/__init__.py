"""The methods: families, one module per paper, the baselines, and the registry they name themselves in.

Families (``base.py``): classification, segmentation, pretraining, and evaluation of an encoder.
One module per paper (amm, rgt, …) plus the baselines. Each method class carries ``@register("name")``
(``registry.py``): importing this package fills ``METHODS``; ``cxrbench fit --model <name>`` accepts the
registry name or the class name.
"""

from .amm import AMM, GAPBaseline
from .base import Method
from .camcontrast import CAMContrast, CAMContrastCAM
from .classification import ClassificationMethod
from .evaluation import EncoderClassifier, EncoderSegmenter, FineTune, LinearProbe
from .gmml import GMML, UNETRSegmenter
from .pretraining import PretrainingMethod
from .registry import METHODS, RegistryError, method_class, register
from .rgt import RGT, ViTBaseline
from .segmentation import SegmentationMethod
from .ssl_baselines import SimCLR, SupCE, SupCon
from .stn import STN, ThoraxBoxRegressor, ThoraxCrop, VGG16Baseline


__all__ = ["METHODS", "register", "method_class", "RegistryError", "Method", "ClassificationMethod", "SegmentationMethod", "PretrainingMethod",
           "EncoderClassifier", "LinearProbe", "FineTune", "EncoderSegmenter", "AMM", "GAPBaseline", "RGT",
           "ViTBaseline", "VGG16Baseline", "STN", "ThoraxCrop", "ThoraxBoxRegressor", "SupCE", "SimCLR", "SupCon",
           "CAMContrastCAM", "CAMContrast", "GMML", "UNETRSegmenter"]
