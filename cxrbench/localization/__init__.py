"""Heatmaps to boxes, and the IoU-accuracy of Wang et al. 2017 / RGT Table I.

Names are imported on first use (PEP 562), so that ``thresholds`` is readable without torch.
"""

from __future__ import annotations

import importlib

_HOME = {"box_iou": "boxes", "heatmap_to_boxes": "boxes", "THRESHOLDS": "thresholds",
         "best_iou_per_class": "scoring", "iou_accuracy": "scoring"}
__all__ = ["box_iou", "heatmap_to_boxes", "THRESHOLDS", "best_iou_per_class", "iou_accuracy"]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
