"""Shared LightningDataModules for the chest X-ray datasets of cxrbench, and the twin generator.

The twin (``data_modules.twin``) writes datasets in the real on-disk layouts from the real label files
shipped with torchxrayvision; the DataModules read twin and real releases through the same code path.

The names below are imported on first use (PEP 562): ``import data_modules.twin`` or ``.io`` does not
pull in Lightning and torch, so that ``cxrbench --help`` and a dry run start at once.
"""

from __future__ import annotations

import importlib

#: public name -> the submodule that defines it
_HOME = {"CXRDataModule": "base", "DatasetIndex": "base", "CheXpert": "chexpert", "COVIDx": "covidx",
         "NIHCrops": "crops", "DataError": "io", "Lungs": "lungs", "NIH": "nih", "SIIM": "siim"}
#: dataset name -> its DataModule's name
_DATAMODULES = {"nih": "NIH", "chexpert": "CheXpert", "covidx": "COVIDx", "siim": "SIIM", "lungs": "Lungs"}
__all__ = ["CXRDataModule", "DatasetIndex", "DataError", "DATAMODULES", "NIH", "NIHCrops", "CheXpert", "COVIDx", "SIIM", "Lungs"]


def __getattr__(name: str):
    if name == "DATAMODULES":
        value = {k: __getattr__(v) for k, v in _DATAMODULES.items()}
    elif name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
