"""IoU-accuracy (Wang et al. 2017; RGT Table I).

For each class, over the images that have a ground-truth box of that class: the image counts as
localized at threshold T when a predicted box of that class has IoU > T with a ground-truth box of
that class. Accuracy per class is the localized share; the mean is over classes that have box
images. Scores are kept per (image, class) as the best IoU, so a DDP run gathers, de-duplicates and
thresholds them exactly as a single process does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .boxes import box_iou
from .thresholds import THRESHOLDS


def best_iou_per_class(gt_boxes, gt_labels, pred_boxes_by_class: dict[int, torch.Tensor]) -> dict[int, float]:
    """Best IoU between any predicted and any ground-truth box, per class that has a gt box."""
    gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float64).reshape(-1, 4)
    gt_labels = torch.as_tensor(gt_labels).reshape(-1)
    out = {}
    for c in torch.unique(gt_labels).tolist():
        if c < 0:
            continue
        gt = gt_boxes[gt_labels == c]
        pred = pred_boxes_by_class.get(int(c))
        if pred is None or len(pred) == 0:
            out[int(c)] = 0.0
        else:
            out[int(c)] = float(box_iou(torch.as_tensor(pred, dtype=torch.float64)[:, :4], gt).max())
    return out


def iou_accuracy(classes: np.ndarray, best_iou: np.ndarray, class_names: list[str],
                 thresholds=THRESHOLDS) -> dict:
    """{'T': {'per_class': {...}, 'mean': m}} from one best IoU per (image, class) pair."""
    classes, best_iou = np.asarray(classes), np.asarray(best_iou, float)
    out = {}
    for t in thresholds:
        per = {}
        for c, name in enumerate(class_names):
            sel = classes == c
            per[name] = float((best_iou[sel] > t).mean()) if sel.any() else math.nan
        kept = [v for v in per.values() if not math.isnan(v)]
        out[t] = {"per_class": per, "mean": float(np.mean(kept)) if kept else math.nan}
    return out
