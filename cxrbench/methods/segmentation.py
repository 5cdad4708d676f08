"""The segmentation family: mask loss, and the shared per-image Dice / IoU / HD95.

A method subclasses ``SegmentationMethod`` and implements ``forward(images) -> [B, 1, H, W]`` mask
logits at the image's size. Everything else is identical for every segmenter:

- train: Dice loss (MONAI's, pooled over the batch, smooth 1: CAMContrast's SIIM loss) or Dice + BCE;
- val: ``val/loss`` and ``val/dice`` (per-image Dice, empty vs empty = 1) each epoch;
- test: per evaluation split, the masks thresholded at ``threshold`` and scored per image at the
  DataModule's evaluation size by ``cxrbench.metrics.SegmentationMetric`` (DDP-correct): ``dice/mean``
  (empty vs empty = 1), ``dice_pos/mean`` (images with a structure only), ``iou/mean``,
  ``iou_pos/mean``, ``hd95/mean`` in pixels of the original image file, ``hd95_input/mean`` in pixels
  of the model input and ``hd95_mm/mean`` in mm where every test image's pixel size is known (a SIIM
  DICOM's header, Montgomery's documented detector) — a missed or hallucinated structure scores the
  image diagonal, counted in ``hd95_missed`` —, ``empty_correct``, ``n_images``, ``n_positive``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..losses import dice_loss
from ..metrics import SegmentationMetric
from .base import Method

LOSSES = ("dice", "dice+bce")


def original_pixels(batch, masks: torch.Tensor) -> torch.Tensor | None:
    """Pixels of each image file per mask pixel, [B, 2] (row, column): HD95 in the file's pixels. The
    test transforms of the segmentation presets resize the whole image, so the ratio of the two sizes is
    the scale; a batch without ``orig_size`` (not from a cxrbench DataModule) stays in mask pixels."""
    if "orig_size" not in batch:
        return None
    h, w = masks.shape[-2:]
    return batch["orig_size"].double().cpu() / torch.tensor([h, w], dtype=torch.float64)


def millimetres(batch, masks: torch.Tensor) -> torch.Tensor | None:
    """Millimetres per mask pixel, [B, 2], NaN rows where the DataModule knows no pixel size."""
    scale = original_pixels(batch, masks)
    if scale is None or "pixel_mm" not in batch:
        return None
    return scale * batch["pixel_mm"].double().cpu()


class SegmentationMethod(Method):
    """Base of the mask predictors.

    Args:
        num_classes, class_names, task: linked from the DataModule (task must be 'segmentation').
        loss: 'dice' (MONAI DiceLoss, sigmoid, batch-pooled, smooth 1) or 'dice+bce'.
        threshold: probability above which a pixel is in the mask at evaluation.
        hd95: compute HD95 at test (MONAI; slower on large images).
    """

    method_name = "segmentation"
    family = "segmentation"
    TASKS = ("segmentation",)
    monitor = ("val/dice", "max")

    def __init__(self, num_classes: int = 1, class_names: list[str] | None = None, task: str = "segmentation",
                 loss: str = "dice", threshold: float = 0.5, hd95: bool = True):
        super().__init__(num_classes, class_names, task)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.loss_name, self.threshold, self.with_hd95 = loss, threshold, hd95
        self.val_metric = SegmentationMetric(with_hd95=False)
        self.eval_metrics = torch.nn.ModuleDict()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = mask.float()
        out = dice_loss(logits, target)
        if self.loss_name == "dice+bce":
            out = out + F.binary_cross_entropy_with_logits(logits, target)
        return out

    def predict_outputs(self, images: torch.Tensor) -> dict:
        """The mask probability map of every image."""
        return {"mask_prob": self(images).sigmoid()}

    def predict_masks(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() > self.threshold

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["image"])
        self.log("val/loss", self.loss(logits, batch["mask"]), prog_bar=True, batch_size=len(logits), sync_dist=True)
        self.val_metric.update(batch["index"], self.predict_masks(logits), batch["mask"])

    def on_validation_epoch_end(self):
        got = self.val_metric.compute()
        self.val_metric.reset()
        if got["n_images"]:
            self.log("val/dice", got["dice"], prog_bar=True)


    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = self.split_name(dataloader_idx)
        if split not in self.eval_metrics:
            self.eval_metrics[split] = SegmentationMetric(with_hd95=self.with_hd95).to(self.device)
        masks = self.predict_masks(self(batch["image"]))
        self.eval_metrics[split].update(batch["index"], masks, batch["mask"], spacing=original_pixels(batch, masks),
                                        pixel_mm=millimetres(batch, masks))

    def on_test_epoch_end(self):
        out: dict[str, float] = {}
        for split, metric in self.eval_metrics.items():
            got = metric.compute()
            per = metric.per_image()
            self.test_predictions[split] = {k: v.cpu().double().numpy() if k != "index" else v.cpu().numpy()
                                            for k, v in per.items()}
            metric.reset()
            prefix = "" if split == "test" else f"{split}/"
            for k in ("dice", "dice_pos", "iou", "iou_pos", "hd95", "hd95_input", "hd95_mm"):
                if k in got:
                    out[f"{prefix}{k}/mean"] = got[k]
            for k in ("hd95_missed", "empty_correct", "n_images", "n_positive"):
                if k in got:
                    out[f"{prefix}{k}"] = float(got[k])
        self.test_metrics = out
        for k, v in out.items():
            if not math.isnan(v):
                self.log(f"test/{k}", v)
