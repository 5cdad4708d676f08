"""Lung-mask twin: Montgomery (per-lung masks) and Shenzhen (one mask per image) layouts.

The masks written are exactly the real lung shapes the images were drawn with. ``release`` (option):
``separate`` (default) writes ``Montgomery/`` and ``Shenzhen/``; ``combined`` writes the "Chest X-ray Masks
and Labels" layout: ``Lung Segmentation/CXR_png/`` with both sites' images, ``Lung Segmentation/masks/``
(Montgomery's as ``MCUCXR_xxxx_y.png``, both lungs in one file; Shenzhen's as ``CHNCXR_xxxx_y_mask.png``)
and, as in that set, Shenzhen images without a mask (~15%: 96 of its 662).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import TwinSpec, run_parallel
from .render import ImageJob, draw_and_save

MONTGOMERY_SHARE = 0.3  # the releases hold 138 Montgomery and 566 Shenzhen masks


SHENZHEN_WITHOUT_MASK = 96 / 662  # the combined set: 566 masks for 662 Shenzhen images


def write(root: Path, spec: TwinSpec, workers: int | None) -> None:
    rng = np.random.default_rng([spec.seed, 41])
    combined = spec.options.get("release", "separate") == "combined"
    bare = np.random.default_rng([spec.seed, 44])  # the combined set's Shenzhen images without a mask
    n_m = max(1, int(round(spec.n * MONTGOMERY_SHARE))) if spec.n > 1 else 1
    jobs = []
    for k in range(spec.n):
        tb = int(rng.random() < 0.45)
        # Tuberculosis: upper-zone patchy consolidation, drawn at plausible places by the renderer.
        findings = ["Consolidation", "Infiltration"] if tb else []
        if k < n_m:
            name = f"MCUCXR_{k + 1:04d}_{tb}.png"
            h = int(round(spec.size * rng.uniform(1.05, 1.25)))
            if combined:
                masks = {"both": str(root / "Lung Segmentation/masks" / name)}
                path = root / "Lung Segmentation/CXR_png" / name
            else:
                masks = {
                    "left": str(root / "Montgomery/ManualMask/leftMask" / name),
                    "right": str(root / "Montgomery/ManualMask/rightMask" / name),
                }
                path = root / "Montgomery/CXR_png" / name
        else:
            name = f"CHNCXR_{k - n_m + 1:04d}_{tb}.png"
            h = int(round(spec.size * rng.uniform(0.95, 1.05)))
            if combined:
                masked = bare.random() >= SHENZHEN_WITHOUT_MASK
                masks = {"both": str(root / "Lung Segmentation/masks" / name.replace(".png", "_mask.png"))} if masked else {}
                path = root / "Lung Segmentation/CXR_png" / name
            else:
                masks = {"both": str(root / "Shenzhen/mask" / name.replace(".png", "_mask.png"))}
                path = root / "Shenzhen/CXR_png" / name
        jobs.append(ImageJob(
            path=str(path), height=h, width=spec.size, findings=findings,
            anatomy_seed=(spec.seed, 42, k), image_seed=(spec.seed, 43, k),
            difficulty=spec.difficulty, lung_mask_paths=masks,
        ))
    run_parallel(draw_and_save, jobs, workers, "lungs twin")
