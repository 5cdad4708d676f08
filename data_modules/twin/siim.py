"""SIIM-ACR twin: real train-rle.csv rows (several per image kept), DICOMs under dicom-images-train/."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import TwinSpec, run_parallel, write_text
from .render import ImageJob, draw_and_save
from .sources import read_csv_lines


def group_rows(lines: list[str]) -> dict[str, list[str]]:
    """ImageId -> its RLE strings, in file order (the release has several rows per image)."""
    out: dict[str, list[str]] = {}
    for line in lines:
        image_id, rle = line.split(",", 1)
        out.setdefault(image_id, []).append(rle.strip())
    return out


def dicom_path(image_id: str) -> str:
    """The release nests each file as <study UID>/<series UID>/<ImageId>.dcm."""
    study = image_id.replace(".3.1.4.", ".3.1.2.", 1)
    series = image_id.replace(".3.1.4.", ".3.1.3.", 1)
    return f"dicom-images-train/{study}/{series}/{image_id}.dcm"


def write(root: Path, spec: TwinSpec, workers: int | None) -> None:
    header, lines = read_csv_lines("siim")
    groups = group_rows(lines)
    ids = list(groups)
    rng = np.random.default_rng([spec.seed, 31])
    chosen = set(rng.choice(len(ids), min(spec.n, len(ids)), replace=False).tolist())
    keep = {ids[i] for i in chosen}
    write_text(root / "train-rle.csv", "\n".join([header, *(l for l in lines if l.split(",", 1)[0] in keep)]) + "\n")
    jobs = []
    for i in sorted(chosen):
        image_id = ids[i]
        rles = [r for r in groups[image_id] if r != "-1"]
        jobs.append(ImageJob(
            path=str(root / dicom_path(image_id)), height=spec.size, width=spec.size, findings=[],
            mask=tuple(rles) or None,
            anatomy_seed=(spec.seed, 32, i), image_seed=(spec.seed, 33, i),
            difficulty=spec.difficulty, fmt="dcm", dicom_uid=image_id,
        ))
    run_parallel(draw_and_save, jobs, workers, "siim twin")
