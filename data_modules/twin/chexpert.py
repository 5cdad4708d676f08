"""CheXpert twin: real train.csv rows, a valid.csv with certain labels, JPGs at each row's Path."""

from __future__ import annotations

import csv
import io
import zlib
from pathlib import Path

import numpy as np

from .anatomy import Chest, burn_markers
from .io import TwinSpec, run_parallel, write_text
from .render import ImageJob, Site, draw_and_save
from .sources import read_csv_lines

FOLDER = "CheXpert-v1.0-small"
FIRST_FINDING_COLUMN = 6  # Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, then 13 findings


# Lateral anatomy is not modelled: lateral rows are drawn as frontal films marked "LAT" (twin only).
_LATERAL = Site(markers=["LAT", "L"])
_FRONTAL = Site()


def _fields(line: str) -> list[str]:
    return next(csv.reader([line]))


def _join(fields: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue()


def _patient(path: str) -> str:
    return path.split("/")[2]


def write(root: Path, spec: TwinSpec, workers: int | None) -> None:
    header, lines = read_csv_lines("chexpert")
    columns = _fields(header)
    rng = np.random.default_rng([spec.seed, 11])
    order = rng.permutation(len(lines))
    train_idx = np.sort(order[: spec.n])
    train_patients = {_patient(lines[i].split(",", 1)[0]) for i in train_idx}
    # valid.csv: rows of other patients, moved under valid/ and with certain labels, as released.
    n_valid = max(1, spec.n // 10)
    valid_idx, seen = [], set()
    for i in order[spec.n :]:
        p = _patient(lines[i].split(",", 1)[0])
        if p not in train_patients and p not in seen:
            valid_idx.append(i)
            seen.add(p)
            if len(valid_idx) == n_valid:
                break
    valid_rows = []
    for i in sorted(valid_idx):
        f = _fields(lines[i])
        f[0] = f[0].replace(f"{FOLDER}/train/", f"{FOLDER}/valid/", 1)
        for c in range(FIRST_FINDING_COLUMN - 1, len(f)):
            v = f[c]
            f[c] = "1.0" if v == "1.0" or (v == "-1.0" and rng.random() < 0.5) else "0.0"
        valid_rows.append(f)

    write_text(root / FOLDER / "train.csv", "\n".join([header, *(lines[i] for i in train_idx)]) + "\n")
    write_text(root / FOLDER / "valid.csv", "\n".join([header, *map(_join, valid_rows)]) + "\n")

    jobs = []
    for f in [_fields(lines[i]) for i in train_idx] + valid_rows:
        findings = [columns[c] for c in range(FIRST_FINDING_COLUMN, len(f)) if f[c] == "1.0"]
        uncertain = [columns[c] for c in range(FIRST_FINDING_COLUMN, len(f)) if f[c] == "-1.0"]
        h, image_seed = _frame(f[0], spec)
        lateral = f[3] == "Lateral"
        jobs.append(ImageJob(
            path=str(root / f[0]), height=h, width=spec.size,
            findings=findings, uncertain=uncertain,
            anatomy_seed=(spec.seed, 12, int(_patient(f[0])[len("patient"):])),
            image_seed=image_seed, difficulty=spec.difficulty, fmt="jpg",
            site=_LATERAL if lateral else _FRONTAL,
        ))
    run_parallel(draw_and_save, jobs, workers, "chexpert twin")


def _frame(rel_path: str, spec: TwinSpec) -> tuple[int, tuple[int, int, int]]:
    """Height and image seed of the image at ``rel_path`` (its width is ``spec.size``)."""
    crc = zlib.crc32(rel_path.encode())
    return int(round(spec.size * (1.0 + (crc % 30) / 100))), (spec.seed, 13, crc)


def marker_mask(rel_path: str, lateral: bool, spec: TwinSpec) -> np.ndarray:
    """The pixels of the burned-in text markers of the twin image at ``rel_path`` (bool [H, W]).

    Recomputed from the seeds ``write`` drew them with (the markers depend only on the image seed,
    its size and the site's texts: the film has its own generator), without reading or writing any
    image. Used to measure how much lettering a crop or a spatial transformer keeps (STN paper).
    """
    h, image_seed = _frame(rel_path, spec)
    canvas = np.zeros((h, spec.size), np.float32)
    chest = Chest(h, spec.size, np.zeros((1, 1), np.uint8), (0.0, 0.0, 0.0, 0.0), (0.0, 0.0), (0.0, 0.0), 0.0)
    film = np.random.default_rng([*image_seed, 7919])  # as render(): the film generator draws the markers first
    burn_markers(film, canvas, chest, (_LATERAL if lateral else _FRONTAL).markers)
    return canvas >= 0.25  # ink of at least a quarter of full strength (the glyph, not its faint anti-aliasing)
