"""Classification metrics on collected per-sample predictions (one implementation for every method).

AUC and PR-AUC come from torchmetrics' functional kernels. A class whose targets in the split hold a
single value has no AUC: it is reported as NaN, listed in ``excluded``, and left out of the mean
explicitly (never averaged in as 0.5 or 0). Unknown targets (NaN, e.g. CheXpert U-Ignore) are left
out per class.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_roc,
    multiclass_confusion_matrix,
)


class MetricInputError(ValueError):
    pass


def _as_2d(preds, target) -> tuple[torch.Tensor, torch.Tensor]:
    preds = torch.as_tensor(preds, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    if preds.ndim == 1:
        preds = preds[:, None]
    if target.ndim == 1:
        target = target[:, None]
    if preds.shape != target.shape:
        raise MetricInputError(f"predictions {tuple(preds.shape)} and targets {tuple(target.shape)} differ in shape")
    return preds, target


def check_probabilities(preds) -> None:
    p = torch.as_tensor(preds)
    if torch.isnan(p).any():
        raise MetricInputError("predictions contain NaN")
    if (p < 0).any() or (p > 1).any():
        raise MetricInputError(f"probabilities must lie in [0, 1]; got range [{float(p.min()):.4g}, {float(p.max()):.4g}] "
                               "(apply a sigmoid/softmax to logits first)")


def per_class(fn, preds, target, classes: list[str] | None = None) -> dict:
    """``fn(preds_c, target_c)`` per class over known targets; NaN where a class has one target value."""
    preds, target = _as_2d(preds, target)
    classes = classes or [str(c) for c in range(preds.shape[1])]
    if len(classes) != preds.shape[1]:
        raise MetricInputError(f"{len(classes)} class names for {preds.shape[1]} columns")
    values, excluded = {}, []
    for c, name in enumerate(classes):
        known = ~torch.isnan(target[:, c])
        y = target[known, c]
        if y.numel() == 0 or y.min() == y.max():
            values[name] = math.nan
            excluded.append(name)
        else:
            values[name] = float(fn(preds[known, c], y.long()))
    kept = [v for v in values.values() if not math.isnan(v)]
    return {"per_class": values, "mean": float(np.mean(kept)) if kept else math.nan, "excluded": excluded}


def auc(preds, target, classes=None) -> dict:
    return per_class(binary_auroc, preds, target, classes)


def pr_auc(preds, target, classes=None) -> dict:
    return per_class(binary_average_precision, preds, target, classes)


def roc_points(preds, target, max_points: int = 200) -> dict[str, list[float]]:
    p, t = _as_2d(preds, target)
    known = ~torch.isnan(t[:, 0])
    fpr, tpr, _ = binary_roc(p[known, 0], t[known, 0].long())
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).astype(int))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def threshold_at_recall(preds, target, recall: float = 0.95) -> float:
    """The highest threshold whose recall (score >= threshold) reaches ``recall`` (STN: 95%).

    torchmetrics' ``binary_specificity_at_sensitivity`` computes it: among the ROC thresholds (every
    distinct score, ``>=`` semantics) whose sensitivity reaches ``recall`` it returns the one of highest
    specificity, and since specificity only falls as the threshold falls, that is the highest such
    threshold — the ``ceil(recall · n_pos)``-th highest positive score, ties included (checked against
    the earlier hand-written selection in tests/test_metrics.py). This thin wrapper keeps what the
    library does not do or does differently:

    - unknown targets (NaN) are left out, and a split without positives is refused with a message;
    - scores must be probabilities: torchmetrics passes scores outside [0, 1] through a sigmoid and
      would return a threshold on that other scale, which ``confusion_rates`` would then misapply;
    - ``recall`` must lie in (0, 1]: at 0 torchmetrics returns its extra ROC point (threshold 1.0,
      nothing predicted positive), not a score of the data;
    - a split without negatives has no specificity: the threshold is still the one above, but the
      library warns; that warning is silenced here.

    One difference is left as it is: torchmetrics compares sensitivity in float32, so once
    ``(k - 1) / n_pos`` rounds to the same float32 as ``recall`` it stops one positive short (recall
    ``1 / n_pos`` below the target). For every n_pos up to 2·10^6 that first happens at 1,198,379
    positives for recall 0.95, 493,499 for 0.99 and 59,999 for 0.999, never for 0.5/0.8/0.85/0.975 —
    far beyond any validation split here.
    """
    import warnings

    from torchmetrics.functional.classification import binary_specificity_at_sensitivity

    p, t = _as_2d(preds, target)
    if not 0 < recall <= 1:
        raise MetricInputError(f"recall must lie in (0, 1]; got {recall}")
    known = ~torch.isnan(t[:, 0])
    p, t = p[known, 0], t[known, 0]
    if not (t == 1).any():
        raise MetricInputError("no positive sample to choose a recall operating point on")
    check_probabilities(p)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No negative samples in targets")
        _, threshold = binary_specificity_at_sensitivity(p, t.long(), min_sensitivity=recall)
    return float(threshold)


def confusion_rates(preds, target, threshold: float) -> dict:
    """TP/FP/TN/FN counts and rates, precision, recall, specificity, F1, accuracy at a threshold."""
    p, t = _as_2d(preds, target)
    known = ~torch.isnan(t[:, 0])
    yhat, y = p[known, 0] >= threshold, t[known, 0] == 1
    tp, fp = int((yhat & y).sum()), int((yhat & ~y).sum())
    tn, fn = int((~yhat & ~y).sum()), int((~yhat & y).sum())

    def div(a, b):
        return a / b if b else math.nan

    prec, rec = div(tp, tp + fp), div(tp, tp + fn)
    return {
        "threshold": threshold, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "tpr": rec, "fpr": div(fp, fp + tn), "tnr": div(tn, fp + tn), "fnr": div(fn, tp + fn),
        "precision": prec, "recall": rec, "specificity": div(tn, fp + tn),
        "f1": div(2 * prec * rec, prec + rec) if not (math.isnan(prec) or math.isnan(rec)) else math.nan,
        "accuracy": div(tp + tn, tp + tn + fp + fn),
    }


def weighted_report(preds, target, threshold: float = 0.5) -> dict:
    """AMM Table 4 style: precision/recall/F1 of each class (negative, positive) and their
    support-weighted average, plus accuracy and the confusion matrix."""
    p, t = _as_2d(preds, target)
    known = ~torch.isnan(t[:, 0])
    yhat, y = (p[known, 0] >= threshold).long(), t[known, 0].long()
    cm = multiclass_confusion_matrix(yhat, y, num_classes=2).double()  # rows = truth
    support = cm.sum(1)
    precision = torch.nan_to_num(cm.diag() / cm.sum(0))
    recall = torch.nan_to_num(cm.diag() / support)
    f1 = torch.nan_to_num(2 * precision * recall / (precision + recall))
    w = support / support.sum()
    return {
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(("negative", "positive"))},
        "weighted": {"precision": float((w * precision).sum()), "recall": float((w * recall).sum()),
                     "f1": float((w * f1).sum())},
        "accuracy": float(cm.diag().sum() / cm.sum()),
        "confusion_matrix": cm.long().tolist(),
    }


def bootstrap_ci(metric, preds, target, n: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``metric(preds, target) -> float`` over samples."""
    p, t = _as_2d(preds, target)
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n):
        idx = torch.randint(0, len(p), (len(p),), generator=g)
        v = metric(p[idx], t[idx])
        if not math.isnan(v):
            values.append(v)
    if not values:
        return math.nan, math.nan
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)
