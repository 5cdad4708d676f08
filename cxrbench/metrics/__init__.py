"""Metrics shared by every method: classification, localization (IoU-accuracy) and segmentation.

``SampleStore`` collects per-sample values across DDP ranks without padding duplicates; the
functions in ``classification`` / ``segmentation`` and ``cxrbench.localization`` turn them into the
leaderboards' numbers.
"""

from .classification import (MetricInputError, auc, bootstrap_ci, check_probabilities, confusion_rates,
                             pr_auc, roc_points, threshold_at_recall, weighted_report)
from .segmentation import SegmentationMetric, dice_iou, hd95, segmentation_scores, summarize
from .store import SampleStore

__all__ = ["SampleStore", "MetricInputError", "auc", "pr_auc", "roc_points", "bootstrap_ci", "check_probabilities",
           "confusion_rates", "threshold_at_recall", "weighted_report", "dice_iou", "hd95",
           "segmentation_scores", "summarize", "SegmentationMetric"]
