"""The papers' own numbers, shown beside ours in every leaderboard cell.

Keys: (task, method, metric key, fraction). ``method`` is the leaderboard row's name — the sweep's
method name (``result.json``'s ``method``), e.g. ``amm-densenet121`` for CXA_Dense121. Values are as
printed in the paper (fractions of 1, not %), with the table they come from.
"""

from __future__ import annotations

REFERENCES: dict[tuple[str, str, str, float], tuple[float, str]] = {}


def _add(task, method, metric, value, source, fraction=1.0):
    REFERENCES[(task, method, metric, float(fraction))] = (value, source)


# RGT (000), Table II: mean AUC over the 8 box diseases; Table I: IoU-accuracy at T = 0.1 … 0.7 (mean).
for m, v in {"rgt": 0.839, "vit": 0.728, "crossvit": 0.759, "psvit": 0.766}.items():
    _add("nih8-cls", m, "auc/mean", v, "RGT Table II")
_T1 = {"rgt": (0.591, 0.424, 0.283, 0.173, 0.090, 0.041, 0.015),
       "vit": (0.553, 0.385, 0.181, 0.056, 0.034, 0.010, 0.001),
       "wang2017": (0.569, 0.371, 0.221, 0.115, 0.061, 0.029, 0.011)}
for m, vals in _T1.items():
    for t, v in zip((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), vals):
        _add("nih8-loc", m, f"iou_acc@{t}/mean", v, "RGT Table I")
# Cardio-XAttentionNet (003), Table 5: support-weighted precision / recall / F1 and AUROC of each backbone
# with the attention head (CXA_*, rows "amm-<backbone>") and with GAP ("gap-<backbone>"); Table 4: the
# CXA models' test accuracy. "amm" / "gap" stand for the paper's headline backbone, DenseNet121.
_T5 = {("amm", "densenet121"): (0.87, 0.85, 0.86, 0.89), ("gap", "densenet121"): (0.84, 0.68, 0.71, 0.85),
       ("amm", "densenet201"): (0.82, 0.81, 0.81, 0.86), ("gap", "densenet201"): (0.83, 0.66, 0.69, 0.84),
       ("amm", "resnet50"): (0.78, 0.75, 0.76, 0.87), ("gap", "resnet50"): (0.84, 0.70, 0.73, 0.86),
       ("amm", "inception-resnet-v2"): (0.85, 0.85, 0.85, 0.85), ("gap", "inception-resnet-v2"): (0.84, 0.81, 0.82, 0.86)}
_T4_ACC = {"densenet121": 0.85, "densenet201": 0.8058, "resnet50": 0.75, "inception-resnet-v2": 0.8475}
for (head, backbone), (prec, rec, f1, auroc) in _T5.items():
    names = [f"{head}-{backbone}"] + ([head] if backbone == "densenet121" else [])
    for name in names:
        for key, v in (("precision/weighted", prec), ("recall/weighted", rec), ("f1/weighted", f1), ("auc/mean", auroc)):
            _add("nih-cardiomegaly", name, key, v, f"AMM Table 5 ({head.upper()} {backbone})")
        if head == "amm":
            _add("nih-cardiomegaly", name, "accuracy", _T4_ACC[backbone], f"AMM Table 4 (CXA {backbone})")
# STN (001), Table II: 5-fold CV mean AUC and PR-AUC.
for m, auc_v, pr_v in (("vgg16", 0.8321, 0.9478), ("thorax-crop", 0.8398, 0.9512), ("stn", 0.8422, 0.9523)):
    _add("chexpert-abnormal", m, "auc/mean", auc_v, "STN Table II")
    _add("chexpert-abnormal", m, "pr_auc/mean", pr_v, "STN Table II")
# SS-CXR (002), Table 5: lung segmentation Dice.
_add("lung-seg", "unetr", "dice/mean", 0.9227, "SS-CXR Table 5")
_add("lung-seg", "gmml", "dice/mean", 0.9561, "SS-CXR Table 5")
# CAMContrast (004), Table 8 (NIH-14 linear eval, mean AUC) and Table 9 (SIIM fine-tune, Dice). Both tables
# report the fixed-crop variants of the baselines ("-crop"); "random" is no pretraining.
_T8 = {"simclr-crop": (58.43, 61.80, 64.18, 64.67, 65.04), "supce-crop": (61.55, 66.06, 69.75, 70.30, 70.57),
       "supcon-crop": (60.69, 63.82, 66.55, 66.98, 67.21), "camcontrast": (63.74, 68.72, 72.06, 72.62, 72.85)}
for m, vals in _T8.items():
    for f, v in zip((0.01, 0.05, 0.25, 0.5, 1.0), vals):
        _add("nih14-linear", m, "auc/mean", v / 100, "CAMContrast Table 8", f)
_T9 = {"random": (70.29, 73.21, 75.58, 77.34, 78.16), "simclr-crop": (70.31, 72.39, 74.79, 76.74, 77.50),
       "supce-crop": (74.33, 75.75, 77.18, 77.99, 78.32), "supcon-crop": (71.58, 73.02, 75.20, 77.49, 77.93),
       "camcontrast": (75.88, 76.50, 77.29, 78.51, 79.39)}
for m, vals in _T9.items():
    for f, v in zip((0.1, 0.25, 0.5, 0.75, 1.0), vals):
        _add("siim-seg", m, "dice/mean", v / 100, "CAMContrast Table 9", f)


def reference(task: str, method: str, metric: str, fraction: float = 1.0) -> tuple[float, str] | None:
    return REFERENCES.get((task, method, metric, float(fraction)))
