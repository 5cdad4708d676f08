"""Heatmaps to boxes, and the IoU-accuracy of Wang et al. 2017 / RGT Table I."""

from .boxes import box_iou, heatmap_to_boxes
from .scoring import THRESHOLDS, best_iou_per_class, iou_accuracy

__all__ = ["box_iou", "heatmap_to_boxes", "THRESHOLDS", "best_iou_per_class", "iou_accuracy"]
