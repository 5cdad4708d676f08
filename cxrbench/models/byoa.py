"""Bootstrap Your Own Attention (BYOA), RGT §III-B and Fig. 3 (paper 000_9b4b71fdf1ea70f1.txt).

Per image and per class token: the last layer's attention of that class token (averaged over heads,
upsampled to the image) -> keep the top ``T`` of its pixels (T = 0.1: the top 10%) -> a maximum
filter and five binary dilations "grow the region of interest and smooth boundaries" -> connected
components -> the centre of mass of each component; where that centre lies in the kept top pixels,
a box of the class's mean size is drawn around it. When no centre qualifies, the class's mean box.
Everything is batched over images and classes and runs on the device of the attention maps.

Where the paper is silent (our choices, as scipy's defaults the public code relies on): a 3×3
maximum filter, dilations with the 4-connected cross, 4-connected components, unweighted centres of
mass; with several qualifying components, the one with the most pixels gives the box (radiomics needs
one box per image and class). The mean box sizes and positions come from the training split's box
file (``ClassBoxPrior.from_index``), never from constants.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..components import label_regions, regions


@dataclass
class ClassBoxPrior:
    """Mean box per class, as fractions of the image side: centre (cx, cy) and size (w, h)."""

    classes: list[str]
    center: torch.Tensor  # [K, 2] (cx, cy) in [0, 1]
    size: torch.Tensor  # [K, 2] (w, h) in [0, 1]

    @classmethod
    def from_index(cls, index, rows=None) -> "ClassBoxPrior":
        """From a DatasetIndex's boxes (pixels of each image file), over ``rows`` (default: all)."""
        if index.boxes is None or len(index.boxes) == 0:
            raise ValueError(f"{index.name}: BYOA needs box statistics, but this index has no boxes "
                             "(NIH needs BBox_List_2017.csv)")
        boxes = index.boxes if rows is None else index.boxes[index.boxes["row"].isin(set(np.asarray(rows).tolist()))]
        sizes = {}
        for r in boxes["row"].unique():
            with Image.open(index.meta["path"].iloc[int(r)]) as im:
                sizes[int(r)] = im.size  # (w, h): box pixels are relative to the file's size
        wh = np.array([sizes[int(r)] for r in boxes["row"]], np.float64)
        x0, y0 = boxes["x0"].to_numpy() / wh[:, 0], boxes["y0"].to_numpy() / wh[:, 1]
        x1, y1 = boxes["x1"].to_numpy() / wh[:, 0], boxes["y1"].to_numpy() / wh[:, 1]
        center, size = [], []
        missing = []
        for c in index.classes:
            sel = boxes["label"].to_numpy() == c
            if not sel.any():
                missing.append(c)
                continue
            center.append([((x0 + x1) / 2)[sel].mean(), ((y0 + y1) / 2)[sel].mean()])
            size.append([(x1 - x0)[sel].mean(), (y1 - y0)[sel].mean()])
        if missing:
            raise ValueError(f"{index.name}: no box in the training data for class(es) {missing}; BYOA needs a "
                             "mean box per class (use a label set whose classes all have boxes, e.g. nih8)")
        return cls(list(index.classes), torch.tensor(center), torch.tensor(size))


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile(x, q, dim=1) (linear interpolation) from two k-th values: O(n), no full sort."""
    pos = q * (x.shape[1] - 1)
    lo = math.floor(pos)
    a = torch.kthvalue(x, lo + 1, dim=1).values
    if pos == lo:
        return a
    return torch.lerp(a, torch.kthvalue(x, lo + 2, dim=1).values, pos - lo)


def _cross_dilate(x: torch.Tensor) -> torch.Tensor:
    """One binary dilation with the 4-connected cross (scipy's default structuring element)."""
    p = F.pad(x, (1, 1, 1, 1))
    return x | p[..., :-2, 1:-1] | p[..., 2:, 1:-1] | p[..., 1:-1, :-2] | p[..., 1:-1, 2:]


@torch.no_grad()
def byoa_boxes(attention: torch.Tensor, prior: ClassBoxPrior, top: float = 0.1, dilations: int = 5,
               with_fallback: bool = False):
    """Attention [B, K, H, W] (one map per class token, at the image's size) -> boxes [B, K, 4] (XYXY px);
    with ``with_fallback``, also which of them are the class's mean box (no component qualified) [B, K]."""
    if not 0 < top < 1:
        raise ValueError(f"BYOA threshold T must be in (0, 1), got {top}")
    b, k, h, w = attention.shape
    if k != len(prior.classes):
        raise ValueError(f"{k} attention maps but {len(prior.classes)} classes in the box prior")
    maps = attention.float().reshape(b * k, h, w)
    if not torch.isfinite(maps).all():
        raise ValueError("attention maps contain NaN or inf")
    thr = _quantile(maps.reshape(b * k, -1), 1 - top)[:, None, None]
    kept = maps >= thr  # the top T of the pixels
    grown = F.max_pool2d(kept[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0  # maximum filter 3×3
    for _ in range(dilations):
        grown = _cross_dilate(grown)
    labels = label_regions(torch.zeros_like(grown, dtype=torch.uint8), grown, connectivity=4, canonical=False)
    comps = regions(labels, grown)  # size and centre of mass of every component, by counting
    n = labels.numel()
    ys = torch.arange(h, device=maps.device, dtype=torch.float64)[:, None].expand(b * k, h, w).reshape(-1)
    xs = torch.arange(w, device=maps.device, dtype=torch.float64).expand(b * k, h, w).reshape(-1)
    cy = torch.bincount(comps.flat, weights=ys, minlength=n + 1)[comps.ids] / comps.size
    cx = torch.bincount(comps.flat, weights=xs, minlength=n + 1)[comps.ids] / comps.size
    owner = comps.pixel // (h * w)  # which (image, class) map the component belongs to
    iy, ix = cy.round().long().clamp(0, h - 1), cx.round().long().clamp(0, w - 1)
    qualifies = kept[owner, iy, ix]  # the centre pixel is among the top-T pixels
    score = torch.where(qualifies, comps.size.float(), -1.0)
    best = torch.full((b * k,), -1.0, device=maps.device).scatter_reduce(0, owner, score, reduce="amax")
    chosen = qualifies & (score == best[owner])
    center = prior.center.to(maps.device, torch.float32).repeat(b, 1) * torch.tensor([w, h], device=maps.device)  # fallback
    sel_owner = owner[chosen]
    center[sel_owner] = torch.stack([cx[chosen], cy[chosen]], 1).float() + 0.5  # pixel centre -> coordinates
    half = prior.size.to(maps.device, torch.float32).repeat(b, 1) * torch.tensor([w, h], device=maps.device) / 2
    boxes = torch.cat([center - half, center + half], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    boxes = boxes.view(b, k, 4)
    if with_fallback:
        own = torch.zeros(b * k, dtype=torch.bool, device=maps.device)
        own[sel_owner] = True
        return boxes, ~own.view(b, k)
    return boxes
