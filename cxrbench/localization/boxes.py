"""Heatmap -> boxes, the variant of Wang et al. 2017 (ChestX-ray8 §4.2) used by every method here.

The heatmap is min-max normalised, thresholded, split into 8-connected components, and each
component becomes one box (its bounding rectangle, right/bottom exclusive) scored by its peak heat,
highest first. Wang et al. threshold the 0–255 heatmap at a fixed level; ``threshold`` is that level
on the normalised map.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torchvision.ops import box_iou as _tv_box_iou

_EIGHT = np.ones((3, 3), bool)


def heatmap_to_boxes(heatmap, threshold: float = 0.5, min_area: int = 1) -> np.ndarray:
    """[H, W] heatmap -> float array [k, 5] of (x0, y0, x1, y1, score), sorted by score."""
    h = np.asarray(heatmap, np.float64)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be [H, W], got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("heatmap contains NaN or inf")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    lo, hi = h.min(), h.max()
    if hi - lo < 1e-12:
        return np.zeros((0, 5))
    norm = (h - lo) / (hi - lo)
    labels, n = ndimage.label(norm >= threshold, structure=_EIGHT)
    out = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == k
        if comp.sum() < min_area:
            continue
        ys, xs = sl
        out.append((xs.start, ys.start, xs.stop, ys.stop, float(norm[sl][comp].max())))
    out.sort(key=lambda b: -b[4])
    return np.asarray(out, np.float64).reshape(-1, 5)


def check_boxes(boxes: torch.Tensor, what: str) -> torch.Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} box(es) with negative width or height, e.g. "
                         f"{boxes[bad][0].tolist()} (expected x0 <= x1, y0 <= y1)")
    return boxes


def box_iou(a, b) -> torch.Tensor:
    """IoU matrix [n, m] of XYXY boxes (torchvision.ops.box_iou, with input checks)."""
    return _tv_box_iou(check_boxes(a, "boxes a"), check_boxes(b, "boxes b"))
