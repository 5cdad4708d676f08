"""The 107 PyRadiomics features of RGT Table III, for a whole batch of ROIs in one call, in torch.

Why by hand: PyRadiomics computes one ROI per call on the CPU (~100–300 ms each) and no public
library computes its texture matrices for many ROIs at once on a GPU; this module mirrors
PyRadiomics 3.0.1's code (``radiomics/*.py`` and ``src/cmatrices.c``) operation by operation.

Conventions (PyRadiomics defaults as the RGT code used them, on a 2D image given as one slice):
- gray values are the image's own 0–255 values. binWidth 25 on min-max normalised [0, 1] inputs (what
  the public RGT code does) would put every pixel in one bin and make every texture feature constant.
- binning: bin = ⌊x/W⌋ − ⌊min/W⌋ + 1 (edges anchored at 0); absent gray levels carry zero probability
  while the present levels keep their index values (same sums as PyRadiomics deleting those rows).
- texture in the plane: GLCM and GLRLM on the 4 in-plane angles (distance 1, symmetrical GLCM),
  per-angle features averaged with nanmean (an angle whose Imc2 is NaN by rounding drops out; a
  GLRLM angle along which no line holds two ROI pixels is dropped, as PyRadiomics' C code does);
  GLSZM 8-connected; GLDM α = 0 on the 8 neighbours; NGTDM over the 8 neighbours, a pixel without
  neighbours in the ROI counts with difference 0.
- shape: 3D shape on a single slice, pixel spacing 1: eigenvalues of the coordinate covariance with
  a zero z-eigenvalue (LeastAxisLength = Flatness = 0), VoxelVolume = pixel count.
- ROIs PyRadiomics refuses (empty, a single pixel, one pixel wide, a mask covering the whole image)
  give a row of NaN, never an error.

- mesh shape: PyRadiomics' marching cubes (its own tables, ``mc_tables.py``) over the padded slice;
  each 2×2 window of the slice is shared by the cube below and the cube above it, so area and volume
  are one 16-row table per window pattern. The four maximum diameters, which PyRadiomics gets from
  all O(V²) vertex pairs, come from the row extremes that can be convex-hull vertices (exact: every
  hull vertex of a grid set is the leftmost or rightmost point of its row).

Speed (CPU): the ROIs of a chunk are packed side by side into pages (``_pack``: one zero pixel
between boxes, so nothing joins two ROIs) rather than each padded to the chunk's largest box (~1.4×
the ROI pixels instead of ~2.1×); every class is built from integer keys carrying the ROI index,
counted with ``bincount`` (no per-ROI loop); first-order statistics of integer gray values come
from a per-ROI histogram; GLRLM runs are the segments between value changes of the pages' lines
read one after another; the GLSZM zones are labelled by cc3d in one pass over every gray level.
Keys carry roi + 1, so pixels outside every ROI land in a first block of each table that is dropped
(no select pass); CPU counts spread a row over 4 table copies (``_lane_offsets``: a row of one ROI
and level would otherwise chain every add on one entry); nonzero and run boundaries go through numpy
on the CPU (its nonzero is ~5× torch's). Those took 1,024 ROIs from 1.0–1.4 s to 0.6 s on 2 cores.
``benchmarks/perf/radiomics.py`` measures it against PyRadiomics.

Memory: ROIs are sorted by box size and processed in chunks of ``chunk`` (default 128); a chunk's
pages hold ~1.4× its ROI pixels, and peak memory is about 120 bytes per page pixel (measured: 0.75–0.81 GB
for 128 ROIs of 223² of random texture; 128 boxes of 40–120 px: ~0.15 GB), whatever the batch size. A ROI may span at most
``MAX_LEVELS`` gray-level bins (the GLCM holds chunk × 4 × levels² counts): 0–255 and 12-bit images
at binWidth 25 are far below it; a wider range is refused with advice, not silently truncated.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from ..components import label_regions, regions
from .mc_tables import GRID_ANGLES, TRI_TABLE, VERT_LIST
from .reference import FEATURE_NAMES

EPS = float(np.spacing(1))
ANGLES = ((0, 1), (1, 0), (1, 1), (1, -1))  # in-plane (dy, dx), one per direction pair
NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
COPY_BOXES_ON_CPU = True  # tests turn it off to run the vectorised gather (the GPU's) on the CPU
ZONES_BY_CC3D = True  # tests turn it off to run the GPU's zone labelling (``label_regions``) on the CPU
MAX_LEVELS = 256  # gray-level bins per ROI: the GLCM of a chunk holds chunk × 4 × levels² counts (≤ 270 MB)
NOT_IN_ENGINE: tuple[str, ...] = ()  # every feature of FEATURE_NAMES is computed here
_COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


class RadiomicsInputError(ValueError):
    pass


# ----------------------------------------------------------------------------------------- inputs


def _clip_boxes(boxes, height: int, width: int):
    """XYXY pixel boxes (right/bottom exclusive), checked, rounded and clipped -> (x0, y0, x1, y1) long [B]."""
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise RadiomicsInputError(f"boxes must be [B, 4] (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    if boxes.is_floating_point() and not torch.isfinite(boxes).all():
        bad = torch.nonzero(~torch.isfinite(boxes).all(1)).flatten()[:5].tolist()
        raise RadiomicsInputError(f"boxes {bad} have non-finite coordinates (NaN or inf would be read as 0 or clipped)")
    b = boxes.round().long()
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise RadiomicsInputError("boxes with negative width or height (expected x0 <= x1, y0 <= y1)")
    return b[:, 0].clamp(0, width), b[:, 1].clamp(0, height), b[:, 2].clamp(0, width), b[:, 3].clamp(0, height)


def boxes_to_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """XYXY pixel boxes (right/bottom exclusive) -> bool masks; boxes are clipped to the image."""
    x0, y0, x1, y1 = _clip_boxes(boxes, height, width)
    ys = torch.arange(height, device=x0.device)[None, :, None]
    xs = torch.arange(width, device=x0.device)[None, None, :]
    return ((ys >= y0[:, None, None]) & (ys < y1[:, None, None]) & (xs >= x0[:, None, None]) & (xs < x1[:, None, None]))


def _check(images: torch.Tensor, masks: torch.Tensor | None) -> tuple[float, float]:
    """Refuses malformed input; returns the images' (lowest, highest) gray value.

    One ``aminmax`` pass stands for ``isfinite(images).all()`` (NaN propagates through min/max and
    inf is its own extreme): at 1,024 × 224² float64 pixels it costs 13 ms instead of 220 ms, a
    sixth of the engine's whole time. The per-image scan runs only to name the bad images.
    """
    if images.ndim != 3:
        raise RadiomicsInputError(f"images must be [B, H, W], got {tuple(images.shape)}")
    lo, hi = (float(t) for t in torch.aminmax(images)) if images.numel() else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # (integer images hold no NaN/inf)
        bad = torch.nonzero(~torch.isfinite(images).flatten(1).all(1)).flatten()[:5].tolist()
        raise RadiomicsInputError(f"images {bad} contain non-finite pixels (NaN or inf)")
    if masks is None:
        return lo, hi
    if masks.shape != images.shape:
        raise RadiomicsInputError(f"masks {tuple(masks.shape)} and images {tuple(images.shape)} differ in shape")
    if masks.dtype != torch.bool:
        m = masks.double()
        if not ((m == 0) | (m == 1)).all():
            raise RadiomicsInputError("masks must hold only 0 and 1 (or bool); got other values")
    return lo, hi


# ----------------------------------------------------------------------------------------- helpers


def _at(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The interior of pages (one-pixel zero border) shifted: view[y, x] = t[1 + y + dy, 1 + x + dx]."""
    P, W = t.shape[-2:]
    return t[..., 1 + dy:P - 1 + dy, 1 + dx:W - 1 + dx]


def _flatnonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the true entries of a flat bool tensor. On the CPU through numpy, whose nonzero is
    ~5× faster than torch's (0.66 vs 3.2 ms for 1.5 M entries, measured on 2 cores), zero-copy."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def _change_points(flat: torch.Tensor) -> torch.Tensor:
    """i where flat[i] != flat[i + 1]; on the CPU all in numpy (its int16 comparison is ~5× faster too)."""
    if flat.device.type == "cpu":
        f = flat.numpy()
        return torch.from_numpy(np.flatnonzero(f[1:] != f[:-1]))
    return torch.nonzero(flat[1:] != flat[:-1]).squeeze(1)


LANES = 4  # see ``_lane_offsets``


def _lane_offsets(width: int, size: int, device) -> torch.Tensor:
    """[width] int32 offsets (column mod LANES) · size, to add to the keys of a [..., width] map.

    A CPU ``bincount`` over a page's keys is bound by the latency of adding into the same entry over
    and over (a row of one ROI and level keys one entry). Counting column c in copy c mod 4 of the
    table breaks those chains: 1.7× faster for the NGTDM sums (3.5 -> 2.1 ms, 1.2 M pixels); the copies
    are summed by ``_count_lanes``. On a GPU the lanes are one (atomics have no such chain).
    """
    return (torch.arange(width, dtype=torch.int32, device=device) % _lanes(size, device)) * size


def _lanes(size: int, device) -> int:
    """LANES on the CPU while the laned table stays small (≤ 2²² entries: a GLCM of 128 ROIs × 256
    levels would otherwise hold 4× its 270 MB); 1 on a GPU. Refuses tables past int32 keys."""
    if size >= 2**31:
        raise RadiomicsInputError(f"a count table of {size:,} entries overflows the engine's int32 keys: pass a "
                                  "smaller chunk (ROIs per pass) or fewer gray levels (a larger bin_width)")
    cpu = torch.device(device).type == "cpu"
    return LANES if cpu and LANES * size <= 2**22 else 1


def _count_lanes(keys: torch.Tensor, size: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``bincount`` of keys laned by ``_lane_offsets(..., size, ...)`` -> [size], the lanes summed."""
    lanes = _lanes(size, keys.device)
    w = None if weights is None else weights.reshape(-1)
    return torch.bincount(keys.reshape(-1), weights=w, minlength=lanes * size).view(lanes, size).sum(0)


def _nanmean(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.nanmean(x, dim=dim)


def _entropy(p: torch.Tensor, dims) -> torch.Tensor:
    return -(p * torch.log2(p + EPS)).sum(dims)


def _bounding_boxes(masks: torch.Tensor):
    """Per ROI: (y0, x0, height, width) of the mask's bounding box; (0, 0, 1, 1) for an empty mask."""
    rows, cols = masks.any(2), masks.any(1)
    nonempty = rows.any(1)
    h_idx = torch.arange(masks.shape[1], device=masks.device)
    w_idx = torch.arange(masks.shape[2], device=masks.device)
    big = torch.iinfo(torch.long).max
    y0 = torch.where(rows, h_idx, big).amin(1)
    y1 = torch.where(rows, h_idx, -1).amax(1) + 1
    x0 = torch.where(cols, w_idx, big).amin(1)
    x1 = torch.where(cols, w_idx, -1).amax(1) + 1
    y0, x0 = torch.where(nonempty, y0, 0), torch.where(nonempty, x0, 0)
    y1, x1 = torch.where(nonempty, y1, 1), torch.where(nonempty, x1, 1)
    return y0, x0, y1 - y0, x1 - x0


class _Chunk(NamedTuple):
    """A chunk of n ROIs packed into pages (``_pack``), with what its pixel lists gave (``_gather``).

    Every class is built from integer keys that carry the ROI index, so where a ROI sits does not
    matter: packing the ROIs' bounding boxes side by side, instead of padding each to the chunk's
    largest box, halves the pixels every pass reads (boxes of 40–120 px: ~2× padding).
    """

    n: int
    G: int  # gray-level bins of the chunk
    bins: torch.Tensor  # [S, P, Wp] int32: gray-level bins 1..G in the pages, 0 outside every ROI
    roi: torch.Tensor  # [S, P, Wp] int32: the ROI of each page pixel, -1 outside
    inside: torch.Tensor  # [S, P, Wp] bool: roi >= 0
    py: torch.Tensor  # [n] long: page row of each ROI's bounding-box corner
    px: torch.Tensor  # [n] long: page column of it
    eh: torch.Tensor  # [n] long: bounding-box height
    ew: torch.Tensor  # [n] long: bounding-box width
    v: torch.Tensor  # [n, K] gray values and
    w: torch.Tensor  # [n, K] how many ROI pixels hold each (``_value_weights``)
    hist: torch.Tensor  # [n, G] long: ROI pixels per gray-level bin
    per_row: torch.Tensor  # [n, h] ROI pixels per box row
    x_row: torch.Tensor  # [n, h] Σ x over them
    per_col: torch.Tensor  # [n, w] ROI pixels per box column
    filled: bool  # every ROI fills its bounding box (boxes)
    code: torch.Tensor  # [S, P, Wp] int32: (roi + 1)·(G + 1) + bin, a pixel's ROI and level in one key; 0 outside


def _pack(eh: list[int], ew: list[int]):
    """Shelf packing of eh × ew boxes into pages of P × Wp pixels, tallest first.

    A zero pixel lies between any two boxes and along every page edge, so no pair of neighbours
    (8-connectivity), run or marching-cubes window ever joins two ROIs, and a neighbour view of the
    page interior never leaves the page. Wide pages keep the sheared diagonal lines of GLRLM short.
    """
    P = max(eh) + 2
    Wp = max(max(ew) + 2, 4 * P)
    page, py, px = [0] * len(eh), [0] * len(eh), [0] * len(eh)
    s, y, x, shelf = 0, 1, 1, 0
    for r in sorted(range(len(eh)), key=lambda r: -eh[r]):
        h, w = eh[r], ew[r]
        if x + w + 1 > Wp:  # next shelf
            y, x, shelf = y + shelf + 1, 1, 0
        if y + h + 1 > P:  # next page
            s, y, x, shelf = s + 1, 1, 1, 0
        page[r], py[r], px[r] = s, y, x
        x += w + 1
        shelf = max(shelf, h)
    return page, py, px, s + 1, P, Wp


def _gather(images, masks, sel, y0, x0, eh, ew, bin_width: float) -> _Chunk:
    """The ROIs ``sel`` (bounding boxes y0, x0, eh, ew) binned and packed into pages.

    Boxes on the CPU are copied into the pages slice by slice, and integer gray values (radiographs)
    are binned in the pages themselves. Otherwise (masks, a GPU, non-integer values) the pixels pass
    once through flat lists, built row by row of each box (one gather per list); the lists give the
    value histograms, the bins and the coordinate sums, and are then dropped.
    """
    dev = images.device
    n = len(sel)
    H, W = images.shape[1:]
    page, py, px, S, P, Wp = _pack(eh.tolist(), ew.tolist())
    page, py, px = (torch.tensor(t, dtype=torch.long, device=dev) for t in (page, py, px))
    h, w = int(eh.max()), int(ew.max())
    # one entry per box row ...
    row_r = torch.repeat_interleave(torch.arange(n, device=dev), eh)
    row_ly = torch.arange(len(row_r), device=dev) - (torch.cumsum(eh, 0) - eh)[row_r]
    row_w = ew[row_r]
    row_src = ((sel * H + y0) * W + x0)[row_r] + row_ly * W
    row_dst = ((page * P + py) * Wp + px)[row_r] + row_ly * Wp
    # ... then one per pixel: its row q and its column lx in the box
    if masks is None and dev.type == "cpu" and COPY_BOXES_ON_CPU:
        # Boxes on the CPU: two strided slice copies per box, no per-pixel index lists (which a GPU
        # builds faster than it launches a kernel per box).
        img_p = torch.zeros(S, P, Wp, dtype=torch.float64)
        roi = torch.full((S, P, Wp), -1, dtype=torch.int32)
        for i, (b_, y_, x_, h_, w_, s_, py_, px_) in enumerate(zip(*(t.tolist() for t in (sel, y0, x0, eh, ew, page, py, px)))):
            img_p[s_, py_:py_ + h_, px_:px_ + w_] = images[b_, y_:y_ + h_, x_:x_ + w_]
            roi[s_, py_:py_ + h_, px_:px_ + w_] = i
        inside = roi >= 0
        boxes, q = True, None
        lo, hi = (float(t) for t in torch.aminmax(img_p))  # (the zeros between boxes change neither test)
        if lo >= 0 and hi < 4096 and bool((img_p == img_p.round()).all()):
            # Integer gray values (every radiograph): the value histograms and the bins straight from
            # the pages (pulling the ROI pixels out as lists by boolean indexing was 40% of this
            # function). Key (roi + 1)·V + value, int32: the pixels between boxes (roi −1, value 0)
            # key 0, in a first block that is dropped (no select).
            V = int(hi) + 1
            if (n + 1) * V >= 2**31:
                raise RadiomicsInputError(f"{n} ROIs of {V} gray values overflow the engine's int32 keys: pass fewer ROIs per chunk")
            key = (roi + 1) * V + img_p.to(torch.int32)
            wt = torch.bincount(key.reshape(-1), minlength=(n + 1) * V)[V:].view(n, V).to(torch.float64)
            v = torch.arange(V, dtype=torch.float64).expand(n, V)
            x = r = None
        else:
            x, r = img_p[inside], roi[inside].long()
    else:
        q = torch.repeat_interleave(torch.arange(len(row_r), device=dev), row_w)
        lx = torch.arange(len(q), device=dev) - (torch.cumsum(row_w, 0) - row_w)[q]
        src = row_src[q] + lx
        keep = None if masks is None else masks.reshape(-1)[src]
        boxes = keep is None or bool(keep.all())  # every mask fills its bounding box: the row sums are known
        if not boxes:
            q, lx, src = q[keep], lx[keep], src[keep]
        x = images.reshape(-1)[src].to(torch.float64)
        r = row_r[q]
    if x is not None:
        v, wt, key = _value_weights(x, r, n)
    lowest = torch.where(wt > 0, v, torch.inf).amin(1)
    low = lowest - torch.remainder(lowest, bin_width)  # numpy's min - min % W (floor semantics)
    if key is not None:  # integer gray values: bin each value once per ROI, look the pixels up
        table = torch.floor((v - low[:, None]) / bin_width).to(torch.int32) + 1  # [n, V]
        G = int(torch.where(wt > 0, table, 0).max())
        if x is None:  # the page's key: bins in place, 0 between boxes (block 0)
            bins = torch.cat([table.new_zeros(V), table.reshape(-1)]).index_select(0, key.reshape(-1)).view(key.shape)
        else:
            b = table.reshape(-1)[key]
    else:
        b = torch.floor((x - low[r]) / bin_width).to(torch.int32) + 1
        G = int(b.max())
    if G > MAX_LEVELS:
        raise RadiomicsInputError(
            f"a ROI spans {G} gray-level bins of width {bin_width} (at most {MAX_LEVELS}): the engine expects "
            "0–255 (or 12-bit) gray values; rescale the images or raise bin_width")
    if key is not None:
        hist = torch.zeros(n, G + 1, dtype=wt.dtype, device=dev)
        hist.scatter_add_(1, table.long().clamp(0, G), wt)  # values below the ROI's minimum weigh 0
        hist = hist[:, 1:].round().long()
    else:
        hist = torch.bincount(r * G + (b - 1), minlength=n * G).view(n, G)
    if x is not None and q is None:  # (x is None: the bins were built in the pages above)
        bins = torch.zeros(S, P, Wp, dtype=torch.int32).masked_scatter_(inside, b)
    elif q is not None:
        dst = row_dst[q] + lx
        bins = torch.zeros(S * P * Wp, dtype=torch.int32, device=dev)
        bins[dst] = b
        roi = torch.full((S * P * Wp,), -1, dtype=torch.int32, device=dev)
        roi[dst] = r.to(torch.int32)
        bins, roi = bins.view(S, P, Wp), roi.view(S, P, Wp)
        inside = roi >= 0
    # Coordinate sums per box row and column (exact integers in float64) for the shape features.
    dt = torch.float64
    row_at = row_r * h + row_ly
    if boxes:
        per_row_r = row_w.to(dt)
        x_row_r = (row_w * (row_w - 1) // 2).to(dt)
        per_col = (torch.arange(w, device=dev) < ew[:, None]) * eh[:, None].to(dt)
    else:
        per_row_r = torch.bincount(q, minlength=len(row_r)).to(dt)
        x_row_r = torch.bincount(q, weights=lx.to(dt), minlength=len(row_r))
        per_col = torch.bincount(r * w + lx, minlength=n * w).view(n, w).to(dt)
    per_row = torch.zeros(n * h, dtype=dt, device=dev).index_put_((row_at,), per_row_r).view(n, h)
    x_row = torch.zeros(n * h, dtype=dt, device=dev).index_put_((row_at,), x_row_r).view(n, h)
    code = (roi + 1) * (G + 1) + bins  # (built once: GLCM, GLRLM, GLDM/NGTDM and the zones key on it)
    return _Chunk(n, G, bins, roi, inside, py, px, eh, ew, v, wt, hist, per_row, x_row, per_col, boxes, code)


# ----------------------------------------------------------------------------------------- features


def _value_weights(x: torch.Tensor, r: torch.Tensor, n: int):
    """The ROI pixels' values (x, of ROI r) as (v, w, key): sorted values and how many pixels hold each,
    [n, K] both, and each pixel's flat index into them (None for sorted values).

    Small non-negative integer gray values (8- and 12-bit radiographs) give a histogram, v = 0..V−1
    and w = counts: every first-order feature is then a sum over K = V values instead of a pass over
    all pixels. Any other values are sorted, one weight-1 entry per ROI pixel (weight 0 after them).
    """
    lowest, top = float(x.min()), float(x.max())
    if lowest >= 0 and top < 4096 and bool((x == x.round()).all()):
        V = int(top) + 1
        key = r * V + x.long()
        w = torch.bincount(key, minlength=n * V).view(n, V).to(x.dtype)
        return torch.arange(V, dtype=x.dtype, device=x.device).expand(n, V), w, key
    order = torch.argsort(x, stable=True)
    order = order[torch.argsort(r[order], stable=True)]  # by ROI, then by value
    rs = r[order]
    count = torch.bincount(r, minlength=n)
    pos = torch.arange(len(r), device=x.device) - (torch.cumsum(count, 0) - count)[rs]
    v = torch.full((n, int(count.max())), torch.inf, dtype=x.dtype, device=x.device)
    v[rs, pos] = x[order]
    w = torch.isfinite(v).to(x.dtype)
    return torch.where(w > 0, v, 0.0), w, None


def _percentile(v, cw, count, q: float):
    """numpy's linear-interpolated percentile (rank q·(N−1)) from values and their cumulative counts."""
    pos = q * (count - 1).clamp_min(0)
    lo = pos.floor()

    def kth(k):  # the k-th smallest value (0-based): the first value whose cumulative count exceeds k
        i = torch.searchsorted(cw, k[:, None].contiguous(), right=True).clamp(max=v.shape[1] - 1)
        return v.gather(1, i)[:, 0]

    return torch.lerp(kth(lo), kth(pos.ceil()), pos - lo)


def _firstorder(c: _Chunk, out: torch.Tensor) -> None:
    v, w, hist = c.v, c.w, c.hist
    count = w.sum(1)
    cw = w.cumsum(1)
    p10, p25, p50, p75, p90 = (_percentile(v, cw, count, q) for q in (0.10, 0.25, 0.5, 0.75, 0.90))
    held = w > 0
    mn = torch.where(held, v, torch.inf).amin(1)
    mx = torch.where(held, v, -torch.inf).amax(1)
    mean = (v * w).sum(1) / count
    dev = v - mean[:, None]
    dev2 = dev * dev
    m2 = (dev2 * w).sum(1) / count
    m3 = (dev2 * dev * w).sum(1) / count
    m4 = (dev2 * dev2 * w).sum(1) / count
    m2s = torch.where(m2 == 0, torch.ones_like(m2), m2)
    energy = (v * v * w).sum(1)
    inner = w * ((v >= p10[:, None]) & (v <= p90[:, None]))
    n_inner = inner.sum(1)
    inner_mean = (v * inner).sum(1) / n_inner
    p = hist.to(v.dtype) / count[:, None]
    f = {
        "10Percentile": p10, "90Percentile": p90, "Energy": energy, "Entropy": _entropy(p, 1),
        "InterquartileRange": p75 - p25, "Kurtosis": m4 / m2s**2, "Maximum": mx,
        "MeanAbsoluteDeviation": (dev.abs() * w).sum(1) / count, "Mean": mean, "Median": p50, "Minimum": mn,
        "Range": mx - mn, "RobustMeanAbsoluteDeviation": ((v - inner_mean[:, None]).abs() * inner).sum(1) / n_inner,
        "RootMeanSquared": torch.sqrt(energy / count), "Skewness": m3 / m2s**1.5, "TotalEnergy": energy,
        "Uniformity": (p**2).sum(1), "Variance": m2,
    }
    for k, val in f.items():
        out[:, _COL[f"original_firstorder_{k}"]] = val


def _glcm(c: _Chunk, ng, n_present, out):
    n, G = c.n, c.G
    A = len(ANGLES)
    dev, dt = c.bins.device, torch.float64
    G1 = G + 1
    # Pairs counted at [roi + 1, level, angle, neighbour's level] of a [n + 1, G + 1, A, G + 1] table:
    # a pixel outside every ROI (roi −1, level 0) or a neighbour outside it (level 0) lands in an entry
    # dropped below, so no select is needed (level 0 = outside every ROI).
    size = (n + 1) * G1 * A * G1
    base = _at(c.code, 0, 0) * (A * G1)
    base += _lane_offsets(base.shape[-1], size, dev)
    keys = torch.empty((A,) + base.shape, dtype=base.dtype, device=dev)
    for a, (dy, dx) in enumerate(ANGLES):
        torch.add(base, _at(c.bins, dy, dx), out=keys[a])
        if a:
            keys[a] += a * G1
    P = _count_lanes(keys, size).view(n + 1, G1, A, G1)
    P = P[1:, 1:, :, 1:].transpose(1, 2).to(dt)  # [n, A, G, G]
    P = P + P.transpose(2, 3)
    s = P.sum((2, 3), keepdim=True)
    P = P / torch.where(s == 0, torch.nan, s)  # empty angle -> NaN, dropped by the nanmeans
    lv = torch.arange(1, G + 1, dtype=dt, device=dev)
    i, j = lv[:, None], lv[None, :]
    px, py = P.sum(3, keepdim=True), P.sum(2, keepdim=True)  # [n, A, G, 1], [n, A, 1, G]
    ux = (P * i).sum((2, 3), keepdim=True)
    uy = (P * j).sum((2, 3), keepdim=True)
    ksum = torch.arange(2, 2 * G + 1, dtype=dt, device=dev)
    kdiff = torch.arange(0, G, dtype=dt, device=dev)
    ij_sum, ij_diff = (i + j).long(), (i - j).abs().long()
    pxAddy = torch.stack([(P * (ij_sum == k)).sum((2, 3)) for k in ksum.long().tolist()], 2)  # [n, A, 2G-1]
    pxSuby = torch.stack([(P * (ij_diff == k)).sum((2, 3)) for k in kdiff.long().tolist()], 2)  # [n, A, G]
    HXY = _entropy(P, (2, 3))
    f = {}
    f["Autocorrelation"] = _nanmean((P * (i * j)).sum((2, 3)), 1)
    f["JointAverage"] = ux[:, :, 0, 0].nanmean(1)
    t = (i + j) - ux - uy
    f["ClusterProminence"] = _nanmean((P * t**4).sum((2, 3)), 1)
    f["ClusterShade"] = _nanmean((P * t**3).sum((2, 3)), 1)
    f["ClusterTendency"] = _nanmean((P * t**2).sum((2, 3)), 1)
    f["Contrast"] = _nanmean((P * (i - j) ** 2).sum((2, 3)), 1)
    sigx = (P * (i - ux) ** 2).sum((2, 3)) ** 0.5
    sigy = (P * (j - uy) ** 2).sum((2, 3)) ** 0.5
    corm = (P * (i - ux) * (j - uy)).sum((2, 3))
    corr = corm / (sigx * sigy + EPS)
    corr = torch.where(sigx * sigy == 0, torch.ones_like(corr), corr)
    f["Correlation"] = _nanmean(corr, 1)
    diffavg = (kdiff * pxSuby).sum(2)
    f["DifferenceAverage"] = _nanmean(diffavg, 1)
    f["DifferenceEntropy"] = _nanmean(_entropy(pxSuby, 2), 1)
    f["DifferenceVariance"] = _nanmean((pxSuby * (kdiff - diffavg[..., None]) ** 2).sum(2), 1)
    f["JointEnergy"] = _nanmean((P**2).sum((2, 3)), 1)
    f["JointEntropy"] = _nanmean(HXY, 1)
    HX, HY = _entropy(px, (2, 3)), _entropy(py, (2, 3))
    HXY1 = -(P * torch.log2(px * py + EPS)).sum((2, 3))
    HXY2 = -(px * py * torch.log2(px * py + EPS)).sum((2, 3))
    div = torch.fmax(HX, HY)
    imc1 = torch.where(div != 0, (HXY - HXY1) / torch.where(div != 0, div, 1.0), torch.zeros_like(div))
    f["Imc1"] = _nanmean(imc1, 1)
    imc2 = (1 - torch.exp(-2 * (HXY2 - HXY))) ** 0.5  # NaN when rounding makes HXY2 < HXY: that angle drops
    imc2 = torch.where(HXY2 == HXY, torch.zeros_like(imc2), imc2)
    f["Imc2"] = _nanmean(imc2, 1)
    f["Idm"] = _nanmean((pxSuby / (1 + kdiff**2)).sum(2), 1)
    ngd = ng.to(dt)[:, None, None]
    f["Idmn"] = _nanmean((pxSuby / (1 + kdiff**2 / ngd**2)).sum(2), 1)
    f["Id"] = _nanmean((pxSuby / (1 + kdiff)).sum(2), 1)
    f["Idn"] = _nanmean((pxSuby / (1 + kdiff / ngd)).sum(2), 1)
    f["InverseVariance"] = _nanmean((pxSuby[..., 1:] / kdiff[1:] ** 2).sum(2), 1)
    f["MaximumProbability"] = _nanmean(P.amax((2, 3)), 1)
    f["SumAverage"] = _nanmean((ksum * pxAddy).sum(2), 1)
    f["SumEntropy"] = _nanmean(_entropy(pxAddy, 2), 1)
    f["SumSquares"] = _nanmean((P * (i - ux) ** 2).sum((2, 3)), 1)
    # MCC: Q = Σ_k P[i,k] P[j,k] / (px[i] py[k]); sqrt of its second largest eigenvalue (non-symmetric
    # matrix, complex eigenvalues as numpy.linalg.eigvals returns them; the real part of the mean).
    Q = torch.einsum("naik,najk->naij", P / (px * py + EPS), P)
    Qn = torch.nan_to_num(Q, nan=0.0)
    if G >= 2:
        ev = torch.linalg.eigvals(Qn)
        order = torch.argsort(ev.real, dim=-1)
        mcc = torch.sqrt(torch.gather(ev, -1, order[..., -2:-1])[..., 0])
    else:  # one gray level in the whole chunk: MCC is 1 below (n_present < 2)
        mcc = torch.zeros(Q.shape[:2], dtype=torch.complex128, device=dev)
    mcc = torch.where(torch.isnan(Q).any((2, 3)), torch.full_like(mcc, complex(math.nan, 0)), mcc)
    re = mcc.real
    f["MCC"] = torch.where(n_present < 2, torch.ones_like(re[:, 0]), _nanmean(re, 1))
    for k, val in f.items():
        out[:, _COL[f"original_glcm_{k}"]] = val


def _lines(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """[n, h, w] -> [n, lines, L], contiguous: the lines along (dy, dx) as rows, zero-padded."""
    n, h, w = t.shape
    if (dy, dx) == (0, 1):
        return t.contiguous()
    if (dy, dx) == (1, 0):
        return t.transpose(1, 2).contiguous()
    # Diagonals: pad every row with h−1 zeros on both sides; stepping one element more (or less) than
    # a padded row walks down a diagonal, so each column of this sheared view is one line (no gather).
    p = torch.nn.functional.pad(t, (h - 1, h - 1)).contiguous()
    wp = w + 2 * h - 2
    if (dy, dx) == (1, 1):
        sheared = p.as_strided((n, h, w + h - 1), (h * wp, wp + 1, 1), p.storage_offset())
    else:  # (1, -1)
        sheared = p.as_strided((n, h, w + h - 1), (h * wp, wp - 1, 1), p.storage_offset() + h - 1)
    return sheared.transpose(1, 2).contiguous()


def _glrlm(c: _Chunk, out):
    n, G = c.n, c.G
    S, Ph, Wp = c.bins.shape
    A = len(ANGLES)
    L = int(max(c.eh.max(), c.ew.max()))  # no run is longer than its ROI's box (gaps end every run)
    dev, dt = c.bins.device, torch.float64
    G1 = G + 1
    # A pixel's ROI and level in one value, (roi + 1)·(G + 1) + level: 0 outside every ROI (roi −1, level 0).
    code = c.code
    if (n + 1) * G1 <= torch.iinfo(torch.int16).max:  # half the bytes for the line copies and comparisons
        code = code.to(torch.int16)
    keys = []
    # PyRadiomics drops an angle along which no line holds two ROI pixels. A ROI that fills its box
    # (at least 2 × 2, or it would be a NaN row) has such a line along every angle.
    multi = torch.full((n, A), c.filled, dtype=torch.bool, device=dev)
    for a, (dy, dx) in enumerate(ANGLES):
        lb = _lines(code, dy, dx)
        flat = lb.reshape(-1)
        # Every line starts and ends with a zero (the pages' border), so read one after another the
        # lines are a sequence of constant segments: each ends where the value changes, and starts
        # after the previous change. The segments of a ROI's level are its runs.
        change = _change_points(flat)  # i where flat[i] != flat[i + 1]
        level = flat[change[1:]].long()  # (the segment before the first change is the first line's zero)
        length = change[1:] - change[:-1]
        # Counted at [code, angle, length] of a [(n + 1)·(G + 1), A, L] table: the gaps between runs
        # (code 0) and the level-0 column land in entries dropped below, so no select is needed.
        # (a gap between ROIs may be longer than L: clamped, it stays in code 0's block)
        keys.append(level * (A * L) + (length.clamp(max=L) + (a * L - 1)))
        if not c.filled:
            r = torch.div(level, G1, rounding_mode="floor") - 1
            # A line holds two pixels of a ROI if a run is longer than one, or the next run on the same
            # line is of the same ROI (a ROI's runs on a line are consecutive: boxes are disjoint).
            run = level > 0
            r, length = r[run], length[run]
            line = torch.div(change[1:][run], lb.shape[-1], rounding_mode="floor")
            two = length > 1
            two[:-1] |= (line[1:] == line[:-1]) & (r[1:] == r[:-1])
            multi[:, a] = torch.zeros(n, dtype=torch.long, device=dev).index_add_(0, r, two.long()) > 0
    P = torch.bincount(torch.cat(keys), minlength=(n + 1) * G1 * A * L).view(n + 1, G1, A, L)
    P = P[1:, 1:].transpose(1, 2).to(dt)  # [n, A, G, L]
    # An angle along which no line holds more than one ROI pixel ("segmentation is 2D for this angle",
    # cmatrices.c): its runs are zeroed, the angle is then deleted as empty.
    P = P * multi[:, :, None, None]
    ivec = torch.arange(1, G + 1, dtype=dt, device=dev)[:, None]
    jvec = torch.arange(1, L + 1, dtype=dt, device=dev)[None, :]
    Nr = P.sum((2, 3))
    Nr = torch.where(Nr == 0, torch.nan, Nr)
    pr, pg = P.sum(2), P.sum(3)  # [n, A, L], [n, A, G]
    iv, jv = ivec[:, 0], jvec[0]
    f = {
        "ShortRunEmphasis": (pr / jv**2).sum(2) / Nr, "LongRunEmphasis": (pr * jv**2).sum(2) / Nr,
        "GrayLevelNonUniformity": (pg**2).sum(2) / Nr, "GrayLevelNonUniformityNormalized": (pg**2).sum(2) / Nr**2,
        "RunLengthNonUniformity": (pr**2).sum(2) / Nr, "RunLengthNonUniformityNormalized": (pr**2).sum(2) / Nr**2,
        "RunPercentage": Nr / (pr * jv).sum(2),
        "LowGrayLevelRunEmphasis": (pg / iv**2).sum(2) / Nr, "HighGrayLevelRunEmphasis": (pg * iv**2).sum(2) / Nr,
        "ShortRunLowGrayLevelEmphasis": (P / (ivec**2 * jvec**2)).sum((2, 3)) / Nr,
        "ShortRunHighGrayLevelEmphasis": (P * ivec**2 / jvec**2).sum((2, 3)) / Nr,
        "LongRunLowGrayLevelEmphasis": (P * jvec**2 / ivec**2).sum((2, 3)) / Nr,
        "LongRunHighGrayLevelEmphasis": (P * jvec**2 * ivec**2).sum((2, 3)) / Nr,
    }
    pgn, prn = pg / Nr[..., None], pr / Nr[..., None]
    ui = (pgn * iv).sum(2, keepdim=True)
    uj = (prn * jv).sum(2, keepdim=True)
    f["GrayLevelVariance"] = (pgn * (iv - ui) ** 2).sum(2)
    f["RunVariance"] = (prn * (jv - uj) ** 2).sum(2)
    f["RunEntropy"] = _entropy(P / Nr[..., None, None], (2, 3))
    for k, val in f.items():
        out[:, _COL[f"original_glrlm_{k}"]] = _nanmean(val, 1)


def _zones(c: _Chunk) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The GLSZM zones of the pages (8-connected regions of one gray level) as (roi, level, size) per zone."""
    if c.bins.device.type == "cpu" and ZONES_BY_CC3D:
        # cc3d directly on the pages' bins (0 between ROIs is its background), one pass for every level;
        # each zone's ROI and level read from the pages by one scatter. ``label_regions`` + ``regions``
        # do the same for any values and masks, at ~3× the time here (their generality: re-coding the
        # values, int64 labels, page-sized count tables).
        import cc3d

        S, P, Wp = c.bins.shape
        G1 = c.G + 1
        v = c.bins.numpy().astype(np.uint8 if c.G < 256 else np.uint16)
        lab, K = cc3d.connected_components(v.reshape(S * P, Wp), connectivity=8, out_dtype=np.uint32, return_N=True)
        flat = torch.from_numpy(lab.reshape(-1).view(np.int32))  # (K < 2³¹: fewer zones than pixels)
        size = torch.bincount(flat, minlength=K + 1)[1:]  # (torch's: 1.5× numpy's here)
        code = torch.zeros(K + 1, dtype=torch.int32).scatter_(0, flat.long(), c.code.reshape(-1))
        code = code[1:]  # (zone 0, the background, holds code 0)
        return code // G1 - 1, code % G1, size
    zones = regions(label_regions(c.bins, c.inside, 8, canonical=False), c.inside)
    # one pixel per zone gives its ROI and gray level
    return c.roi.reshape(-1)[zones.pixel], c.bins.reshape(-1)[zones.pixel], zones.size


def _glszm(c: _Chunk, out):
    n, G = c.n, c.G
    dev, dt = c.bins.device, torch.float64
    roi, gl, sizes = _zones(c)
    roi, gl, sizes = roi.long(), gl.to(dt), sizes.to(dt)
    Nz = torch.bincount(roi, minlength=n).to(dt)
    Np = c.hist.sum(1).to(dt)
    Nz_s = torch.where(Nz == 0, torch.ones_like(Nz), Nz)
    Np_s = torch.where(Np == 0, torch.ones_like(Np), Np)

    def per_roi(values):
        return torch.zeros(n, dtype=dt, device=dev).index_add_(0, roi, values)

    # counts per (roi, gray level) and per (roi, size): the marginals pg and ps
    G1 = G + 1
    pg = torch.zeros(n * G1, dtype=dt, device=dev).index_add_(0, roi * G1 + gl.long(), torch.ones_like(gl)).view(n, G1)
    smax = int(sizes.max()) + 1 if len(sizes) else 1
    key_s = roi * smax + sizes.long()
    us, cs = torch.unique(key_s, return_counts=True)
    ps_roi, ps_size, ps_cnt = us // smax, (us % smax).to(dt), cs.to(dt)
    key_gs = (roi * G1 + gl.long()) * smax + sizes.long()
    ugs, cgs = torch.unique(key_gs, return_counts=True)
    gs_roi = ugs // (G1 * smax)
    iv = torch.arange(G1, dtype=dt, device=dev)

    def ps_sum(values):
        return torch.zeros(n, dtype=dt, device=dev).index_add_(0, ps_roi, values)

    f = {
        "SmallAreaEmphasis": per_roi(1 / sizes**2) / Nz_s, "LargeAreaEmphasis": per_roi(sizes**2) / Nz_s,
        "GrayLevelNonUniformity": (pg**2).sum(1) / Nz_s, "GrayLevelNonUniformityNormalized": (pg**2).sum(1) / Nz_s**2,
        "SizeZoneNonUniformity": ps_sum(ps_cnt**2) / Nz_s, "SizeZoneNonUniformityNormalized": ps_sum(ps_cnt**2) / Nz_s**2,
        "ZonePercentage": Nz_s / Np_s,
        "LowGrayLevelZoneEmphasis": per_roi(1 / gl**2) / Nz_s, "HighGrayLevelZoneEmphasis": per_roi(gl**2) / Nz_s,
        "SmallAreaLowGrayLevelEmphasis": per_roi(1 / (gl**2 * sizes**2)) / Nz_s,
        "SmallAreaHighGrayLevelEmphasis": per_roi(gl**2 / sizes**2) / Nz_s,
        "LargeAreaLowGrayLevelEmphasis": per_roi(sizes**2 / gl**2) / Nz_s,
        "LargeAreaHighGrayLevelEmphasis": per_roi(gl**2 * sizes**2) / Nz_s,
    }
    pgn = pg / Nz_s[:, None]
    ui = (pgn * iv).sum(1, keepdim=True)
    f["GrayLevelVariance"] = (pgn * (iv - ui) ** 2).sum(1)
    psn = ps_cnt / Nz_s[ps_roi]
    uj = ps_sum(psn * ps_size)
    f["ZoneVariance"] = ps_sum(psn * (ps_size - uj[ps_roi]) ** 2)
    p = cgs.to(dt) / Nz_s[gs_roi]
    f["ZoneEntropy"] = torch.zeros(n, dtype=dt, device=dev).index_add_(0, gs_roi, -(p * torch.log2(p + EPS)))
    for k, val in f.items():
        out[:, _COL[f"original_glszm_{k}"]] = val


def _gldm_ngtdm(c: _Chunk, out):
    n, G = c.n, c.G
    dev, dt = c.bins.device, torch.float64
    p16 = c.bins.to(torch.int16)  # small ints: exact, and less memory traffic; 0 = outside every ROI
    b16 = _at(p16, 0, 0)
    # Counters as uint8, fed with the comparisons' bools viewed as uint8 (no conversion pass).
    equal = torch.zeros(b16.shape, dtype=torch.uint8, device=dev)  # dependence − 1 (alpha = 0)
    count = torch.zeros(b16.shape, dtype=torch.uint8, device=dev)  # neighbours in the ROI
    total = torch.zeros_like(b16)  # sum of their levels
    in8 = c.inside.view(torch.uint8)
    for dy, dx in NEIGHBOURS:
        nb = _at(p16, dy, dx)
        equal += (nb == b16).view(torch.uint8)
        count += _at(in8, dy, dx)  # (a neighbour in a ROI: inside, no comparison pass)
        total += nb
    # GLDM: P[roi, gray level, dependence 1..9]; pixels outside the ROI go to the trash bin
    D = len(NEIGHBOURS) + 1
    # (roi + 1, level) in one value, 0 for a pixel outside every ROI (roi −1, level 0): counted in
    # entries dropped below (no select)
    G1 = G + 1
    level = _at(c.code, 0, 0)
    size = (n + 1) * G1 * D
    P = _count_lanes(level * D + _lane_offsets(level.shape[-1], size, dev) + equal, size).view(n + 1, G1, D)
    P = P[1:, 1:].to(dt)  # [n, G, D]
    iv = torch.arange(1, G + 1, dtype=dt, device=dev)[:, None]
    jv = torch.arange(1, D + 1, dtype=dt, device=dev)[None, :]
    pd, pg = P.sum(1), P.sum(2)
    Nz = pd.sum(1)
    Nz = torch.where(Nz == 0, torch.ones_like(Nz), Nz)
    i1, j1 = iv[:, 0], jv[0]
    f = {
        "SmallDependenceEmphasis": (pd / j1**2).sum(1) / Nz, "LargeDependenceEmphasis": (pd * j1**2).sum(1) / Nz,
        "GrayLevelNonUniformity": (pg**2).sum(1) / Nz, "DependenceNonUniformity": (pd**2).sum(1) / Nz,
        "DependenceNonUniformityNormalized": (pd**2).sum(1) / Nz**2,
        "LowGrayLevelEmphasis": (pg / i1**2).sum(1) / Nz, "HighGrayLevelEmphasis": (pg * i1**2).sum(1) / Nz,
        "SmallDependenceLowGrayLevelEmphasis": (P / (iv**2 * jv**2)).sum((1, 2)) / Nz,
        "SmallDependenceHighGrayLevelEmphasis": (P * iv**2 / jv**2).sum((1, 2)) / Nz,
        "LargeDependenceLowGrayLevelEmphasis": (P * jv**2 / iv**2).sum((1, 2)) / Nz,
        "LargeDependenceHighGrayLevelEmphasis": (P * jv**2 * iv**2).sum((1, 2)) / Nz,
        "DependenceEntropy": _entropy(P / Nz[:, None, None], (1, 2)),
    }
    pgn, pdn = pg / Nz[:, None], pd / Nz[:, None]
    f["GrayLevelVariance"] = (pgn * (i1 - (pgn * i1).sum(1, keepdim=True)) ** 2).sum(1)
    f["DependenceVariance"] = (pdn * (j1 - (pdn * j1).sum(1, keepdim=True)) ** 2).sum(1)
    for k, val in f.items():
        out[:, _COL[f"original_gldm_{k}"]] = val

    # NGTDM: n_i (pixels of level i) and s_i (Σ |i - mean of neighbours in the ROI|; 0 without neighbours)
    # |i − total/count| as |i·count − total| / count: exact small integers until the one division
    # (two float64 passes instead of seven); no neighbour gives 0 / 1.
    diff = (b16 * count - total).abs().to(dt) / count.clamp_min(1).to(dt)
    ni = P.sum(2)
    size = (n + 1) * G1
    si = _count_lanes(level + _lane_offsets(level.shape[-1], size, dev), size, diff).view(n + 1, G1)[1:, 1:]
    Nvp = ni.sum(1)
    p = ni / Nvp[:, None]
    present = ni > 0
    Ngp = present.sum(1).to(dt)
    i = torch.arange(1, G + 1, dtype=dt, device=dev)
    both = present[:, :, None] & present[:, None, :]
    psi = (p * si).sum(1)
    coarse = torch.where(psi != 0, 1 / torch.where(psi != 0, psi, 1.0), torch.full_like(psi, 1e6))
    div = Ngp * (Ngp - 1)
    contrast = (p[:, :, None] * p[:, None, :] * (i[:, None] - i[None, :]) ** 2).sum((1, 2)) * si.sum(1) / Nvp
    contrast = torch.where(div != 0, contrast / torch.where(div != 0, div, 1.0), torch.zeros_like(contrast))
    ipi = i * p
    absdiff = torch.where(both, (ipi[:, :, None] - ipi[:, None, :]).abs(), 0.0).sum((1, 2))
    busy = torch.where(absdiff != 0, psi / torch.where(absdiff != 0, absdiff, 1.0), torch.zeros_like(psi))
    pisi = p * si
    num = torch.where(both, pisi[:, :, None] + pisi[:, None, :], 0.0)
    den = p[:, :, None] + p[:, None, :]
    den = torch.where(den == 0, torch.ones_like(den), den)
    complexity = ((i[:, None] - i[None, :]).abs() * num / den).sum((1, 2)) / Nvp
    strength = torch.where(both, (p[:, :, None] + p[:, None, :]) * (i[:, None] - i[None, :]) ** 2, 0.0).sum((1, 2))
    ssum = si.sum(1)
    strength = torch.where(ssum != 0, strength / torch.where(ssum != 0, ssum, 1.0), torch.zeros_like(strength))
    for k, val in {"Busyness": busy, "Coarseness": coarse, "Complexity": complexity, "Contrast": contrast,
                   "Strength": strength}.items():
        out[:, _COL[f"original_ngtdm_{k}"]] = val


def _shape(c: _Chunk, out):
    dt = torch.float64
    # Coordinate moments from per-row and per-column counts (exact integers in float64).
    dev = c.roi.device
    h, w = c.per_row.shape[1], c.per_col.shape[1]
    ys = torch.arange(h, dtype=dt, device=dev)
    xs = torch.arange(w, dtype=dt, device=dev)
    per_row, x_row, x2_col = c.per_row, c.x_row, c.per_col
    Np = per_row.sum(1)
    my, mx = (per_row * ys).sum(1) / Np, (x2_col * xs).sum(1) / Np
    cyy = (per_row * ys**2).sum(1) / Np - my**2
    cxx = (x2_col * xs**2).sum(1) / Np - mx**2
    cxy = (x_row * ys).sum(1) / Np - mx * my
    cov = torch.stack([torch.stack([cyy, cxy], -1), torch.stack([cxy, cxx], -1)], -2)
    ev = torch.linalg.eigvalsh(cov)  # ascending; the z eigenvalue of a single slice is 0
    ev = torch.where((ev < 0) & (ev > -1e-10), torch.zeros_like(ev), ev)
    lo, hi = ev[:, 0], ev[:, 1]
    zero = torch.zeros_like(lo)
    f = {
        "MajorAxisLength": torch.sqrt(hi) * 4, "MinorAxisLength": torch.sqrt(lo) * 4, "LeastAxisLength": zero,
        "Elongation": torch.sqrt(lo / hi), "Flatness": zero, "VoxelVolume": Np,
    }
    for k, val in f.items():
        out[:, _COL[f"original_shape_{k}"]] = val


# ----------------------------------------------------------------------------------------- mesh shape


@functools.lru_cache(maxsize=None)
def _pattern_tables(device: str) -> torch.Tensor:
    """Per 2×2 in-plane pattern q (bit 2·dy + dx): [area, volume constant, y and x volume coefficients].

    The single slice sits in the middle layer of PyRadiomics' padded 3-slice volume, so each 2×2
    window of the padded slice is shared by two cubes: the one below (the slice is its top layer) and
    the one above. A cube at origin p contributes sign·(V0 + p·N)/6 to the volume (the triple products
    of PyRadiomics' absolute vertex coordinates, expanded); summing both cubes per pattern makes every
    window one look-up in a 16-row table.
    """
    vl = torch.tensor(VERT_LIST, dtype=torch.float64)
    tri = {}
    for cfg, row in enumerate(TRI_TABLE):
        area = v0 = 0.0
        nv = torch.zeros(3, dtype=torch.float64)
        for t in range(5):
            if row[3 * t] < 0:
                break
            a, b, c = vl[row[3 * t]], vl[row[3 * t + 1]], vl[row[3 * t + 2]]
            v0 += float(torch.dot(torch.linalg.cross(a, b), c))
            nv += torch.linalg.cross(a, b) + torch.linalg.cross(b, c) + torch.linalg.cross(c, a)
            area += 0.5 * float(torch.linalg.norm(torch.linalg.cross(a - c, b - c)))
        tri[cfg] = (area, v0, nv)
    table = torch.zeros(4, 16, dtype=torch.float64)
    for q in range(16):
        for z in (0, 1):  # cube below the slice (its top layer is the slice), cube above
            idx = sum(1 << a for a, (dz, dy, dx) in enumerate(GRID_ANGLES) if dz == 1 - z and (q >> (2 * dy + dx)) & 1)
            cfg, sign = (255 - idx, -1.0) if idx >= 128 else (idx, 1.0)  # PyRadiomics' flip of configs >= 128
            area, v0, nv = tri[cfg]
            table[0, q] += area
            table[1, q] += sign * (v0 + z * float(nv[0]))
            table[2, q] += sign * float(nv[1])
            table[3, q] += sign * float(nv[2])
    return table.to(device)


def _mesh_area_volume(c: _Chunk):
    """Surface area and mesh volume of PyRadiomics' marching cubes over each single-slice mask."""
    n, (S, P, Wp) = c.n, c.roi.shape
    dev = c.roi.device
    roi = c.roi
    mu = c.inside.view(torch.uint8)
    # Window (y, x) of the pages covers rows y, y+1 and columns x, x+1; the gaps between boxes make
    # every window that holds ROI pixels hold pixels of one ROI only, the largest of its four labels.
    q = (mu[:, :-1, :-1] | (mu[:, :-1, 1:] << 1) | (mu[:, 1:, :-1] << 2) | (mu[:, 1:, 1:] << 3)).to(torch.int32)
    wr = torch.maximum(torch.maximum(roi[:, :-1, :-1], roi[:, :-1, 1:]), torch.maximum(roi[:, 1:, :-1], roi[:, 1:, 1:]))
    wr += 1  # windows without a ROI pixel: 0, counted in a first block that is dropped (no select)
    # Pattern histograms per page row and per page column give the count, Σy and Σx of each pattern per ROI.
    size = (n + 1) * P * 16
    ky = (wr * P + torch.arange(P - 1, device=dev, dtype=torch.int32)[:, None]) * 16 + q + _lane_offsets(Wp - 1, size, dev)
    by_row = _count_lanes(ky, size)
    by_row = by_row[P * 16:].view(n, P, 16).double()
    kx = (wr * Wp + torch.arange(Wp - 1, device=dev, dtype=torch.int32)) * 16 + q  # (columns differ: no chains)
    by_col = torch.bincount(kx.reshape(-1), minlength=(n + 1) * Wp * 16)
    by_col = by_col[Wp * 16:].view(n, Wp, 16).double()
    count = by_row.sum(1)
    # Cube origins in the coordinates of the ROI's box padded by one (what PyRadiomics' volume sees).
    sy = (by_row * torch.arange(P, dtype=torch.float64, device=dev)[:, None]).sum(1) - count * (c.py - 1)[:, None]
    sx = (by_col * torch.arange(Wp, dtype=torch.float64, device=dev)[:, None]).sum(1) - count * (c.px - 1)[:, None]
    t = _pattern_tables(str(dev))
    return count @ t[0], (count @ t[1] + sy @ t[2] + sx @ t[3]) / 6


def _edge_extremes(c: _Chunk):
    """Per ROI, the extremes of its rows and columns, from its edge pixels only. Returns for rows
    (lo, hi [n, h]: min and max x of the pixels of each row; hl, hh [n, h + 1]: of the pixels where
    in/out flips across each half row y − ½) and the same for columns (x and y swapped); ±inf where
    there is none."""
    n, (S, P, Wp) = c.n, c.roi.shape
    inside = c.inside
    here = _at(inside, 0, 0)  # ROI pixels never touch a page edge: the interior holds them all
    left, right = here & ~_at(inside, 0, -1), here & ~_at(inside, 0, 1)
    up, down = here & ~_at(inside, -1, 0), here & ~_at(inside, 1, 0)
    e = _flatnonzero((left | right | up | down).reshape(-1))
    left, right, up, down = (t.reshape(-1)[e] for t in (left, right, up, down))
    s_, rest = torch.div(e, (P - 2) * (Wp - 2), rounding_mode="floor"), e % ((P - 2) * (Wp - 2))
    y, x = torch.div(rest, Wp - 2, rounding_mode="floor") + 1, rest % (Wp - 2) + 1
    r = c.roi[s_, y, x].long()
    ly, lx = y - c.py[r], x - c.px[r]
    h, w = int(c.eh.max()), int(c.ew.max())
    f32 = torch.float32

    def ext(size, sel_key_val, reduce):
        t = torch.full((n * size,), torch.inf if reduce == "amin" else -torch.inf, dtype=f32, device=e.device)
        for sel, key, val in sel_key_val:
            t.scatter_reduce_(0, key[sel], val[sel].to(f32), reduce)
        return t.view(n, size)

    rows = (ext(h, [(left, r * h + ly, lx)], "amin"), ext(h, [(right, r * h + ly, lx)], "amax"),
            ext(h + 1, [(up, r * (h + 1) + ly, lx), (down, r * (h + 1) + ly + 1, lx)], "amin"),
            ext(h + 1, [(up, r * (h + 1) + ly, lx), (down, r * (h + 1) + ly + 1, lx)], "amax"))
    cols = (ext(w, [(up, r * w + lx, ly)], "amin"), ext(w, [(down, r * w + lx, ly)], "amax"),
            ext(w + 1, [(left, r * (w + 1) + lx, ly), (right, r * (w + 1) + lx + 1, ly)], "amin"),
            ext(w + 1, [(left, r * (w + 1) + lx, ly), (right, r * (w + 1) + lx + 1, ly)], "amax"))
    return rows, cols


def _rows(lo, hi, hl, hh):
    """Row extremes of the two vertex sets, as (row y, min x, max x) per row (±inf when a row is empty).

    A: pixel centres (the mesh vertices at z = ±0.5). B: in-plane edge midpoints (z = 0): on pixel rows
    half a pixel beyond the row's extremes, on half rows y − 0.5 the columns where in/out flips.
    Every convex-hull vertex of a grid set is the leftmost or rightmost point of its row.
    """
    n, h = lo.shape
    ys = torch.arange(h, dtype=torch.float32, device=lo.device).expand(n, h)
    hy = (torch.arange(h + 1, dtype=torch.float32, device=lo.device) - 0.5).expand(n, h + 1)
    A = (ys, lo, hi)
    B = (torch.cat([ys, hy], 1), torch.cat([lo - 0.5, hl], 1), torch.cat([hi + 0.5, hh], 1))
    return A, B, hi - lo, hh - hl


def _hull_candidates(rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Row extremes (y, lo, hi) -> the points that can be convex-hull vertices, [n, K] (y, x), NaN-padded.

    A row's leftmost point is a hull vertex only if it is strictly left of every row above it or of
    every row below it (otherwise it lies right of a chord between two hull points); likewise for the
    rightmost. For a box this keeps 4 points of hundreds, which makes the O(K²) diameter search cheap.
    """
    by_y = torch.argsort(rows[0][0])  # the same rows for every ROI; B's pixel and half rows interleave
    y, lo, hi = (t[:, by_y] for t in rows)

    def beyond(v, reduce):  # v strictly beyond every earlier row, or every later row
        inf = torch.full_like(v[:, :1], torch.inf if reduce is torch.cummin else -torch.inf)
        before = torch.cat([inf, reduce(v, 1).values[:, :-1]], 1)
        after = torch.cat([inf, reduce(v.flip(1), 1).values[:, :-1]], 1).flip(1)
        if reduce is torch.cummin:
            return torch.isfinite(v) & ((v < before) | (v < after))
        return torch.isfinite(v) & ((v > before) | (v > after))

    keep = torch.cat([beyond(lo, torch.cummin), beyond(hi, torch.cummax)], 1)
    ys, xs = torch.cat([y, y], 1), torch.cat([lo, hi], 1)
    k = max(int(keep.sum(1).max()), 1)
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :k]
    kept = keep.gather(1, order)
    nan = torch.tensor(torch.nan, dtype=xs.dtype, device=xs.device)
    return torch.where(kept, ys.gather(1, order), nan), torch.where(kept, xs.gather(1, order), nan)


def _max_d2(P, Q) -> torch.Tensor:
    """Max squared distance between a point of P and one of Q (NaN-padded point lists). float32 is
    exact here: coordinates are multiples of 0.5 below 2^11, so every square and sum is a multiple of
    0.25 below 2^24."""
    (py, px), (qy, qx) = P, Q
    d = (py[:, :, None] - qy[:, None, :]) ** 2 + (px[:, :, None] - qx[:, None, :]) ** 2
    return torch.nan_to_num(d, nan=-1.0).amax((1, 2)).clamp_min(0).double()


def _mesh_shape(c: _Chunk, out: torch.Tensor) -> None:
    area, volume = _mesh_area_volume(c)
    by_row, by_col = _edge_extremes(c)
    A, B, span_pix, span_half = _rows(*by_row)
    # Vertices: pixel centres at z = ±0.5 (top and bottom faces), edge midpoints at z = 0.
    A, B = _hull_candidates(A), _hull_candidates(B)
    dAA, dBB, dAB = _max_d2(A, A), _max_d2(B, B), _max_d2(A, B)
    slice_ = torch.sqrt(torch.maximum(dAA, dBB))
    d3 = torch.sqrt(torch.stack([dAA + 1, dBB, dAB + 0.25], 1).amax(1))

    def same_line(span_pix, span_half):
        # same row: pixel pairs across z (d² + 1), midpoints (d + 1)², mixed ((d + ½)² + ¼); and half rows.
        d = torch.where(torch.isfinite(span_pix), span_pix, -torch.inf)
        full = torch.where(torch.isfinite(d), (d + 1) ** 2, -torch.inf).amax(1)
        half = torch.where(torch.isfinite(span_half), span_half**2, -torch.inf).amax(1)
        return torch.sqrt(torch.maximum(full, half).clamp_min(0))

    column = same_line(span_pix, span_half)
    _, _, span_pix_t, span_half_t = _rows(*by_col)
    row = same_line(span_pix_t, span_half_t)
    f = {
        "MeshVolume": volume, "SurfaceArea": area, "SurfaceVolumeRatio": area / volume,
        "Sphericity": (36 * math.pi * volume**2) ** (1.0 / 3.0) / area,
        "Maximum3DDiameter": d3, "Maximum2DDiameterSlice": slice_,
        "Maximum2DDiameterColumn": column, "Maximum2DDiameterRow": row,
    }
    for k, val in f.items():
        out[:, _COL[f"original_shape_{k}"]] = val


# ----------------------------------------------------------------------------------------- entry point


def _extract_chunk(c: _Chunk) -> torch.Tensor:
    """A packed chunk (every ROI one PyRadiomics accepts) -> [n, 107]."""
    n, G, dev = c.n, c.G, c.bins.device
    present = c.hist > 0
    ng = (present * torch.arange(1, G + 1, device=dev)).amax(1)  # the ROI's highest level
    n_present = present.sum(1)
    out = torch.full((n, len(FEATURE_NAMES)), torch.nan, dtype=torch.float64, device=dev)
    _firstorder(c, out)
    _glcm(c, ng, n_present, out)
    _glrlm(c, out)
    _gldm_ngtdm(c, out)
    _shape(c, out)
    _mesh_shape(c, out)
    _glszm(c, out)
    return out


@torch.no_grad()
def extract(images, masks=None, boxes=None, bin_width: float = 25.0, chunk: int = 128) -> torch.Tensor:
    """[B, H, W] images (0–255 gray values) with [B, H, W] masks or [B, 4] XYXY boxes -> float64 [B, 107].

    Runs on the device of ``images``. Columns follow ``FEATURE_NAMES``; see the module docstring for
    PyRadiomics' conventions, the NaN rows, the features not yet in the engine, and the memory bound.
    """
    images = torch.as_tensor(images)
    if (masks is None) == (boxes is None):
        raise RadiomicsInputError("give exactly one of masks or boxes")
    if images.ndim != 3:
        raise RadiomicsInputError(f"images must be [B, H, W], got {tuple(images.shape)}")
    H, W = images.shape[1:]
    if masks is None:  # boxes are their own bounding boxes: no [B, H, W] mask is ever built
        x0, y0, x1, y1 = _clip_boxes(torch.as_tensor(boxes, device=images.device), H, W)
        if len(x0) != len(images):
            raise RadiomicsInputError(f"{len(x0)} boxes for {len(images)} images")
        lo, hi = _check(images, None)
        eh, ew = y1 - y0, x1 - x0
        whole = (eh == H) & (ew == W)
    else:
        masks = torch.as_tensor(masks, device=images.device)
        lo, hi = _check(images, masks)
        masks = masks.bool()
        y0, x0, eh, ew = _bounding_boxes(masks)
        whole = masks.flatten(1).all(1)
    if images.numel() and hi - lo < bin_width:
        warnings.warn(f"the images' gray values span [{lo:.4g}, {hi:.4g}], less than "
                      f"bin_width {bin_width:g}: every ROI falls in one or two gray-level bins and the texture features "
                      "cannot tell regions apart (PyRadiomics' defaults expect 0–255 gray values: scale [0, 1] images "
                      "by 255)", RuntimeWarning, stacklevel=2)
    out = torch.full((len(images), len(FEATURE_NAMES)), torch.nan, dtype=torch.float64, device=images.device)
    # ROIs PyRadiomics refuses stay NaN: fewer than 2 dimensions wider than one pixel (checkMask), or a
    # mask with one value over the whole image ("nothing is segmented").
    ok = ((eh > 1).int() + (ew > 1).int() >= 2) & ~whole
    # Chunks of similar box sizes: pages are as tall as the chunk's tallest box.
    idx = torch.nonzero(ok).squeeze(1)
    idx = idx[torch.argsort((eh * ew)[idx], stable=True)]
    for k in range(0, len(idx), chunk):
        sel = idx[k:k + chunk]
        out[sel] = _extract_chunk(_gather(images, masks, sel, y0[sel], x0[sel], eh[sel], ew[sel], bin_width))
    return out
