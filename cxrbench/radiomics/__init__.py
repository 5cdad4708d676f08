"""Radiomics: the 107 PyRadiomics features of RGT Table III.

``extract(images, masks=..., boxes=..., backend="torch")`` runs the batched torch engine
(``engine.py``) on the device of the input; ``backend="pyradiomics"`` runs PyRadiomics 3.0.1, one ROI at
a time on the CPU (``reference.py``), the reference the engine is tested against.
"""

from __future__ import annotations

import torch

from .engine import NOT_IN_ENGINE, RadiomicsInputError, boxes_to_masks
from .engine import extract as _extract_torch
from .reference import FEATURE_NAMES, extract_pyradiomics

__all__ = ["extract", "FEATURE_NAMES", "NOT_IN_ENGINE", "RadiomicsInputError", "boxes_to_masks"]


def extract(images, masks=None, boxes=None, backend: str = "torch", **kwargs) -> torch.Tensor:
    if backend == "torch":
        return _extract_torch(images, masks=masks, boxes=boxes, **kwargs)
    if backend == "pyradiomics":
        images = torch.as_tensor(images)
        if masks is None:
            masks = boxes_to_masks(torch.as_tensor(boxes), images.shape[1], images.shape[2])
        return torch.from_numpy(extract_pyradiomics(images.cpu().numpy(), torch.as_tensor(masks).cpu().numpy()))
    raise ValueError(f"backend must be 'torch' or 'pyradiomics', got {backend!r}")


