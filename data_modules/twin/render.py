"""One twin image: anatomy of a patient, the findings of an image, and the film of a site."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from PIL import Image

from ..rle import decode_union
from . import findings as F
from .anatomy import Chest, burn_markers, burn_shortcut_marker, finish, render_anatomy, sample_chest
from .io import save_image


@dataclass
class Site:
    """Acquisition drift of one hospital/source (COVIDx shift tests); identity by default."""

    gamma: float = 1.0
    contrast: float = 1.0
    noise: float = 0.012
    offset: float = 0.0
    markers: list[str] | None = None


@dataclass
class ImageJob:
    """Everything a worker needs to draw and write one image (picklable)."""

    path: str  # absolute output path
    height: int
    width: int
    findings: list[str]  # drawn with certainty
    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    uncertain: list[str] = field(default_factory=list)  # each drawn with probability 0.5
    mask: tuple[str, ...] | None = None  # SIIM: real RLE strings of the pneumothorax (1024² space)
    anatomy_seed: tuple[int, ...] = (0,)
    image_seed: tuple[int, ...] = (0,)
    difficulty: float = 0.5
    site: Site = field(default_factory=Site)
    fmt: str = "png"  # png | png-rgba | jpg | dcm
    dicom_uid: str | None = None
    lung_mask_paths: dict[str, str] = field(default_factory=dict)  # lungs twin: "left"/"right"/"both"
    shortcut_marker: bool = False  # chexpert twin's ``shortcut`` option: burn its label into this image
    #: Findings whose box is returned even when the image lacks them: where the finding *would* have been
    #: drawn (``plausible_box`` on this chest, from a generator of its own, so no pixel changes). The NIH
    #: twin writes both kinds to twin_boxes.csv: an oracle box for every (image, class), whose geometry
    #: does not tell a present finding from an absent one (RGT's oracle-box experiment).
    box_classes: tuple[str, ...] = ()


#: Anatomy is smooth: it is drawn on a grid of at most this many pixels and upsampled, which makes a
#: 1024² image ~4x cheaper. Findings, lung masks and film grain are drawn at full resolution.
ANATOMY_MAX_SIDE = 384


def _anatomy_at_work_size(rng: np.random.Generator, chest: Chest) -> tuple[np.ndarray, np.ndarray]:
    h, w = chest.height, chest.width
    f = ANATOMY_MAX_SIDE / max(h, w)
    if f >= 1:
        return render_anatomy(rng, chest)
    hs, ws = max(8, round(h * f)), max(8, round(w * f))
    fx, fy = ws / w, hs / h
    small = replace(
        chest,
        height=hs,
        width=ws,
        lungs=np.asarray(Image.fromarray(chest.lungs).resize((ws, hs), Image.NEAREST)),
        lung_box=tuple(v * (fx if i % 2 == 0 else fy) for i, v in enumerate(chest.lung_box)),
        heart_center=(chest.heart_center[0] * fx, chest.heart_center[1] * fy),
        heart_half=(chest.heart_half[0] * fx, chest.heart_half[1] * fy),
        mediastinum_half_width=chest.mediastinum_half_width * fx,
        markers=[],
    )
    img, markings = render_anatomy(rng, small)
    up = [np.asarray(Image.fromarray(a, mode="F").resize((w, h), Image.BILINEAR)) for a in (img, markings)]
    return up[0].copy(), up[1].copy()


def sample_ctr(rng: np.random.Generator, cardiomegaly: bool, difficulty: float) -> float:
    """Cardiothoracic ratio; the classes overlap more as the difficulty grows.

    At the default 0.5: normal 0.38–0.56, cardiomegaly 0.44–0.62 (the clinical cut is 0.5), so even a
    perfect CTR reader scores an AUC near 0.8, not 1.0.
    """
    overlap = 0.12 * difficulty
    return rng.uniform(0.50 - overlap, 0.62) if cardiomegaly else rng.uniform(0.38, 0.50 + overlap)


def render(job: ImageJob) -> tuple[np.ndarray, Chest, dict[str, list]]:
    """Draw the image of ``job``: uint8 [H, W], its chest geometry, and the boxes drawn per finding."""
    anat = np.random.default_rng(list(job.anatomy_seed))
    rng = np.random.default_rng(list(job.image_seed))
    todo = [F.canonical(f) for f in job.findings]
    todo += [F.canonical(f) for f in job.uncertain if rng.random() < 0.5]
    heart_boxes = job.boxes.get("Cardiomegaly")
    chest = sample_chest(
        anat,
        job.height,
        job.width,
        ctr=sample_ctr(rng, "Cardiomegaly" in todo, job.difficulty),
        heart_box=heart_boxes[0] if heart_boxes else None,
        mediastinum_scale=1.7 if "Enlarged_Cardiomediastinum" in todo else 1.0,
    )
    img, markings = _anatomy_at_work_size(anat, chest)
    drawn: dict[str, list] = {}
    for name in todo:
        given = job.boxes.get(name) or [None]
        for box in given:
            drawn.setdefault(name, []).append(F.draw(name, img, markings, chest, box, rng, job.difficulty))
    if job.mask:
        amp = 0.1 * F.contrast(job.difficulty) * rng.uniform(0.8, 1.3)
        full = decode_union(list(job.mask), 1024, 1024)
        mask = np.asarray(Image.fromarray(full).resize((job.width, job.height), Image.NEAREST)) > 0
        F.pneumothorax_in_mask(img, markings, mask, amp)
    # The film has its own generator, so adding a finding changes only the finding's pixels.
    film = np.random.default_rng([*job.image_seed, 7919])
    burn_markers(film, img, chest, job.site.markers)
    if job.shortcut_marker:  # its own generator: an image without it keeps every pixel it had
        burn_shortcut_marker(np.random.default_rng([*job.image_seed, 15485863]), img, chest)
    s = job.site
    return finish(film, img, s.gamma, s.contrast, s.noise, s.offset), chest, drawn


#: Montgomery names masks by the patient's side; the patient's left lung is on the image's right.
_LUNG_LABELS = {"right": (1,), "left": (2,), "both": (1, 2)}


def absent_boxes(job: ImageJob, chest: Chest, drawn: dict[str, list]) -> dict[str, list]:
    """Where each of ``job.box_classes`` the image lacks would have been drawn (see ``ImageJob``)."""
    rng = np.random.default_rng([*job.image_seed, 49157])
    names = [F.canonical(c) for c in job.box_classes]
    return {name: [F.plausible_box(name, chest, rng)] for name in names if name not in drawn}


def draw_and_save(job: ImageJob) -> tuple[dict[str, list], dict[str, list]]:
    """Worker entry point: render, write the image (and lung masks), return the boxes drawn per finding
    and those where the image's absent ``box_classes`` would have been drawn."""
    img, chest, drawn = render(job)
    save_image(job.path, img, job.fmt, job.dicom_uid)
    for key, path in job.lung_mask_paths.items():
        mask = np.isin(chest.lungs, _LUNG_LABELS[key]).astype(np.uint8) * 255
        save_image(path, mask, "png")
    return drawn, absent_boxes(job, chest, drawn)
