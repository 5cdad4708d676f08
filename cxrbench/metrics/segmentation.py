"""Per-image Dice, IoU and HD95 with an explicit empty-mask policy.

- Dice / IoU (MONAI ``compute_dice`` / ``compute_iou``, ``ignore_empty=False``): empty prediction vs
  empty truth = 1 (a correct "nothing there"); the mean over all images is reported beside the mean
  over images whose truth is not empty (``dice_pos``: the CAMContrast SIIM protocol reports both),
  and the share of empty truths predicted empty.
- HD95 (MONAI ``compute_hausdorff_distance``, percentile 95): both empty = 0; exactly one empty is a
  missed (or hallucinated) structure and scores the image diagonal — counted in the mean and in
  ``hd95_missed``, never dropped as MONAI's NaN would be. ``spacing`` (per image, (row, column): the
  size of a mask pixel in the unit wanted) gives distances in that unit: the segmentation family passes
  the original image's pixels per model pixel, so HD95 is in pixels of the image file whatever size
  the model ran at (a 64 px twin run and a 1024 px one are read on one scale); ``hd95_input`` keeps it
  in pixels of the model's input, the unit a paper that reports pixels at its input size uses; and
  ``hd95_mm`` in millimetres where ``pixel_mm`` (per image, the mask pixel's size in mm) is known,
  reported only when it is known for every image scored (a mean over the images that happen to carry
  a pixel size would be a mean over another test set).
"""

from __future__ import annotations

import math
import warnings

import torch

from .store import SampleStore


def _masks(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction masks {tuple(pred.shape)} and target masks {tuple(target.shape)} differ in shape")
    if pred.ndim == 4:  # [B, 1, H, W]
        if pred.shape[1] != 1:
            raise ValueError(f"expected one mask channel, got {pred.shape[1]}")
        pred, target = pred[:, 0], target[:, 0]
    if pred.ndim != 3:
        raise ValueError(f"masks must be [B, H, W] or [B, 1, H, W], got {tuple(pred.shape)}")
    return pred.bool(), target.bool()


def dice_iou(pred, target) -> dict[str, torch.Tensor]:
    """Per-image Dice and IoU, [B] each (float64), with empty-vs-empty = 1.

    MONAI's ``compute_dice`` / ``compute_iou`` with ``ignore_empty=False`` compute them: an empty truth
    scores 1 if the prediction is empty too and 0 otherwise — our policy exactly, so no wrapping is
    needed beyond MONAI's input format. The masks go in one-hot, [B, 2, H, W] float64 with the
    background channel left out of the scores: a single-channel input would be read as class indices
    and MONAI's Dice would then come out in float32. So every sum is an exact integer and the ratios
    are bit-identical to ``2|P∩T| / (|P| + |T|)`` and ``|P∩T| / |P∪T|`` in float64 (checked against
    that formula in tests/test_metrics.py).
    """
    from monai.metrics import compute_dice, compute_iou

    p, t = _masks(pred, target)
    empty_t, empty_p = ~t.flatten(1).any(1), ~p.flatten(1).any(1)
    if p.shape[0] == 0:  # MONAI's Dice cannot stack an empty batch
        none = torch.zeros(0, dtype=torch.float64, device=p.device)
        return {"dice": none, "iou": none.clone(), "target_empty": empty_t, "pred_empty": empty_p}
    p2, t2 = torch.stack([~p, p], 1).double(), torch.stack([~t, t], 1).double()
    # .double(): MONAI returns its empty-case 1/0 as float32 scalars (float32 throughout if every truth is empty)
    dice = compute_dice(p2, t2, include_background=False, ignore_empty=False)[:, 0].double()
    iou = compute_iou(p2, t2, include_background=False, ignore_empty=False)[:, 0]
    return {"dice": dice, "iou": iou, "target_empty": empty_t, "pred_empty": empty_p}


def hd95(pred, target, spacing=None) -> torch.Tensor:
    """Per-image 95th-percentile Hausdorff distance, [B], with the empty policy above: in mask pixels, or
    in the unit of ``spacing`` ([B, 2] or one (row, column) pair: the size of a mask pixel)."""
    from monai.metrics import compute_hausdorff_distance

    p, t = _masks(pred, target)
    out = torch.zeros(p.shape[0], dtype=torch.float64)
    step = torch.ones(p.shape[0], 2, dtype=torch.float64) if spacing is None else \
        torch.as_tensor(spacing, dtype=torch.float64).cpu().reshape(-1, 2).expand(p.shape[0], 2)
    diag = torch.hypot(p.shape[-2] * step[:, 0], p.shape[-1] * step[:, 1])
    pe, te = p.flatten(1).sum(1) == 0, t.flatten(1).sum(1) == 0
    both = (~pe & ~te).cpu()
    if both.any():
        with warnings.catch_warnings():  # MONAI warns about its own deprecated internals
            warnings.simplefilter("ignore", FutureWarning)
            d = compute_hausdorff_distance(p[both, None].float(), t[both, None].float(), include_background=True,
                                           percentile=95, spacing=step[both].tolist())
        out[both] = d.reshape(-1).double().cpu()
    missed = (pe ^ te).cpu()
    out[missed] = diag[missed]
    return out


def summarize(per_image: dict[str, torch.Tensor]) -> dict[str, float]:
    dice, iou = per_image["dice"].double(), per_image["iou"].double()
    te, pe = per_image["target_empty"].bool(), per_image["pred_empty"].bool()
    out = {
        "dice": float(dice.mean()) if len(dice) else math.nan,
        "iou": float(iou.mean()) if len(iou) else math.nan,
        "dice_pos": float(dice[~te].mean()) if (~te).any() else math.nan,
        "iou_pos": float(iou[~te].mean()) if (~te).any() else math.nan,
        "empty_correct": float((pe[te]).double().mean()) if te.any() else math.nan,
        "n_images": int(len(dice)), "n_positive": int((~te).sum()),
    }
    for key in ("hd95", "hd95_input"):
        if key in per_image:
            h = per_image[key].double()
            out[key] = float(h.mean()) if len(h) else math.nan
    if "hd95_mm" in per_image and len(per_image["hd95_mm"]) and bool(per_image["hd95_mm"].isfinite().all()):
        out["hd95_mm"] = float(per_image["hd95_mm"].double().mean())
    if "hd95" in per_image:
        out["hd95_missed"] = int((te ^ pe).sum())
    return out


def segmentation_scores(pred, target, with_hd95: bool = True) -> dict[str, float]:
    per = dice_iou(pred, target)
    if with_hd95:
        per["hd95"] = hd95(pred, target)
    return summarize(per)


HD95_KEYS = ("hd95", "hd95_input", "hd95_mm")


class SegmentationMetric(SampleStore):
    """Per-image Dice/IoU/HD95 collected across DDP ranks; ``compute()`` gives ``summarize``'s dict."""

    def __init__(self, with_hd95: bool = True, **kwargs):
        super().__init__(HD95_KEYS + ("dice", "iou", "target_empty", "pred_empty"), **kwargs)
        self.with_hd95 = with_hd95

    def update(self, index, pred, target, spacing=None, pixel_mm=None) -> None:  # type: ignore[override]
        """``spacing``: file pixels per mask pixel ([B, 2]); ``pixel_mm``: mm per mask pixel ([B, 2], NaN
        rows where unknown)."""
        per = dice_iou(pred, target)
        none = torch.full_like(per["dice"], math.nan)
        per["hd95_input"] = hd95(pred, target) if self.with_hd95 else none
        per["hd95"] = (per["hd95_input"] if spacing is None else hd95(pred, target, spacing)) if self.with_hd95 else none
        per["hd95_mm"] = none.clone()
        if self.with_hd95 and pixel_mm is not None:
            mm = torch.as_tensor(pixel_mm, dtype=torch.float64).cpu().reshape(-1, 2)
            known = mm.isfinite().all(1)
            if known.any():
                p, t = _masks(pred, target)
                per["hd95_mm"][known.to(none.device)] = hd95(p[known.to(p.device)], t[known.to(t.device)],
                                                             mm[known]).to(none.device, none.dtype)
        super().update(index, **{k: v.to(self.device) for k, v in per.items()})

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        per = super().compute()
        if not self.with_hd95:
            for key in HD95_KEYS:
                per.pop(key)
        return summarize(per)

    def per_image(self) -> dict[str, torch.Tensor]:
        """The per-image scores behind ``compute()`` (index, dice, iou, hd95, target_empty, pred_empty),
        gathered across ranks and de-duplicated like them."""
        with self.sync_context(should_sync=self._to_sync, should_unsync=True):
            per = SampleStore.compute(self)
        if not self.with_hd95:
            for key in HD95_KEYS:
                per.pop(key)
        return per


__all__ = ["dice_iou", "hd95", "summarize", "segmentation_scores", "SegmentationMetric"]
