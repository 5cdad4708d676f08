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
    """The 107 PyRadiomics features (``FEATURE_NAMES``) of a batch of ROIs -> float64 [B, 107].

    Args:
        images: [B, H, W] gray values on PyRadiomics' scale, 0–255 (binWidth 25): [0, 1] images put
            every pixel in one bin — warned about, scale them by 255. Non-finite pixels are refused.
        masks: [B, H, W] 0/1 or bool ROIs, or
        boxes: [B, 4] XYXY pixel boxes (right/bottom exclusive; rounded, clipped to the image; a
            non-finite coordinate or a negative width/height is refused).
        backend: "torch" (the batched engine, on the device of ``images``) or "pyradiomics" (the
            reference, one ROI at a time on the CPU).
        bin_width, chunk: the gray-level bin width (25) and ROIs per engine pass (128; memory ~200 bytes
            per pixel of the chunk's largest box).

    Limits: PyRadiomics' conventions throughout (single-slice 3D shape, GLSZM 8-connectivity, GLDM α 0,
    non-excess kurtosis, …; ``engine.py``). ROIs PyRadiomics refuses — empty, one pixel, one pixel
    wide, or the whole image — give a row of NaN, never an error. At most 256 gray-level bins per ROI
    (refused with advice beyond). Errors are ``RadiomicsInputError`` naming the images or boxes at fault.
    """
    if backend == "torch":
        return _extract_torch(images, masks=masks, boxes=boxes, **kwargs)
    if backend == "pyradiomics":
        images = torch.as_tensor(images)
        if masks is None:
            masks = boxes_to_masks(torch.as_tensor(boxes), images.shape[1], images.shape[2])
        return torch.from_numpy(extract_pyradiomics(images.cpu().numpy(), torch.as_tensor(masks).cpu().numpy()))
    raise ValueError(f"backend must be 'torch' or 'pyradiomics', got {backend!r}")


