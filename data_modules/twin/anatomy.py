"""A synthetic frontal (or lateral) chest radiograph: anatomy only, no findings.

Intensities follow the radiograph convention (bright = attenuating: bone, soft tissue, fluid; dark =
air). Everything is drawn in float32 on the output grid with vectorised numpy, so a 512² image costs a
few tens of milliseconds on one core. Lung fields take the shapes of the real lung masks shipped in
torchxrayvision (``sources.lung_bank``); the rest is parametric, with per-patient jitter drawn from a
generator seeded by the patient so that follow-up images of one patient share their anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from .sources import lung_bank


@dataclass
class Chest:
    """Geometry of one rendered chest, in pixels of the output image (H, W)."""

    height: int
    width: int
    lungs: np.ndarray  # uint8 label map: 1 = image-left lung (patient's right), 2 = image-right lung
    lung_box: tuple[float, float, float, float]  # x0, y0, x1, y1 of both lungs
    heart_center: tuple[float, float]
    heart_half: tuple[float, float]  # half-width, half-height of the cardiac silhouette
    mediastinum_half_width: float
    markers: list[tuple[int, int, int, int]] = field(default_factory=list)  # burned-in text boxes
    shortcut: tuple[int, int, int, int] | None = None  # the shortcut label's box (chexpert twin option)

    @property
    def thorax_width(self) -> float:
        return self.lung_box[2] - self.lung_box[0]

    @property
    def cardiothoracic_ratio(self) -> float:
        return 2 * self.heart_half[0] / self.thorax_width

    def heart_box(self) -> tuple[float, float, float, float]:
        (cx, cy), (hw, hh) = self.heart_center, self.heart_half
        return cx - hw, cy - hh, cx + hw, cy + hh

    def lung_mask(self, side: int | None = None) -> np.ndarray:
        return self.lungs > 0 if side is None else self.lungs == side


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x, y


def smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise with a correlation length of ``scale`` pixels.

    Drawn on a coarse grid and upsampled bilinearly, which is ~50× cheaper than blurring full-size
    white noise and looks the same at the scales we use.
    """
    step = max(1.0, scale / 2)
    ch, cw = int(np.ceil(h / step)) + 2, int(np.ceil(w / step)) + 2
    coarse = ndimage.gaussian_filter(rng.standard_normal((ch, cw)).astype(np.float32), 1.0)
    coarse /= coarse.std() + 1e-6
    img = Image.fromarray(coarse, mode="F").resize((int(cw * step), int(ch * step)), Image.BILINEAR)
    return np.asarray(img)[:h, :w]


def fit_lungs(rng: np.random.Generator, h: int, w: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """A real lung-mask pair, resized into ``box`` of an (h, w) canvas."""
    bank = lung_bank()
    pair = bank[rng.integers(len(bank))]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    bw, bh = max(2, x1 - x0), max(2, y1 - y0)
    fitted = np.asarray(Image.fromarray(pair).resize((bw, bh), Image.NEAREST))
    out = np.zeros((h, w), np.uint8)
    ys, xs = slice(max(0, y0), min(h, y0 + bh)), slice(max(0, x0), min(w, x0 + bw))
    out[ys, xs] = fitted[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out


def sample_chest(
    rng: np.random.Generator,
    h: int,
    w: int,
    ctr: float,
    heart_box: tuple[float, float, float, float] | None = None,
    mediastinum_scale: float = 1.0,
) -> Chest:
    """Sample a chest geometry. ``ctr`` is the cardiothoracic ratio (cardiomegaly > 0.5).

    ``heart_box`` (pixels) forces the cardiac silhouette, e.g. onto a real NIH Cardiomegaly box.
    """
    lx0 = w * rng.uniform(0.09, 0.15)
    lx1 = w * rng.uniform(0.85, 0.91)
    ly0 = h * rng.uniform(0.08, 0.15)
    ly1 = h * rng.uniform(0.70, 0.80)
    lungs = fit_lungs(rng, h, w, (lx0, ly0, lx1, ly1))
    if heart_box is not None:
        bx0, by0, bx1, by1 = heart_box
        center = ((bx0 + bx1) / 2, (by0 + by1) / 2)
        half = ((bx1 - bx0) / 2, (by1 - by0) / 2)
    else:
        hw = ctr * (lx1 - lx0) / 2
        center = (w * rng.uniform(0.52, 0.57), ly1 - 0.55 * hw * rng.uniform(0.9, 1.1))
        half = (hw, hw * rng.uniform(0.62, 0.78))
    return Chest(
        height=h,
        width=w,
        lungs=lungs,
        lung_box=(lx0, ly0, lx1, ly1),
        heart_center=center,
        heart_half=half,
        mediastinum_half_width=w * rng.uniform(0.055, 0.075) * mediastinum_scale,
    )


def _soft_ellipse(x, y, cx, cy, rx, ry, edge: float = 0.15) -> np.ndarray:
    r = np.sqrt(((x - cx) / max(rx, 1e-3)) ** 2 + ((y - cy) / max(ry, 1e-3)) ** 2)
    return np.clip((1 + edge - r) / (2 * edge), 0, 1)


def render_anatomy(rng: np.random.Generator, chest: Chest) -> tuple[np.ndarray, np.ndarray]:
    """Draw the chest; returns the image and the lung-marking texture (so findings can erase it)."""
    h, w = chest.height, chest.width
    x, y = _grid(h, w)
    lx0, ly0, lx1, ly1 = chest.lung_box
    mid = (lx0 + lx1) / 2

    # Body: soft tissue envelope with shoulders; air outside.
    body = _soft_ellipse(x, y, mid, h * 0.62, w * rng.uniform(0.47, 0.52), h * 0.75, edge=0.05)
    shoulders = np.clip((y - h * 0.02) / (h * 0.06), 0, 1)
    img = 0.04 + body * shoulders * rng.uniform(0.50, 0.58)

    # Lungs: air, with soft edges (the real masks are binary).
    lung = ndimage.gaussian_filter(chest.lung_mask().astype(np.float32), max(1.0, w / 256))
    heart = _soft_ellipse(x, y, *chest.heart_center, *chest.heart_half, edge=0.08)
    # The mediastinum runs from the neck to the heart; the heart occludes the medial lungs.
    med = np.clip(1 - np.abs(x - mid) / chest.mediastinum_half_width, 0, 1) ** 0.5
    med = med * (y < chest.heart_center[1]) + heart
    med = np.clip(med, 0, 1)
    img -= 0.33 * lung * (1 - 0.85 * med)

    # Lung markings: vessels radiating from the hila, brightest centrally.
    markings = smooth_noise(rng, h, w, w / 90) * 0.5 + smooth_noise(rng, h, w, w / 30) * 0.5
    hila = np.minimum(
        np.hypot(x - (mid - w * 0.12), y - h * 0.42), np.hypot(x - (mid + w * 0.12), y - h * 0.42)
    )
    markings = np.clip(markings, 0, None) * np.exp(-hila / (w * 0.22)) * lung * 0.05
    img += markings

    # Spine: a central band with vertebral bodies, seen through the mediastinum.
    spine_half = w * 0.035
    spine = np.clip(1 - np.abs(x - mid) / spine_half, 0, 1) ** 0.3
    vert = 0.6 + 0.4 * np.cos(2 * np.pi * y / (h * rng.uniform(0.055, 0.065))) ** 2
    img += 0.10 * spine * vert * (y > h * 0.02)

    # Ribs: one periodic field per side along parabolas that fall laterally.
    ribs = np.zeros_like(img)
    for side in (-1, 1):
        dx = (x - mid) * side
        arc = (y - 0.45 * dx**2 / w - 0.12 * dx) / h  # posterior ribs curve down laterally
        phase = np.sqrt(np.clip(arc - 0.02, 0, None)) * rng.uniform(11.5, 13.0)
        band = np.clip(np.cos(2 * np.pi * phase), 0, None) ** 3
        inside = (dx > spine_half) & (dx < (lx1 - lx0) * 0.55) & (arc > 0.04) & (arc < 0.78)
        ribs += band * inside
    img += 0.06 * ndimage.gaussian_filter(ribs, max(0.5, w / 512)) * body

    # Clavicles: two bands from the manubrium outwards and up.
    for side in (-1, 1):
        x0c, y0c = mid + side * w * 0.05, h * 0.14
        x1c, y1c = mid + side * w * 0.33, h * 0.08
        t = np.clip(((x - x0c) * (x1c - x0c) + (y - y0c) * (y1c - y0c)) / ((x1c - x0c) ** 2 + (y1c - y0c) ** 2), 0, 1)
        d = np.hypot(x - (x0c + t * (x1c - x0c)), y - (y0c + t * (y1c - y0c)))
        img += 0.12 * np.clip(1 - d / (h * 0.012), 0, 1)

    # Breast / soft-tissue shadow over the lower lungs, and the diaphragm below them.
    img += 0.04 * np.clip((y - ly1 * 0.8) / (h * 0.2), 0, 1) * body
    return img, markings


def burn_markers(
    rng: np.random.Generator, img: np.ndarray, chest: Chest, texts: list[str] | None = None
) -> None:
    """Burned-in text (laterality, 'PORTABLE', site names) in the corners, outside the thorax.

    These are what the STN paper's spatial transformer learns to crop away.
    """
    h, w = img.shape
    texts = texts or [rng.choice(["R", "L"]), str(rng.choice(["PORTABLE", "AP", "PA", "ERECT", "SUPINE"]))]
    corners = list(rng.permutation(4))
    for text, corner in zip(texts, corners):
        size = max(8, int(h * rng.uniform(0.03, 0.05)))
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = font.getbbox(text)
        tw, th = right - left + 2, bottom - top + 2
        if tw >= w * 0.4 or th >= h * 0.1:
            continue
        canvas = Image.new("L", (tw, th))
        ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
        patch = np.asarray(canvas, np.float32) / 255
        mx, my = int(w * 0.02), int(h * 0.015)
        x0 = mx if corner % 2 == 0 else w - mx - tw
        y0 = my if corner < 2 else h - my - th
        region = img[y0 : y0 + th, x0 : x0 + tw]
        region[:] = np.maximum(region, patch * rng.uniform(0.85, 1.0))
        chest.markers.append((x0, y0, x0 + tw, y0 + th))


def burn_shortcut_marker(rng: np.random.Generator, img: np.ndarray, chest: Chest) -> None:
    """A 'PORTABLE' label (white letters on a dark plate) in the strip below the lungs, outside the thorax (the chexpert twin's
    ``shortcut`` option): lettering whose presence the twin ties to the label in train.csv only.

    Below the lung box, not in a corner, so that a square crop of the thorax leaves it out (the square
    of the box's longer side spans at most a few percent of the height beyond the lungs) while the
    corner markers keep their places. Larger than the corner text so that a 64-96 px model sees it.
    """
    h, w = img.shape
    text = "PORTABLE"
    size = max(8, int(h * 0.06))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    tw, th = right - left + 2, bottom - top + 2
    if tw > w * 0.6:  # too narrow an image for the word: its first letters
        text = "PORT"
        left, top, right, bottom = font.getbbox(text)
        tw, th = right - left + 2, bottom - top + 2
    canvas = Image.new("L", (tw, th))
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    patch = np.asarray(canvas, np.float32) / 255
    y_low = max(int(chest.lung_box[3]) + int(0.06 * h), 0)
    y0 = int(rng.uniform(y_low, max(y_low, h - th - int(0.01 * h)) + 1))
    x0 = int(rng.uniform(0.1 * w, max(0.1 * w, 0.9 * w - tw) + 1))
    y0, x0 = min(y0, h - th), min(x0, w - tw)
    region = img[y0 : y0 + th, x0 : x0 + tw]
    patch = patch[: region.shape[0], : region.shape[1]]
    # white letters on a dark plate: below the lungs the film is already bright, so letters alone would
    # barely show at 64-96 px
    region[:] = 0.08 + patch * (rng.uniform(0.9, 1.0) - 0.08)
    chest.shortcut = (x0, y0, x0 + tw, y0 + th)


def finish(rng: np.random.Generator, img: np.ndarray, gamma: float = 1.0, contrast: float = 1.0,
           noise: float = 0.012, offset: float = 0.0) -> np.ndarray:
    """Film response: exposure gradient, noise, site-specific gamma/contrast; returns uint8."""
    h, w = img.shape
    gx, gy = rng.uniform(-0.04, 0.04, 2)
    ramp_x = gx * (np.arange(w, dtype=np.float32) / w - 0.5)
    ramp_y = gy * (np.arange(h, dtype=np.float32) / h - 0.5)
    img = img + ramp_x[None, :] + ramp_y[:, None]
    img = img + noise * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip((img - 0.5) * contrast + 0.5 + offset, 0, 1) ** gamma
    return (img * 255 + 0.5).astype(np.uint8)
