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

- mesh shape: PyRadiomics' marching cubes (its own tables, ``mc_tables.py``) over the padded slice,
  one table look-up per cube; the four maximum diameters, which PyRadiomics gets from all O(V²)
  vertex pairs, from row/column extremes (exact: every convex-hull vertex of a grid set is one).

Memory: ROIs are sorted by box size and processed in chunks of ``chunk`` (default 128), each cropped
to the largest bounding box of its chunk; peak memory is about ``chunk × h × w × 200`` bytes for boxes
of h × w (≈1.3 GB for 128 ROIs of 224², whatever the batch size).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..components import label_regions
from .mc_tables import GRID_ANGLES, TRI_TABLE, VERT_LIST
from .reference import FEATURE_NAMES

EPS = float(np.spacing(1))
ANGLES = ((0, 1), (1, 0), (1, 1), (1, -1))  # in-plane (dy, dx), one per direction pair
NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
NOT_IN_ENGINE: tuple[str, ...] = ()  # every feature of FEATURE_NAMES is computed here
_COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


class RadiomicsInputError(ValueError):
    pass


# ----------------------------------------------------------------------------------------- inputs


def boxes_to_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """XYXY pixel boxes (right/bottom exclusive) -> bool masks; boxes are clipped to the image."""
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise RadiomicsInputError(f"boxes must be [B, 4] (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    b = boxes.round().long()
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise RadiomicsInputError("boxes with negative width or height (expected x0 <= x1, y0 <= y1)")
    x0, x1 = b[:, 0].clamp(0, width), b[:, 2].clamp(0, width)
    y0, y1 = b[:, 1].clamp(0, height), b[:, 3].clamp(0, height)
    ys = torch.arange(height, device=b.device)[None, :, None]
    xs = torch.arange(width, device=b.device)[None, None, :]
    return ((ys >= y0[:, None, None]) & (ys < y1[:, None, None]) & (xs >= x0[:, None, None]) & (xs < x1[:, None, None]))


def _check(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 3:
        raise RadiomicsInputError(f"images must be [B, H, W], got {tuple(images.shape)}")
    if masks.shape != images.shape:
        raise RadiomicsInputError(f"masks {tuple(masks.shape)} and images {tuple(images.shape)} differ in shape")
    if torch.isnan(images).any():
        raise RadiomicsInputError("images contain NaN pixels")
    if masks.dtype != torch.bool:
        m = masks.double()
        if not ((m == 0) | (m == 1)).all():
            raise RadiomicsInputError("masks must hold only 0 and 1 (or bool); got other values")


# ----------------------------------------------------------------------------------------- helpers


class _Padded:
    """A tensor padded by one pixel, whose neighbour views cost nothing (no copy per shift)."""

    def __init__(self, t: torch.Tensor, fill):
        self.h, self.w = t.shape[-2:]
        self.p = torch.nn.functional.pad(t, (1, 1, 1, 1), value=fill) if t.dtype != torch.bool else \
            torch.nn.functional.pad(t.to(torch.uint8), (1, 1, 1, 1), value=int(fill)).bool()

    def at(self, dy: int, dx: int) -> torch.Tensor:
        """view[y, x] = t[y + dy, x + dx] (fill outside), for |dy|, |dx| <= 1."""
        return self.p[..., 1 + dy:1 + dy + self.h, 1 + dx:1 + dx + self.w]


def _nanmean(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.nanmean(x, dim=dim)


def _entropy(p: torch.Tensor, dims) -> torch.Tensor:
    return -(p * torch.log2(p + EPS)).sum(dims)


def _crop(images, masks):
    """Crop every ROI to its bounding box, padded to the chunk's largest box (mask False there)."""
    n = images.shape[0]
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
    hh, ww = int((y1 - y0).max()), int((x1 - x0).max())
    ys = (y0[:, None] + torch.arange(hh, device=masks.device)[None]).clamp(max=masks.shape[1] - 1)
    xs = (x0[:, None] + torch.arange(ww, device=masks.device)[None]).clamp(max=masks.shape[2] - 1)
    inside = (torch.arange(hh, device=masks.device)[None] < (y1 - y0)[:, None])[:, :, None] & \
             (torch.arange(ww, device=masks.device)[None] < (x1 - x0)[:, None])[:, None, :]
    bi = torch.arange(n, device=masks.device)[:, None, None]
    img = images[bi, ys[:, :, None], xs[:, None, :]]
    msk = masks[bi, ys[:, :, None], xs[:, None, :]] & inside
    extent = torch.stack([y1 - y0, x1 - x0], 1)
    return img, msk, extent


# ----------------------------------------------------------------------------------------- features


def _firstorder(x: torch.Tensor, m: torch.Tensor, bins: torch.Tensor, G: int, out: torch.Tensor) -> None:
    n = x.shape[0]
    v = torch.where(m, x, torch.nan).reshape(n, -1)
    count = m.reshape(n, -1).sum(1).double()
    q = torch.nanquantile(v, torch.tensor([0.10, 0.25, 0.5, 0.75, 0.90], dtype=v.dtype, device=v.device), dim=1)
    mean = torch.nansum(v, 1) / count
    dev = v - mean[:, None]
    m2 = torch.nanmean(dev**2, 1)
    m3 = torch.nanmean(dev**3, 1)
    m4 = torch.nanmean(dev**4, 1)
    m2s = torch.where(m2 == 0, torch.ones_like(m2), m2)
    energy = torch.nansum(v**2, 1)
    mn, mx = torch.where(m.reshape(n, -1), x.reshape(n, -1), torch.inf).amin(1), \
        torch.where(m.reshape(n, -1), x.reshape(n, -1), -torch.inf).amax(1)
    inner = torch.where((v >= q[0][:, None]) & (v <= q[4][:, None]), v, torch.nan)
    inner_mean = torch.nanmean(inner, 1)
    hist = torch.zeros(n, G + 1, dtype=x.dtype, device=x.device)
    hist.scatter_add_(1, torch.where(m, bins, 0).reshape(n, -1), m.reshape(n, -1).to(x.dtype))
    p = hist[:, 1:] / count[:, None]
    f = {
        "10Percentile": q[0], "90Percentile": q[4], "Energy": energy, "Entropy": _entropy(p, 1),
        "InterquartileRange": q[3] - q[1], "Kurtosis": m4 / m2s**2, "Maximum": mx,
        "MeanAbsoluteDeviation": torch.nanmean(dev.abs(), 1), "Mean": mean, "Median": q[2], "Minimum": mn,
        "Range": mx - mn, "RobustMeanAbsoluteDeviation": torch.nanmean((inner - inner_mean[:, None]).abs(), 1),
        "RootMeanSquared": torch.sqrt(energy / count), "Skewness": m3 / m2s**1.5, "TotalEnergy": energy,
        "Uniformity": (p**2).sum(1), "Variance": m2,
    }
    for k, val in f.items():
        out[:, _COL[f"original_firstorder_{k}"]] = val


def _glcm(bins, m, G, ng, n_present, out):
    n = bins.shape[0]
    A = len(ANGLES)
    dev, dt = bins.device, torch.float64
    pb, pm = _Padded(bins, 0), _Padded(m, False)
    base = (torch.arange(n, device=dev)[:, None, None] * A * G + (bins - 1)) * G - 1
    keys = []
    for a, (dy, dx) in enumerate(ANGLES):
        ok = m & pm.at(dy, dx)
        keys.append((base + a * G * G + pb.at(dy, dx))[ok])
    P = torch.bincount(torch.cat(keys), minlength=n * A * G * G).to(dt).view(n, A, G, G)
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


def _line_index(h: int, w: int, dy: int, dx: int, device) -> torch.Tensor:
    """Pixel indices of every line along (dy, dx), [n_lines, L], -1 padded."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    if (dy, dx) == (0, 1):
        key, pos = ys, xs
    elif (dy, dx) == (1, 0):
        key, pos = xs, ys
    elif (dy, dx) == (1, 1):
        key, pos = xs - ys + (h - 1), ys
    else:  # (1, -1)
        key, pos = xs + ys, ys
    n_lines = int(key.max()) + 1
    L = max(h, w)
    idx = torch.full((n_lines, L), -1, dtype=torch.long)
    idx[key.reshape(-1), pos.reshape(-1)] = (ys * w + xs).reshape(-1)
    return idx.to(device)


def _glrlm(bins, m, G, out):
    n, h, w = bins.shape
    A = len(ANGLES)
    L = max(h, w)
    dev, dt = bins.device, torch.float64
    P = torch.zeros(n * A * G * L, dtype=dt, device=dev)
    multi = torch.zeros(n, A, dtype=torch.bool, device=dev)
    fb, fm = bins.to(torch.int16).reshape(n, -1), m.reshape(n, -1)  # int16: 4x less memory traffic
    for a, (dy, dx) in enumerate(ANGLES):
        if (dy, dx) == (0, 1):  # rows are lines already
            lb, lm = fb.view(n, h, w), m
        elif (dy, dx) == (1, 0):  # columns
            lb, lm = fb.view(n, h, w).transpose(1, 2).contiguous(), m.transpose(1, 2).contiguous()
        else:  # diagonals: gather them into rows
            idx = _line_index(h, w, dy, dx, dev)
            valid = idx >= 0
            g = torch.where(valid, idx, 0)
            lb = fb[:, g]  # [n, lines, L]
            lm = fm[:, g] & valid
        prev_b = torch.nn.functional.pad(lb[..., :-1], (1, 0), value=0)
        prev_m = torch.nn.functional.pad(lm[..., :-1], (1, 0), value=False)
        start = lm & ~(prev_m & (prev_b == lb))
        run_id = torch.cumsum(start.reshape(-1), 0, dtype=torch.int32) - 1  # global, in reading order
        rid = run_id.reshape(lm.shape)[lm].long()
        n_runs = int(start.sum())
        length = torch.bincount(rid, minlength=n_runs)
        roi = torch.arange(n, device=dev)[:, None, None].expand_as(lm)[start]
        gl = lb[start].long()
        key = ((roi * A + a) * G + (gl - 1)) * L + (length - 1)
        P.index_add_(0, key, torch.ones(n_runs, dtype=dt, device=dev))
        multi[:, a] = (lm.sum(-1) > 1).any(-1)
    P = P.view(n, A, G, L)
    # PyRadiomics drops an angle along which no line holds more than one ROI pixel ("segmentation is
    # 2D for this angle", cmatrices.c): its runs are zeroed, the angle is then deleted as empty.
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


def _glszm(bins, m, G, out):
    n = bins.shape[0]
    dev, dt = bins.device, torch.float64
    label = label_regions(bins, m, connectivity=8)  # GLSZM zones: 8-connected, equal gray level
    zone = label[m]
    zid, inverse, counts = torch.unique(zone, return_inverse=True, return_counts=True)
    sizes = counts.to(dt)
    # one representative pixel per zone gives its ROI and gray level
    pix = torch.nonzero(m.reshape(-1)).squeeze(1)
    rep = torch.zeros(len(zid), dtype=torch.long, device=dev).scatter_(0, inverse, pix)
    hw = m.shape[1] * m.shape[2]
    roi = rep // hw
    gl = bins.reshape(-1)[rep].to(dt)
    Nz = torch.bincount(roi, minlength=n).to(dt)
    Np = m.reshape(n, -1).sum(1).to(dt)
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


def _gldm_ngtdm(bins, m, G, out):
    n = bins.shape[0]
    dev, dt = bins.device, torch.float64
    b16 = bins.to(torch.int16)  # small ints: exact, and 4x less memory traffic than int64
    pb, pm = _Padded(b16, 0), _Padded(m, False)
    dep = torch.zeros_like(b16)
    count = torch.zeros_like(b16)
    total = torch.zeros_like(b16)
    for dy, dx in NEIGHBOURS:
        nb_b, ok = pb.at(dy, dx), pm.at(dy, dx) & m
        dep += ok & (nb_b == b16)  # alpha = 0
        count += ok
        total += nb_b * ok
    roi = torch.arange(n, device=dev)[:, None, None].expand_as(bins)[m]
    gl = bins[m]
    # GLDM: P[roi, gray level, dependence]; dependence values 1..9 (count of equal neighbours + 1)
    D = len(NEIGHBOURS) + 1
    P = torch.bincount((roi * G + (gl - 1)) * D + dep[m].long(), minlength=n * G * D).to(dt).view(n, G, D)
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
    cm, tm = count[m].to(dt), total[m].to(dt)
    diff_m = torch.where(cm > 0, (gl.to(dt) - tm / cm.clamp_min(1)).abs(), 0.0)
    ni = torch.zeros(n * G, dtype=dt, device=dev).index_add_(0, roi * G + (gl - 1), torch.ones(len(gl), dtype=dt, device=dev)).view(n, G)
    si = torch.zeros(n * G, dtype=dt, device=dev).index_add_(0, roi * G + (gl - 1), diff_m).view(n, G)
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


def _shape(m, out):
    dt = torch.float64
    ys, xs = torch.meshgrid(torch.arange(m.shape[1], device=m.device, dtype=dt),
                            torch.arange(m.shape[2], device=m.device, dtype=dt), indexing="ij")
    w = m.to(dt)
    Np = w.sum((1, 2))
    my, mx = (w * ys).sum((1, 2)) / Np, (w * xs).sum((1, 2)) / Np
    dy, dx = ys - my[:, None, None], xs - mx[:, None, None]
    cyy, cxx, cxy = (w * dy * dy).sum((1, 2)) / Np, (w * dx * dx).sum((1, 2)) / Np, (w * dx * dy).sum((1, 2)) / Np
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


def _mc_tables(device):
    """Per configuration (0..127): triangle area, Σ det(a, b, c) and Σ (a×b + b×c + c×a) of its triangles.

    A cube at position p contributes sign·(V0 + p·N)/6 to the volume: the triple products of
    PyRadiomics' absolute vertex coordinates, expanded so every cube is one table look-up.
    """
    vl = torch.tensor(VERT_LIST, dtype=torch.float64)
    area = torch.zeros(128, dtype=torch.float64)
    v0 = torch.zeros(128, dtype=torch.float64)
    nv = torch.zeros(128, 3, dtype=torch.float64)
    for cfg, row in enumerate(TRI_TABLE):
        for t in range(5):
            if row[3 * t] < 0:
                break
            a, b, c = vl[row[3 * t]], vl[row[3 * t + 1]], vl[row[3 * t + 2]]
            v0[cfg] += torch.dot(torch.linalg.cross(a, b), c)
            nv[cfg] += torch.linalg.cross(a, b) + torch.linalg.cross(b, c) + torch.linalg.cross(c, a)
            area[cfg] += 0.5 * torch.linalg.norm(torch.linalg.cross(a - c, b - c))
    return area.to(device), v0.to(device), nv.to(device)


def _mesh_area_volume(m: torch.Tensor):
    """Surface area and mesh volume of PyRadiomics' marching cubes over the single-slice mask."""
    n, h, w = m.shape
    vol = torch.zeros(n, 3, h + 2, w + 2, dtype=torch.uint8, device=m.device)
    vol[:, 1, 1:-1, 1:-1] = m  # the slice, padded by one voxel in every direction (as PyRadiomics)
    Z, H, W = 2, h + 1, w + 1  # cubes
    idx = torch.zeros(n, Z, H, W, dtype=torch.uint8, device=m.device)
    for a, (dz, dy, dx) in enumerate(GRID_ANGLES):
        idx += vol[:, dz:dz + Z, dy:dy + H, dx:dx + W] << a
    flip = idx >= 128
    cfg = torch.where(flip, 255 - idx, idx).long()
    sign = 1.0 - 2.0 * flip.to(torch.float64)
    area_t, v0_t, n_t = _mc_tables(m.device)
    # Per (ROI, configuration): the number of cubes, Σ sign and Σ sign·p (p = cube origin), with
    # bincounts; area and volume are then small products with the tables (no per-cube gather).
    key = (torch.arange(n, device=m.device)[:, None, None, None] * 128 + cfg).reshape(-1)
    size = n * 128
    count = torch.bincount(key, minlength=size).view(n, 128).to(torch.float64)
    s = sign.reshape(-1)
    ssum = torch.bincount(key, weights=s, minlength=size).view(n, 128)
    zz, yy, xx = torch.meshgrid(*(torch.arange(k, dtype=torch.float64, device=m.device) for k in (Z, H, W)), indexing="ij")
    sp = [torch.bincount(key, weights=(s.view(n, Z, H, W) * c).reshape(-1), minlength=size).view(n, 128)
          for c in (zz, yy, xx)]
    area = count @ area_t
    volume = (ssum @ v0_t + sum(sp[d] @ n_t[:, d] for d in range(3))) / 6
    return area, volume


def _extremes(m: torch.Tensor, dtype=torch.float64):
    """Per row: (min x, max x) of ROI pixels, +inf/-inf where the row is empty. [n, h] each."""
    xs = torch.arange(m.shape[2], dtype=dtype, device=m.device)
    lo = torch.where(m, xs, torch.inf).amin(2)
    hi = torch.where(m, xs, -torch.inf).amax(2)
    return lo, hi


def _rows(m: torch.Tensor):
    """Row extremes of the two vertex sets, as (row y, min x, max x) per row (±inf when a row is empty).

    A: pixel centres (the mesh vertices at z = ±0.5). B: in-plane edge midpoints (z = 0): on pixel rows
    half a pixel beyond the row's extremes, on half rows y + 0.5 the columns where in/out flips.
    Every convex-hull vertex of a grid set is the leftmost or rightmost point of its row.
    """
    n, h, w = m.shape
    ys = torch.arange(h, dtype=torch.float32, device=m.device).expand(n, h)
    lo, hi = _extremes(m, torch.float32)
    padded = torch.nn.functional.pad(m, (0, 0, 1, 1))
    hl, hh = _extremes(padded[:, 1:] ^ padded[:, :-1], torch.float32)  # [n, h+1]
    hy = (torch.arange(h + 1, dtype=torch.float32, device=m.device) - 0.5).expand(n, h + 1)
    A = (ys, lo, hi)
    B = (torch.cat([ys, hy], 1), torch.cat([lo - 0.5, hl], 1), torch.cat([hi + 0.5, hh], 1))
    return A, B, hi - lo, hh - hl


def _max_d2(P, Q) -> torch.Tensor:
    """Max squared distance between a point of row set P and one of row set Q: per row pair, the
    farther of the two cross pairings of the row extremes. float32 is exact here: coordinates are
    multiples of 0.5 below 2^11, so every square and sum is a multiple of 0.25 below 2^24."""
    (py, plo, phi), (qy, qlo, qhi) = P, Q
    dx = torch.maximum(qhi[:, None, :] - plo[:, :, None], phi[:, :, None] - qlo[:, None, :])
    d = (py[:, :, None] - qy[:, None, :]) ** 2 + dx**2
    d = torch.nan_to_num(d, nan=-1.0, posinf=-1.0, neginf=-1.0)  # empty rows give ±inf / NaN
    return d.amax((1, 2)).clamp_min(0).double()


def _mesh_shape(m: torch.Tensor, out: torch.Tensor) -> None:
    area, volume = _mesh_area_volume(m)
    A, B, span_pix, span_half = _rows(m)
    # Vertices: pixel centres at z = ±0.5 (top and bottom faces), edge midpoints at z = 0.
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
    _, _, span_pix_t, span_half_t = _rows(m.transpose(1, 2))
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


def _extract_chunk(images: torch.Tensor, masks: torch.Tensor, bin_width: float) -> torch.Tensor:
    n = images.shape[0]
    out = torch.full((n, len(FEATURE_NAMES)), torch.nan, dtype=torch.float64, device=images.device)
    img, m, extent = _crop(images.to(torch.float64), masks)
    ok = (extent > 1).sum(1) >= 2  # PyRadiomics' checkMask: >= 2 dimensions wider than one pixel
    ok &= ~masks.reshape(n, -1).all(1)  # PyRadiomics refuses a mask with one value ("nothing is segmented")
    if not ok.any():
        return out
    img, m = img[ok], m[ok]
    lo = torch.where(m, img, torch.inf).amin((1, 2))
    low = lo - torch.remainder(lo, bin_width)  # numpy's min - min % W (floor semantics)
    bins = torch.floor((img - low[:, None, None]) / bin_width).long() + 1
    bins = torch.where(m, bins, torch.zeros_like(bins))
    G = int(bins.max())
    ng = bins.amax((1, 2))
    present = torch.zeros(len(bins), G + 1, dtype=torch.bool, device=bins.device)
    present.scatter_(1, bins.reshape(len(bins), -1), True)
    n_present = present[:, 1:].sum(1)
    sub = torch.full((len(bins), len(FEATURE_NAMES)), torch.nan, dtype=torch.float64, device=images.device)
    _firstorder(img, m, bins, G, sub)
    _glcm(bins, m, G, ng, n_present, sub)
    _glrlm(bins, m, G, sub)
    _glszm(bins, m, G, sub)
    _gldm_ngtdm(bins, m, G, sub)
    _shape(m, sub)
    _mesh_shape(m, sub)
    out[ok] = sub
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
    if masks is None:
        masks = boxes_to_masks(torch.as_tensor(boxes, device=images.device), images.shape[1], images.shape[2])
    masks = torch.as_tensor(masks, device=images.device)
    _check(images.double() if not images.is_floating_point() else images, masks)
    masks = masks.bool()
    out = torch.full((len(images), len(FEATURE_NAMES)), torch.nan, dtype=torch.float64, device=images.device)
    # Chunks of similar box sizes: each ROI is padded to its chunk's largest box, so sorting by size
    # first halves the work on mixed sizes.
    rows, cols = masks.any(2), masks.any(1)
    area = (rows.sum(1) * cols.sum(1)).cpu()
    order = torch.argsort(area, stable=True).to(images.device)
    for k in range(0, len(images), chunk):
        sel = order[k:k + chunk]
        out[sel] = _extract_chunk(images[sel], masks[sel], bin_width)
    return out
