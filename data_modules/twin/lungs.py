"""Lung-mask twin: Montgomery (per-lung masks) and Shenzhen (one mask per image) layouts.

The masks written are exactly the real lung shapes the images were drawn with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import TwinSpec, run_parallel
from .render import ImageJob, draw_and_save

MONTGOMERY_SHARE = 0.3  # the releases hold 138 Montgomery and 566 Shenzhen masks


def write(root: Path, spec: TwinSpec, workers: int | None) -> None:
    rng = np.random.default_rng([spec.seed, 41])
    n_m = max(1, int(round(spec.n * MONTGOMERY_SHARE))) if spec.n > 1 else 1
    jobs = []
    for k in range(spec.n):
        tb = int(rng.random() < 0.45)
        # Tuberculosis: upper-zone patchy consolidation, drawn at plausible places by the renderer.
        findings = ["Consolidation", "Infiltration"] if tb else []
        if k < n_m:
            name = f"MCUCXR_{k + 1:04d}_{tb}.png"
            h = int(round(spec.size * rng.uniform(1.05, 1.25)))
            masks = {
                "left": str(root / "Montgomery/ManualMask/leftMask" / name),
                "right": str(root / "Montgomery/ManualMask/rightMask" / name),
            }
            path = root / "Montgomery/CXR_png" / name
        else:
            name = f"CHNCXR_{k - n_m + 1:04d}_{tb}.png"
            h = int(round(spec.size * rng.uniform(0.95, 1.05)))
            masks = {"both": str(root / "Shenzhen/mask" / name.replace(".png", "_mask.png"))}
            path = root / "Shenzhen/CXR_png" / name
        jobs.append(ImageJob(
            path=str(path), height=h, width=spec.size, findings=findings,
            anatomy_seed=(spec.seed, 42, k), image_seed=(spec.seed, 43, k),
            difficulty=spec.difficulty, lung_mask_paths=masks,
        ))
    run_parallel(draw_and_save, jobs, workers, "lungs twin")
