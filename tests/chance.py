"""The chance level of a predicted box: the same box moved to uniformly random places."""

from __future__ import annotations

import numpy as np
import torch

from cxrbench.localization import box_iou


def random_box_ious(box, truth: torch.Tensor, height: int, width: int, rng: np.random.Generator, k: int = 20) -> list[float]:
    """Best IoU with the true boxes of ``k`` boxes of ``box``'s size placed uniformly in the image."""
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    u = rng.random((k, 2))  # drawn x, y, x, y, …
    x0, y0 = u[:, 0] * (width - w), u[:, 1] * (height - h)
    moved = torch.from_numpy(np.stack([x0, y0, x0 + w, y0 + h], 1))
    return box_iou(moved, truth.double()).amax(1).tolist()
