"""Chance levels of weak localization: is a heatmap's box, or its peak, better than a random guess?

Used by the learns tests and ``benchmarks/rgt/byoa_localization.py``: a predicted box is compared with
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


def energy_in_boxes(heatmap: torch.Tensor, truth: torch.Tensor) -> float:
    """Energy-based pointing game (Wang et al., Score-CAM, 2020): the share of the heatmap's mass (after
    subtracting its minimum) that lies inside the true boxes. A flat map scores the boxes' share of the
    image, the chance level ``peak_in_boxes`` returns; unlike the peak it does not hinge on one pixel."""
    h, w = heatmap.shape[-2:]
    inside = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in truth.tolist():
        inside[max(0, round(y0)):round(y1), max(0, round(x0)):round(x1)] = True
    mass = (heatmap.double() - heatmap.double().min()).clamp(min=0)
    total = float(mass.sum())
    return float(mass[inside].sum()) / total if total > 0 else float(inside.double().mean())


class VersusChance:
    """Per class, over many images: a method's boxes and heatmap peaks against chance.

    ``update`` takes a batch of heatmaps [B, K, H, W], one box per (image, class) [B, K, 4] (XYXY px,
    heatmap pixels), the true boxes and their class indices per image (a DataModule's ``boxes`` /
    ``box_labels``), and optionally which boxes are a fallback rather than the heatmap's own.
    ``summary`` gives per class: n, iou (box vs truth), random_iou (the same box at random places),
    pointing (peak in a true box), pointing_chance (also the chance level of energy), energy (share of the
    map's mass inside the true boxes), and fallback (share, when given).
    """

    def __init__(self, class_names: list[str], seed: int = 0, k: int = 20):
        self.class_names, self.k = list(class_names), k
        self.rng = np.random.default_rng(seed)
        self.rows: dict[str, dict[str, list[float]]] = {}

    def update(self, maps: torch.Tensor, boxes: torch.Tensor, truth, labels, fallback: torch.Tensor | None = None):
        maps, boxes = maps.detach().float().cpu(), boxes.detach().float().cpu()
        h, w = maps.shape[-2:]
        for i, (gt_all, gl) in enumerate(zip(truth, labels)):
            for k, name in enumerate(self.class_names):
                gt = gt_all[gl == k].double()
                if not len(gt):
                    continue
                r = self.rows.setdefault(name, {m: [] for m in ("iou", "random_iou", "pointing", "pointing_chance",
                                                                "energy")})
                r["iou"].append(float(box_iou(boxes[i, k][None].double(), gt).max()))
                r["random_iou"].append(float(np.mean(random_box_ious(boxes[i, k], gt, h, w, self.rng, self.k))))
                hit, share = peak_in_boxes(maps[i, k], gt)
                r["pointing"].append(float(hit))
                r["pointing_chance"].append(share)
                r["energy"].append(energy_in_boxes(maps[i, k], gt))
                if fallback is not None:
                    r.setdefault("fallback", []).append(float(fallback[i, k]))

    def summary(self) -> dict[str, dict[str, float]]:
        return {c: {"n": len(r["iou"]), **{m: float(np.mean(v)) for m, v in r.items()}} for c, r in self.rows.items()}
