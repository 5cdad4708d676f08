"""What each leaderboard shows: its tasks and its metric columns. Declarations only (no numpy, no torch),
so that the CLI's help and the spec checks read the tasks without importing the reporting stack;
``cxrbench.leaderboard`` renders them."""

from __future__ import annotations

from dataclasses import dataclass

from .localization.thresholds import THRESHOLDS


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    tasks: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...]  # (metric key, column label)
    row_by_task: bool = False  # rows (task, method, fraction) instead of (method, fraction)


BOARDS = (
    Board("auc", "Classification: AUC (mean over classes)",
          ("nih8-cls", "nih-cardiomegaly", "chexpert-abnormal", "nih14-linear"),
          (("auc/mean", "AUC"), ("pr_auc/mean", "PR-AUC"), ("f1/weighted", "F1 (weighted)"))),
    # SS-CXR Tables 1–4: one row per fine-tune (method-task); shift/ = the held-out sources (COHEN, ACTMED).
    # The paper's binary "TPR" column is the recall of the non-disease class: our TNR (see
    # benchmarks/sscxr/references.yaml).
    Board("covidx", "COVIDx (SS-CXR Tables 1–4): in-distribution test and held-out sources (shift/)", ("covidx",),
          (("auc/mean", "AUC"), ("pr_auc/mean", "PR-AUC"), ("accuracy", "ACC"), ("tnr", "TNR (paper's TPR)"),
           ("fpr", "FPR"), ("fnr", "FNR"), ("shift/auc/mean", "shift AUC"), ("shift/accuracy", "shift ACC"))),
    # STN Table II: the rate columns are shares of all test images (they sum to 1), at the 95%-recall point;
    # thorax-crop's fallback share says on how many test images its regressor's box was too unsure to crop.
    Board("stn", "CheXpert normal vs abnormal (STN Table II): at the 95%-recall operating point",
          ("chexpert-abnormal",),
          (("auc/mean", "AUC"), ("pr_auc/mean", "PR-AUC"), ("precision", "Precision"), ("tp_share", "TP rate"),
           ("fp_share", "FP rate"), ("tn_share", "TN rate"), ("fn_share", "FN rate"), ("recall", "recall"),
           ("threshold", "threshold"), ("crop/fallback_share", "uncropped share"))),
    Board("thorax", "Thorax box regressor (STN's thorax-crop baseline): held-out lung masks' boxes",
          ("lung-thorax-box",),
          (("box_iou/mean", "box IoU"), ("box_iou@0.5", "IoU ≥ 0.5"), ("box_iou@0.75", "IoU ≥ 0.75"),
           ("confident_share", "confident share"), ("confidence/mean", "confidence"))),
    Board("iou", "Weakly supervised localization: IoU-accuracy (mean over classes)",
          ("nih8-loc", "nih-cardiomegaly"),
          (*((f"iou_acc@{t}/mean", f"T={t}") for t in THRESHOLDS), ("loc/boxes_per_image", "boxes/map")),
          row_by_task=True),
    Board("dice", "Segmentation: per-image Dice (empty vs empty = 1), IoU, HD95",
          ("lung-seg", "siim-seg"),
          (("dice/mean", "Dice"), ("dice_pos/mean", "Dice (positives)"), ("iou/mean", "IoU"),
           ("hd95_mm/mean", "HD95 (mm)"), ("hd95/mean", "HD95 (px of the original image)"),
           ("hd95_input/mean", "HD95 (px of the model input)"))),
)


def known_tasks() -> set[str]:
    """Every task some board shows: a cell's ``task`` must be one of them."""
    return {t for b in BOARDS for t in b.tasks}
