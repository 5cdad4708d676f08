"""Connected regions of equal value inside masks, for a stack of 2D maps at once.

Used by the radiomics engine (GLSZM zones: 8-connected, equal gray level) and by BYOA (4-connected
components of a binary map). Each pixel gets the smallest flat index (over the whole stack) of its
region, -1 outside the mask; maps of the stack never merge.

On the CPU: one C-speed ``scipy.ndimage.label`` per distinct value over the whole stack (the 3×3×3
structure links pixels in-plane only). On a GPU: min-label propagation with pointer jumping, all maps
at once (``propagate_regions``, also run on the CPU by the tests so both paths stay identical).
"""

from __future__ import annotations

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


def label_regions(values: torch.Tensor, mask: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """[N, H, W] values and bool mask -> [N, H, W] long labels (smallest member index, -1 outside)."""
    if connectivity not in _OFFSETS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if mask.device.type != "cpu":
        return propagate_regions(values, mask, connectivity)
    from scipy import ndimage

    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    v, mk = values.numpy(), mask.numpy()
    region = np.full(v.shape, -1, np.int64)
    offset = 0
    for g in np.unique(v[mk]):
        lab, count = ndimage.label(mk & (v == g), structure=structure)
        sel = lab > 0
        region[sel] = lab[sel] - 1 + offset
        offset += count
    return _smallest_member(torch.from_numpy(region), mask)


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
