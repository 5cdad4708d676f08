"""CheXpert twin: real train.csv rows, a valid.csv with certain labels, JPGs at each row's Path.

``release`` (option): ``small`` (default) writes CheXpert-v1.0-small/; ``full`` writes CheXpert-v1.0/ (its
Paths say ``CheXpert-v1.0/train/…``, as the full release's train.csv does); ``both`` writes the two, the
small one at ``size`` and the full one at twice it; ``chexlocalize`` adds, beside CheXpert-v1.0-small/,
CheXlocalize's labelled test set as its README lays it out: ``CheXpert/test_labels.csv`` (Path
``test/patientNNNNN/studyN/viewN_frontal.jpg`` and the 14 observations, 0/1, no Sex/Age/view columns)
and the images under ``CheXpert/test/`` (rows of patients in neither train.csv nor valid.csv).

``n_valid`` (option): valid.csv's rows (default n // 10; the release has 234), e.g. a test split large
enough for an AUC when valid.csv is the test (protocol ``official``).

``shortcut`` (option, a number s in [0, 1]; absent by default, and then nothing below is drawn): the
artifact the STN paper's spatial transformer is meant to remove, text outside the thorax that biases a
classifier. A 'PORTABLE' label is burned below the lungs of an image of train.csv with probability
(1 + s) / 2 if its row is abnormal and (1 - s) / 2 if it is normal (the STN task's definition under
U-Ones: any observation but No Finding and Support Devices positive or uncertain; rows that are
neither get 1/2), and of every valid.csv and labelled-test image with probability 1/2, whatever its
labels. So a model trained on train.csv can read the label off the lettering, and the official test
(valid.csv) shows what that costs; s = 0 is the control: the same lettering, tied to nothing. The
draw has its own generator per image, so the other pixels are those of the same twin without it.
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from .anatomy import Chest, burn_markers
from .io import TwinError, TwinSpec, run_parallel, write_text
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
    parts = path.split("/")
    return parts[2] if len(parts) > 2 and parts[2].startswith("patient") else next(
        q for q in parts if q.startswith("patient"))


def write(root: Path, spec: TwinSpec, workers: int | None) -> None:
    header, lines = read_csv_lines("chexpert")
    columns = _fields(header)
    rng = np.random.default_rng([spec.seed, 11])
    order = rng.permutation(len(lines))
    train_idx = np.sort(order[: spec.n])
    train_patients = {_patient(lines[i].split(",", 1)[0]) for i in train_idx}
    # valid.csv: rows of other patients, moved under valid/ and with certain labels, as released.
    n_valid = int(spec.options.get("n_valid", max(1, spec.n // 10)))
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

    shortcut = shortcut_strength(spec)
    release = spec.options.get("release", "small")
    folders = {"small": [(FOLDER, spec.size)], "full": [(FULL, spec.size)], "chexlocalize": [(FOLDER, spec.size)],
               "both": [(FOLDER, spec.size), (FULL, 2 * spec.size)]}[release]
    test_rows = _test_rows(lines, order, spec, train_patients | seen, rng) if release == "chexlocalize" else []
    jobs = []
    for folder, size in folders:
        def moved(line: str, folder=folder) -> str:
            return line if folder == FOLDER else line.replace(f"{FOLDER}/", f"{folder}/", 1)

        write_text(root / folder / "train.csv", "\n".join([moved(header), *(moved(lines[i]) for i in train_idx)]) + "\n")
        write_text(root / folder / "valid.csv", "\n".join([header, *(moved(_join(f)) for f in valid_rows)]) + "\n")
        for f in [_fields(moved(lines[i])) for i in train_idx]:
            jobs.append(_job(root / f[0], f, columns, spec, size, f[0], shortcut, correlated=True))
        for f in [_fields(moved(_join(f))) for f in valid_rows]:  # valid.csv: the lettering tied to nothing
            jobs.append(_job(root / f[0], f, columns, spec, size, f[0], shortcut, correlated=False))
    if test_rows:
        test_header = ",".join(["Path", *columns[FIRST_FINDING_COLUMN - 1:]])
        write_text(root / "CheXpert" / "test_labels.csv",
                   "\n".join([test_header, *(_join([f[0], *f[FIRST_FINDING_COLUMN - 1:]]) for f in test_rows)]) + "\n")
        for f in test_rows:
            jobs.append(_job(root / "CheXpert" / f[0], f, columns, spec, spec.size, f"CheXpert/{f[0]}", shortcut,
                             correlated=False))
    run_parallel(draw_and_save, jobs, workers, "chexpert twin")


FULL = "CheXpert-v1.0"


def shortcut_strength(spec: TwinSpec) -> float | None:
    """The ``shortcut`` option as a number in [0, 1], or None when it is not set."""
    if "shortcut" not in spec.options:
        return None
    value = spec.options["shortcut"]
    try:
        s = float(value)
    except (TypeError, ValueError):
        s = float("nan")
    if not 0.0 <= s <= 1.0:
        raise TwinError(f"--shortcut (chexpert twin option shortcut) must be a number in [0, 1], got {value!r}")
    return s


#: U-Ones abnormal/normal as the STN task reads it (``data_modules.chexpert.abnormal_labels``), on a raw row
_NOT_DISEASE = ("No Finding", "Support Devices")


def _abnormal(f: list[str], columns: list[str]) -> bool | None:
    disease = any(f[c] in ("1.0", "-1.0") for c in range(FIRST_FINDING_COLUMN, len(f)) if columns[c] not in _NOT_DISEASE)
    if disease:
        return True
    return False if f[FIRST_FINDING_COLUMN - 1] == "1.0" else None


def _shortcut_drawn(image_seed: tuple[int, ...], p: float) -> bool:
    return bool(np.random.default_rng([*image_seed, 104723]).random() < p)


def _job(path: Path, f: list[str], columns: list[str], spec: TwinSpec, size: int, rel_path: str,
         shortcut: float | None = None, correlated: bool = False) -> ImageJob:
    findings = [columns[c] for c in range(FIRST_FINDING_COLUMN, len(f)) if f[c] == "1.0"]
    uncertain = [columns[c] for c in range(FIRST_FINDING_COLUMN, len(f)) if f[c] == "-1.0"]
    sized = spec if size == spec.size else replace(spec, size=size)
    h, image_seed = _frame(rel_path, sized)
    lateral = f[3] == "Lateral"
    marker = False
    if shortcut is not None:
        label = _abnormal(f, columns) if correlated else None
        marker = _shortcut_drawn(image_seed, 0.5 if label is None else (1 + shortcut) / 2 if label else (1 - shortcut) / 2)
    return ImageJob(
        path=str(path), height=h, width=size,
        findings=findings, uncertain=uncertain,
        anatomy_seed=(spec.seed, 12, int(_patient(f[0])[len("patient"):])),
        image_seed=image_seed, difficulty=spec.difficulty, fmt="jpg",
        site=_LATERAL if lateral else _FRONTAL, shortcut_marker=marker,
    )


def _test_rows(lines: list[str], order: np.ndarray, spec: TwinSpec, used: set, rng) -> list[list[str]]:
    """CheXlocalize's test set: frontal and lateral rows of other patients, certain labels (the radiologists'
    majority), Path ``test/<patient>/<study>/<view>.jpg``."""
    n_test, rows, seen = max(2, spec.n // 5), [], set()
    for i in order[::-1]:
        f = _fields(lines[i])
        p = _patient(f[0])
        if p in used or p in seen:
            continue
        seen.add(p)
        f[0] = "test/" + f[0].split("/", 2)[2]
        for c in range(FIRST_FINDING_COLUMN - 1, len(f)):
            v = f[c]
            f[c] = "1.0" if v == "1.0" or (v == "-1.0" and rng.random() < 0.5) else "0.0"
        rows.append(f)
        if len(rows) == n_test:
            break
    return sorted(rows)


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
