"""Chance levels of weak localization: is a heatmap's box, or its peak, better than a random guess?

Used by the learns tests and ``benchmarks/byoa_localization.py``: a predicted box is compared with
the same box moved to uniformly random places, a heatmap's maximum with a uniformly random point
(whose chance of landing in the true box is the box's share of the image).
"""

from __future__ import annotations

import numpy as np
import torch

from .boxes import box_iou


def random_box_ious(box, truth: torch.Tensor, height: int, width: int, rng: np.random.Generator,
                    k: int = 20) -> list[float]:
    """Best IoU with the true boxes of ``k`` boxes of ``box``'s size placed uniformly in the image."""
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    u = rng.random((k, 2))
    x0, y0 = u[:, 0] * (width - w), u[:, 1] * (height - h)
    moved = torch.from_numpy(np.stack([x0, y0, x0 + w, y0 + h], 1))
    return box_iou(moved, truth.double()).amax(1).tolist()


def peak_in_boxes(heatmap: torch.Tensor, truth: torch.Tensor) -> tuple[bool, float]:
    """Pointing game: does the heatmap's maximum (pixel centre) fall in a true box, and the chance
    that a uniformly random point does (the boxes' share of the image, overlaps counted once)."""
    h, w = heatmap.shape[-2:]
    y, x = divmod(int(heatmap.reshape(-1).argmax()), w)
    inside = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in truth.tolist():
        inside[max(0, round(y0)):round(y1), max(0, round(x0)):round(x1)] = True
    hit = any(x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1 for x0, y0, x1, y1 in truth.tolist())
    return hit, float(inside.float().mean())
