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
one box per image and class), and of equally large ones the one whose first pixel comes last in raster
order (the same on the CPU and the GPU). The mean box sizes and positions come from the training split's box
file (``data_modules.base.class_box_prior``, handed over by the data contract), never from constants.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..components import label_regions, regions


@dataclass
class ClassBoxPrior:
    """Mean box per class, as fractions of the image side: centre (cx, cy) and size (w, h)."""

    classes: list[str]
    center: torch.Tensor  # [K, 2] (cx, cy) in [0, 1]
    size: torch.Tensor  # [K, 2] (w, h) in [0, 1]

    @classmethod
    def from_prior(cls, prior) -> "ClassBoxPrior":
        """From the data layer's ``BoxPrior`` (``data_modules.contract``: the box file's mean boxes)."""
        return cls(list(prior.classes), torch.tensor(prior.center), torch.tensor(prior.size))

    @classmethod
    def from_index(cls, index, rows=None) -> "ClassBoxPrior":
        """From a DatasetIndex's boxes, over ``rows`` (default: all); the data layer reads the files."""
        from data_modules.base import class_box_prior

        return cls.from_prior(class_box_prior(index, rows))


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
    tied = qualifies & (score == best[owner])
    # Two qualifying components of one map with the same pixel count: the one with the larger label wins,
    # i.e. the one whose first pixel comes later in raster order (both labelling paths number components
    # in that order). Choosing both wrote two rows into one centre, which CUDA resolves in no fixed order
    # (the CPU's last write is this same component: CPU results are unchanged).
    last = torch.full((b * k,), -1, dtype=torch.long, device=maps.device).scatter_reduce(
        0, owner, torch.where(tied, comps.ids, -1), reduce="amax")
    chosen = tied & (comps.ids == last[owner])
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
