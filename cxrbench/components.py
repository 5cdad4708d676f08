"""Connected regions of equal value inside masks, for a stack of 2D maps at once.

Used by the radiomics engine (GLSZM zones: 8-connected, equal gray level) and by BYOA (4-connected
components of a binary map). Each pixel gets the smallest flat index (over the whole stack) of its
region, -1 outside the mask; maps of the stack never merge.

On the CPU: one C-speed ``scipy.ndimage.label`` per distinct value over the whole stack (the 3×3×3
structure links pixels in-plane only). On a GPU: min-label propagation with pointer jumping, all maps
at once (``propagate_regions``, also run on the CPU by the tests so both paths stay identical).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

_OFFSETS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)),
}


def _smallest_member(region: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Region ids (>= 0 inside the mask) -> the smallest flat index of each region."""
    flat = region.reshape(-1)
    inside = mask.reshape(-1)
    first = torch.full((int(flat.max()) + 1 if inside.any() else 1,), flat.numel(), dtype=torch.long,
                       device=flat.device)
    idx = torch.arange(flat.numel(), device=flat.device)
    first.scatter_reduce_(0, flat[inside], idx[inside], reduce="amin")
    return torch.where(mask, first[region.clamp_min(0)], -1)


def label_regions(values: torch.Tensor, mask: torch.Tensor, connectivity: int = 8,
                  canonical: bool = True) -> torch.Tensor:
    """[N, H, W] values and bool mask -> [N, H, W] long labels, -1 outside the mask.

    ``canonical``: each label is the smallest flat index of its region (the same on every device).
    Otherwise labels are only distinct per region (< N·H·W), which saves a pass where only the
    partition matters (GLSZM).
    """
    if connectivity not in _OFFSETS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if mask.device.type != "cpu":
        return propagate_regions(values, mask, connectivity)
    from scipy import ndimage

    n, h, w = mask.shape
    # The maps stacked into one 2D image with an empty row between them: a 2D labelling is cheaper
    # than a 3D one with an in-plane structure, and the empty rows keep maps apart.
    mk = np.zeros((n, h + 1, w), bool)
    mk[:, :h] = mask.numpy()
    v = np.zeros((n, h + 1, w), values.numpy().dtype)
    v[:, :h] = values.numpy()
    mk, v = mk.reshape(-1, w), v.reshape(-1, w)
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    region = np.zeros(mk.shape, np.int64)
    lab = np.empty(mk.shape, np.int32)
    offset = 0
    for g in torch.unique(values[mask]).numpy():
        count = ndimage.label(mk & (v == g), structure=structure, output=lab)
        np.add(lab, offset, out=lab, where=lab > 0)
        region += lab
        offset += count
    region = torch.from_numpy(region.reshape(n, h + 1, w)[:, :h] - 1)  # 0..K-1 inside, -1 outside
    return _smallest_member(region, mask) if canonical else region


class Regions(NamedTuple):
    """The regions of a partition labelling, found by counting (no sort of the pixels).

    flat: labels with every pixel outside the mask set to N (the pixel count), for further weighted
    ``bincount(flat, weights, minlength=N + 1)[ids]``; ids: one label per region; size: its pixel
    count; pixel: the flat index of one of its pixels (which map, which value).
    """

    flat: torch.Tensor
    ids: torch.Tensor
    size: torch.Tensor
    pixel: torch.Tensor


def regions(labels: torch.Tensor, mask: torch.Tensor) -> Regions:
    """Labels from ``label_regions`` (either kind) and their mask -> ``Regions``."""
    n = labels.numel()
    flat = torch.where(mask, labels, n).reshape(-1)
    counts = torch.bincount(flat, minlength=n + 1)[:n]
    ids = torch.nonzero(counts).squeeze(1)
    pixel = torch.zeros(n + 1, dtype=torch.long, device=flat.device).scatter_(
        0, flat, torch.arange(n, device=flat.device))[ids]
    return Regions(flat, ids, counts[ids], pixel)


def propagate_regions(values: torch.Tensor, mask: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """The GPU path of ``label_regions``: min-label propagation with pointer jumping."""
    n, h, w = mask.shape
    N = n * h * w
    big = N
    pv = F.pad(values, (1, 1, 1, 1), value=0)
    pm = F.pad(mask.to(torch.uint8), (1, 1, 1, 1)).bool()

    def at(t, dy, dx):
        return t[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    links = [(dy, dx, mask & at(pm, dy, dx) & (at(pv, dy, dx) == values)) for dy, dx in _OFFSETS[connectivity]]
    label = torch.where(mask, torch.arange(N, device=mask.device).view(n, h, w), big)
    while True:
        pl = F.pad(label, (1, 1, 1, 1), value=big)
        new = label
        for dy, dx, same in links:
            new = torch.where(same, torch.minimum(new, at(pl, dy, dx)), new)
        flat = new.reshape(-1)  # pointer jumping: follow each pixel's label to its label's label
        jumped = torch.minimum(torch.where(flat < big, flat[flat.clamp(max=N - 1)], flat), flat).view(n, h, w)
        if torch.equal(jumped, label):
            return torch.where(mask, label, -1)
        label = jumped
