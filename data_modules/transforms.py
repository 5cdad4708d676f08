"""Every paper's input pipeline, in one place (torchvision v2: images, boxes and masks move together).

Images enter as uint8 tv_tensors.Image [1, H, W] and leave as uint8: batches cross the worker pipe
and the host-to-device copy at a quarter of float32's bytes, and become float32 in [0, 1] on the
device (``to_float``, which every method's ``on_after_batch_transfer`` applies: exactly torchvision's
``ToDtype(float32, scale=True)``, which ended this pipeline before). Boxes (tv_tensors.BoundingBoxes,
XYXY pixels) and masks (tv_tensors.Mask) receive the same geometry.

| preset      | paper (section)                  | train                                         | eval                     |
|-------------|----------------------------------|-----------------------------------------------|--------------------------|
| rgt         | RGT §IV-B                        | resize 256, random crop 224, horizontal flip  | resize 256, centre 224   |
| amm         | Cardio-XAttentionNet, Data aug.  | resize 224, shifts/rotation/shear/zoom, flip, brightness | resize eval_size (full size) |
| stn         | STN §III-A                       | resize 512, affine: rotation 5°, shear 3°     | resize 512               |
| gmml        | SS-CXR §3                        | resize 256, horizontal flip                   | resize 256               |
| camcontrast | CAMContrast §4.1, public code    | random resized crop (0.8–1), flip, rotation 30° | resize side·256/224, centre crop |
| camcontrast_seg | CAMContrast Table 2, chest X-ray seg. | random resized crop at scale 1.0 / ratio 1.0 (the whole square image), flip, rotation 30°; the mask moves with the image | resize (the whole image) |
| contrastive | SimCLR / SupCon views (CAMContrast baselines) | camcontrast + brightness/contrast jitter 0.4 | as camcontrast |
| seg         | lung / SIIM segmentation         | resize, horizontal flip                       | resize                   |
| plain       | tests and smoke runs             | resize                                        | resize                   |

``size`` overrides the preset's input side (smoke runs use small images); ``eval_size`` the eval side.
The ``loc`` split (box images) is never centre-cropped: it is resized whole to the eval side
(``crop=False``), so that no box is cut; the model sees it at a 256/224 wider field of view than the
test split under the rgt and camcontrast presets.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

PRESETS = ("rgt", "amm", "stn", "gmml", "camcontrast", "camcontrast_seg", "contrastive", "seg", "plain")
DEFAULT_SIZE = {"rgt": 224, "amm": 224, "stn": 512, "gmml": 256, "camcontrast": 224, "camcontrast_seg": 224,
                "contrastive": 224, "seg": 224, "plain": 224}


def to_float(image: torch.Tensor) -> torch.Tensor:
    """A batch's uint8 images (any shape: [B, 1, H, W], [B, V, 1, H, W]) -> float32 in [0, 1], on their
    device; float images pass unchanged. Readers of a DataModule's batches outside Lightning's loops
    (which call ``Method.on_after_batch_transfer``) apply it themselves."""
    if image.dtype == torch.uint8:
        return v2.functional.to_dtype(image, torch.float32, scale=True)
    return image


def build_transforms(preset: str, train: bool, size: int | None = None, eval_size: int | None = None,
                     crop: bool = True) -> v2.Compose:
    """``crop=False`` (evaluation only): resize the whole image to the eval side instead of the preset's
    resize + centre crop. The ``loc`` split is read this way: RGT's 256 → 224 centre crop cuts 58 of
    NIH's 984 boxes (one entirely), and a box scored on a cut image is not the box the radiologist drew."""
    if preset not in PRESETS:
        raise ValueError(f"unknown transforms preset {preset!r}; choose one of {PRESETS}")
    size = int(size or DEFAULT_SIZE[preset])
    eval_size = int(eval_size or size)
    if not crop and not train:
        return v2.Compose([v2.Resize((eval_size, eval_size), antialias=True), v2.ClampBoundingBoxes()])
    # Boxes pushed past the border by crops are clamped, never dropped, so box labels stay aligned.
    tail = [v2.ClampBoundingBoxes()]
    if preset == "rgt":
        pre = round(size * 256 / 224)
        ops = ([v2.Resize((pre, pre), antialias=True), v2.RandomCrop(size), v2.RandomHorizontalFlip()]
               if train else [v2.Resize((pre, pre), antialias=True), v2.CenterCrop(size)])
    elif preset == "amm":
        ops = ([v2.Resize((size, size), antialias=True), v2.RandomHorizontalFlip(),
                v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5),
                v2.ColorJitter(brightness=0.2)]
               if train else [v2.Resize((eval_size, eval_size), antialias=True)])
    elif preset == "stn":
        ops = [v2.Resize((size, size), antialias=True)]
        if train:
            ops.append(v2.RandomAffine(degrees=5, shear=3))
    elif preset in ("camcontrast", "camcontrast_seg", "contrastive"):
        pre = round(eval_size * 256 / 224)
        if train:  # Table 2: classification crops at scale 0.8–1, ratio 3/4–4/3; segmentation at 1.0 / 1.0
            crop = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0)) if preset == "camcontrast_seg" else dict(scale=(0.8, 1.0))
            ops = [v2.RandomResizedCrop(size, antialias=True, **crop), v2.RandomHorizontalFlip(), v2.RandomRotation(30)]
        elif preset == "camcontrast_seg":
            ops = [v2.Resize((eval_size, eval_size), antialias=True)]
        else:
            ops = [v2.Resize((pre, pre), antialias=True), v2.CenterCrop(eval_size)]
        if train and preset == "contrastive":
            ops.append(v2.ColorJitter(brightness=0.4, contrast=0.4))
    elif preset in ("gmml", "seg"):
        side = size if train else eval_size
        ops = [v2.Resize((side, side), antialias=True)] + ([v2.RandomHorizontalFlip()] if train else [])
    else:
        side = size if train else eval_size
        ops = [v2.Resize((side, side), antialias=True)]
    return v2.Compose([*ops, *tail])

