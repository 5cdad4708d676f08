"""Findings of NIH ChestX-ray14, CheXpert, COVIDx and SIIM, each with its own look and place.

A finding is drawn inside a box (pixels of the output image): the real annotation where one exists
(NIH boxes, SIIM masks), otherwise a plausible box from ``plausible_box``. ``amp`` is its contrast,
scaled by the twin's difficulty knob. Cardiomegaly and an enlarged cardiomediastinum change the
anatomy itself (``anatomy.sample_chest``), not the pixels afterwards.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from .anatomy import Chest, smooth_noise

Box = tuple[float, float, float, float]

#: Every name the label files use, mapped to the renderer that draws it.
ALIASES = {
    "Infiltrate": "Infiltration",
    "Pleural Effusion": "Effusion",
    "Pleural Other": "Pleural_Thickening",
    "Pleural_Thickening": "Pleural_Thickening",
    "Lung Opacity": "Lung_Opacity",
    "Lung Lesion": "Lung_Lesion",
    "Support Devices": "Support_Devices",
    "Enlarged Cardiomediastinum": "Enlarged_Cardiomediastinum",
    "COVID-19": "COVID-19",
    "pneumonia": "Pneumonia",
}
#: Findings that are drawn by the anatomy (a bigger heart or mediastinum), not by a renderer.
GEOMETRIC = {"Cardiomegaly", "Enlarged_Cardiomediastinum"}


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def contrast(difficulty: float) -> float:
    """Lesion contrast multiplier: 1.7 at difficulty 0, 0.9 at the default 0.5, 0.1 at 1."""
    return 0.1 + 1.6 * (1.0 - difficulty)


# ---------------------------------------------------------------------------------------------
# geometry helpers


def _window(img: np.ndarray, box: Box, pad: float = 0.0):
    """Slices of ``box`` (grown by ``pad`` of its size) clipped to the image, and local grids."""
    h, w = img.shape
    x0, y0, x1, y1 = box
    px, py = (x1 - x0) * pad, (y1 - y0) * pad
    xs = slice(int(max(0, np.floor(x0 - px))), int(min(w, np.ceil(x1 + px))))
    ys = slice(int(max(0, np.floor(y0 - py))), int(min(h, np.ceil(y1 + py))))
    yy, xx = np.mgrid[ys, xs].astype(np.float32)
    return (ys, xs), xx, yy


def _ellipse(xx, yy, box: Box, edge: float = 0.2, scale: float = 1.0) -> np.ndarray:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx = np.maximum(1.0, (x1 - x0) / 2 * scale)  # scale may be an array (lobulated outlines)
    ry = np.maximum(1.0, (y1 - y0) / 2 * scale)
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return np.clip((1 - r) / edge, 0, 1)


def _patchy(rng, shape, scale: float, cover: float) -> np.ndarray:
    """Blotchy texture covering about ``cover`` of the window (pneumonia, infiltrates, GGO)."""
    n = smooth_noise(rng, shape[0], shape[1], max(2.0, scale))
    thr = np.quantile(n, 1 - cover)
    return np.clip((n - thr) / (n.std() * 0.6 + 1e-6), 0, 1)


def _lateral_sign(chest: Chest, box: Box) -> float:
    """-1 when the box's lateral side is image-left, +1 when image-right."""
    mid = (chest.lung_box[0] + chest.lung_box[2]) / 2
    return -1.0 if (box[0] + box[2]) / 2 < mid else 1.0


def side_boxes(chest: Chest) -> dict[int, Box]:
    out = {}
    for side in (1, 2):
        ys, xs = np.nonzero(chest.lungs == side)
        if len(xs):
            out[side] = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    return out


# ---------------------------------------------------------------------------------------------
# renderers: (img, markings, chest, box, rng, amp) -> None, drawing in place


def nodule(img, mk, chest, box, rng, amp):
    win, xx, yy = _window(img, box, 0.1)
    img[win] += amp * 1.1 * _ellipse(xx, yy, box, edge=0.35, scale=0.8)


def mass(img, mk, chest, box, rng, amp):
    win, xx, yy = _window(img, box, 0.1)
    x0, y0, x1, y1 = box
    ang = np.arctan2(yy - (y0 + y1) / 2, xx - (x0 + x1) / 2)
    lobes = 1 + 0.08 * np.sin(3 * ang + rng.uniform(0, 6)) + 0.05 * np.sin(5 * ang + rng.uniform(0, 6))
    img[win] += amp * 1.2 * _ellipse(xx, yy, box, edge=0.25, scale=0.85 * lobes)


def infiltration(img, mk, chest, box, rng, amp, cover=0.45, strength=0.75):
    win, xx, yy = _window(img, box)
    env = _ellipse(xx, yy, box, edge=0.5)
    patch = _patchy(rng, xx.shape, (box[2] - box[0]) / 6, cover)
    img[win] += amp * strength * env * patch * (0.3 + 0.7 * chest.lung_mask()[win])


def pneumonia(img, mk, chest, box, rng, amp):
    infiltration(img, mk, chest, box, rng, amp, cover=0.65, strength=1.0)


def consolidation(img, mk, chest, box, rng, amp):
    win, xx, yy = _window(img, box)
    env = _ellipse(xx, yy, box, edge=0.4)
    dense = np.clip(0.6 + 0.6 * smooth_noise(rng, *xx.shape, (box[2] - box[0]) / 5), 0, 1)
    # Air bronchograms: dark branching lines where a fine noise field crosses zero.
    bronch = np.exp(-(smooth_noise(rng, *xx.shape, (box[2] - box[0]) / 10) ** 2) / 0.02)
    img[win] += amp * 1.2 * env * dense * (1 - 0.5 * bronch)


def lung_opacity(img, mk, chest, box, rng, amp):
    (consolidation if rng.random() < 0.5 else pneumonia)(img, mk, chest, box, rng, amp)


def lung_lesion(img, mk, chest, box, rng, amp):
    (nodule if (box[2] - box[0]) < chest.width * 0.1 else mass)(img, mk, chest, box, rng, amp)


def atelectasis(img, mk, chest, box, rng, amp):
    """Plate-like (linear) or wedge-shaped collapse."""
    win, xx, yy = _window(img, box)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if rng.random() < 0.5:  # plate: a tilted band
        theta = rng.uniform(-0.35, 0.35)
        d = np.abs(-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta))
        shape = np.clip(1 - d / max(1.5, (y1 - y0) * 0.18), 0, 1) * _ellipse(xx, yy, box, edge=0.3)
    else:  # wedge: apex medial, base on the pleura
        lat = _lateral_sign(chest, box)
        t = np.clip(((xx - cx) * lat / max(1.0, x1 - x0)) + 0.5, 0, 1)  # 0 medial -> 1 lateral
        shape = (np.abs(yy - cy) < t * (y1 - y0) / 2).astype(np.float32) * t**0.5
        shape = ndimage.gaussian_filter(shape, 1.0)
    img[win] += amp * 1.1 * shape


def effusion(img, mk, chest, box, rng, amp):
    """Basal fluid with a meniscus climbing laterally; blunts the costophrenic angle."""
    win, xx, yy = _window(img, box)
    x0, y0, x1, y1 = box
    lat = _lateral_sign(chest, box)
    t = np.clip(((xx - (x0 + x1) / 2) * lat) / max(1.0, x1 - x0) + 0.5, 0, 1)  # 0 medial, 1 lateral
    level = y1 - (y1 - y0) * (0.45 + 0.55 * t**2)
    fluid = np.clip((yy - level) / max(2.0, (y1 - y0) * 0.08), 0, 1)
    img[win] += amp * 1.4 * fluid * np.clip(0.5 + chest.lung_mask()[win], 0, 1)


def _pneumothorax_region(img, mk, region: np.ndarray, win, amp):
    """Lucency without lung markings inside ``region`` and a thin bright visceral pleural line."""
    img[win] -= amp * 0.9 * region + mk[win] * region
    edge = region - ndimage.grey_erosion(region, size=(3, 3))
    img[win] += amp * 1.6 * ndimage.gaussian_filter(np.clip(edge, 0, 1), 0.6)


def pneumothorax(img, mk, chest, box, rng, amp):
    win, xx, yy = _window(img, box)
    x0, y0, x1, y1 = box
    lat = _lateral_sign(chest, box)
    # A crescent hugging the lateral/apical chest wall: the box's ellipse pushed laterally.
    shift = lat * (x1 - x0) * 0.25
    region = _ellipse(xx - shift, yy, box, edge=0.1, scale=1.0)
    region *= _ellipse(xx, yy, box, edge=0.1, scale=1.05) > 0
    _pneumothorax_region(img, mk, region.astype(np.float32), win, amp)


def pneumothorax_in_mask(img, mk, mask: np.ndarray, amp: float):
    """SIIM: the real decoded mask is the pneumothorax."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    win = (slice(max(0, ys.min() - 2), ys.max() + 3), slice(max(0, xs.min() - 2), xs.max() + 3))
    _pneumothorax_region(img, mk, mask[win].astype(np.float32), win, amp)


def edema(img, mk, chest, box, rng, amp):
    """Bilateral perihilar (bat-wing) haze."""
    win, xx, yy = _window(img, box)
    x0, y0, x1, y1 = box
    cx, bw = (x0 + x1) / 2, x1 - x0
    wings = sum(_ellipse(xx, yy, (c - bw * 0.2, y0, c + bw * 0.2, y1), edge=0.8) for c in (cx - bw * 0.22, cx + bw * 0.22))
    haze = 0.6 + 0.4 * _patchy(rng, xx.shape, bw / 10, 0.6)
    img[win] += amp * 0.9 * np.clip(wings, 0, 1) * haze * chest.lung_mask()[win]


def emphysema(img, mk, chest, box, rng, amp):
    """Hyperlucent lungs with sparse markings."""
    lung = ndimage.gaussian_filter(chest.lung_mask().astype(np.float32), 2)
    img -= amp * 0.7 * lung + 0.6 * mk * lung


def fibrosis(img, mk, chest, box, rng, amp):
    """Peripheral reticulation: fine bright lines."""
    win, xx, yy = _window(img, box)
    net = np.exp(-(smooth_noise(rng, *xx.shape, max(2.0, chest.width / 100)) ** 2) / 0.05)
    img[win] += amp * 1.6 * net * _ellipse(xx, yy, box, edge=0.5) * chest.lung_mask()[win]


def pleural_thickening(img, mk, chest, box, rng, amp):
    """A smooth band along the pleura inside the box."""
    win, xx, yy = _window(img, box)
    lung = chest.lung_mask()[win]
    depth = ndimage.distance_transform_edt(lung)
    band = np.clip(1 - depth / max(2.0, chest.width * 0.035), 0, 1) * lung
    img[win] += amp * 1.6 * ndimage.gaussian_filter(band.astype(np.float32), 1.0)


def hernia(img, mk, chest, box, rng, amp):
    """Hiatal hernia: a retrocardiac round density with an air-fluid level."""
    win, xx, yy = _window(img, box)
    sac = _ellipse(xx, yy, box, edge=0.2, scale=0.9)
    air = (yy < (box[1] + box[3]) / 2 - (box[3] - box[1]) * 0.1) * sac
    img[win] += amp * 1.2 * sac - amp * 1.8 * air


def fracture(img, mk, chest, box, rng, amp):
    """A rib step: a dark cortical break and a bright callus."""
    win, xx, yy = _window(img, box)
    x0, y0, x1, y1 = box
    cx = (x0 + x1) / 2
    gap = np.clip(1 - np.abs(xx - cx) / max(1.0, (x1 - x0) * 0.06), 0, 1)
    callus = _ellipse(xx, yy, box, edge=0.5, scale=0.7)
    img[win] += amp * (1.0 * callus - 1.2 * gap * (callus > 0))


def support_devices(img, mk, chest, box, rng, amp):
    """Tubes, lines and a pacemaker: thin very bright curves (contrast not scaled by difficulty)."""
    h, w = img.shape
    mid = (chest.lung_box[0] + chest.lung_box[2]) / 2
    t = np.linspace(0, 1, 400)
    curves = [
        (mid + w * 0.01 * np.sin(3 * t), h * (0.0 + 0.42 * t)),  # endotracheal tube to the carina
    ]
    if rng.random() < 0.7:  # central venous line from the subclavian vein to the cava
        side = rng.choice([-1, 1])
        curves.append((mid + side * w * (0.3 - 0.26 * t**0.7), h * (0.1 + 0.3 * t**1.5)))
    if rng.random() < 0.3:  # nasogastric tube past the diaphragm
        curves.append((mid - w * 0.02 + w * 0.08 * t**2, h * (0.0 + 0.95 * t)))
    canvas = np.zeros_like(img)
    for cx, cy in curves:
        xi, yi = np.clip(cx.astype(int), 0, w - 1), np.clip(cy.astype(int), 0, h - 1)
        canvas[yi, xi] = 1.0
    if rng.random() < 0.3:  # pacemaker generator in the upper chest
        px, py = int(mid + rng.choice([-1, 1]) * w * 0.3), int(h * 0.18)
        canvas[py : py + h // 20, px - w // 30 : px + w // 30] = 1.0
    canvas = ndimage.grey_dilation(canvas, size=(max(1, w // 256) + 1,) * 2)
    img += 0.35 * canvas


def covid(img, mk, chest, box, rng, amp):
    """COVID-19: bilateral, peripheral, lower-zone ground glass."""
    for side, (x0, y0, x1, y1) in side_boxes(chest).items():
        lat = -1 if side == 1 else 1
        bw, bh = x1 - x0, y1 - y0
        gx0 = x0 if lat < 0 else x1 - bw * 0.55
        sub = (gx0, y0 + bh * 0.4, gx0 + bw * 0.55, y1)
        infiltration(img, mk, chest, sub, rng, amp, cover=0.6, strength=1.1)


RENDERERS: dict[str, Callable] = {
    "Atelectasis": atelectasis,
    "Consolidation": consolidation,
    "Edema": edema,
    "Effusion": effusion,
    "Emphysema": emphysema,
    "Fibrosis": fibrosis,
    "Fracture": fracture,
    "Hernia": hernia,
    "Infiltration": infiltration,
    "Lung_Lesion": lung_lesion,
    "Lung_Opacity": lung_opacity,
    "Mass": mass,
    "Nodule": nodule,
    "Pleural_Thickening": pleural_thickening,
    "Pneumonia": pneumonia,
    "Pneumothorax": pneumothorax,
    "Support_Devices": support_devices,
    "COVID-19": covid,
}
KNOWN = set(RENDERERS) | GEOMETRIC


def plausible_box(finding: str, chest: Chest, rng: np.random.Generator) -> Box:
    """Where a finding without an annotation is drawn, in pixels."""
    finding = canonical(finding)
    w = chest.width
    sides = side_boxes(chest)
    side = int(rng.choice(list(sides))) if sides else 1
    x0, y0, x1, y1 = sides.get(side, chest.lung_box)
    bw, bh = x1 - x0, y1 - y0
    lat = -1 if side == 1 else 1

    def at(fx, fy, sw, sh):  # a box of size (sw, sh)·lung side at fractional position (fx, fy)
        cx, cy = x0 + fx * bw, y0 + fy * bh
        return (cx - sw * bw / 2, cy - sh * bh / 2, cx + sw * bw / 2, cy + sh * bh / 2)

    def inside_lung(size):  # a square box centred on a random lung pixel
        ys, xs = np.nonzero(chest.lungs == side)
        if len(xs) == 0:
            return at(0.5, 0.5, size / bw, size / bh)
        k = rng.integers(len(xs))
        return (xs[k] - size / 2, ys[k] - size / 2, xs[k] + size / 2, ys[k] + size / 2)

    lateral_fx = 0.3 if lat < 0 else 0.7
    if finding in GEOMETRIC:
        return chest.heart_box()
    if finding == "Nodule":
        return inside_lung(w * rng.uniform(0.03, 0.07))
    if finding in ("Mass", "Lung_Lesion"):
        return inside_lung(w * rng.uniform(0.1, 0.22))
    if finding == "Effusion":
        return at(0.5, 0.8, 1.05, rng.uniform(0.3, 0.5))
    if finding == "Pneumothorax":
        return at(lateral_fx, rng.uniform(0.2, 0.4), 0.5, rng.uniform(0.35, 0.6))
    if finding == "Atelectasis":
        return at(rng.uniform(0.35, 0.65), rng.uniform(0.6, 0.8), rng.uniform(0.3, 0.5), rng.uniform(0.15, 0.3))
    if finding in ("Infiltration", "Pneumonia", "Consolidation", "Lung_Opacity"):
        return at(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.75), rng.uniform(0.35, 0.6), rng.uniform(0.25, 0.45))
    if finding == "Edema":
        lx0, ly0, lx1, ly1 = chest.lung_box
        return (lx0 + 0.1 * (lx1 - lx0), ly0 + 0.2 * (ly1 - ly0), lx1 - 0.1 * (lx1 - lx0), ly0 + 0.75 * (ly1 - ly0))
    if finding == "Fibrosis":
        return at(0.5, rng.uniform(0.25, 0.5), 1.0, 0.6)
    if finding == "Pleural_Thickening":
        return at(0.5, 0.15, 1.0, 0.35)
    if finding == "Hernia":
        cx, cy = chest.heart_center[0] - w * 0.03, chest.heart_center[1] + chest.heart_half[1] * 0.3
        r = w * rng.uniform(0.05, 0.08)
        return (cx - r, cy - r, cx + r, cy + r)
    if finding == "Fracture":
        return at(lateral_fx, rng.uniform(0.2, 0.7), 0.15, 0.06)
    return chest.lung_box  # Emphysema, Support_Devices, COVID-19: whole-chest findings


def draw(finding: str, img, markings, chest: Chest, box: Box | None, rng, difficulty: float) -> Box:
    """Draw one finding; returns the box it was drawn in."""
    name = canonical(finding)
    if name not in KNOWN:
        raise KeyError(f"the twin has no renderer for finding {finding!r}; known: {sorted(KNOWN)}")
    box = box if box is not None else plausible_box(name, chest, rng)
    if name in RENDERERS:
        amp = 0.1 * contrast(difficulty) * rng.uniform(0.6, 1.3)
        RENDERERS[name](img, markings, chest, box, rng, amp)
    return box
