"""Shared LightningDataModules for the chest X-ray datasets of cxrbench, and the twin generator.

The twin (``data_modules.twin``) writes datasets in the real on-disk layouts from the real label files
shipped with torchxrayvision; the DataModules read twin and real releases through the same code path.
"""

from .base import CXRDataModule, DatasetIndex  # noqa: E402
from .chexpert import CheXpert  # noqa: E402
from .covidx import COVIDx  # noqa: E402
from .crops import NIHCrops  # noqa: E402
from .io import DataError  # noqa: E402
from .lungs import Lungs  # noqa: E402
from .nih import NIH  # noqa: E402
from .siim import SIIM  # noqa: E402

DATAMODULES = {"nih": NIH, "chexpert": CheXpert, "covidx": COVIDx, "siim": SIIM, "lungs": Lungs}
__all__ = ["CXRDataModule", "DatasetIndex", "DataError", "DATAMODULES", "NIH", "NIHCrops", "CheXpert", "COVIDx", "SIIM", "Lungs"]
