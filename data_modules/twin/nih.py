"""NIH ChestX-ray14 twin: real Data_Entry / BBox rows, PNGs under images_0XX/images/.

Beside the release's files it writes one the release does not have, ``twin_boxes.csv`` (BBox_List's
columns and a ``Drawn`` column): for every image and each of the 14 findings, the box the finding was
drawn in (Drawn 1: the real box of a box image, else the twin's ``plausible_box``) or, where the image
lacks it, the box it would have been drawn in (Drawn 0), from the same distribution. These are the
oracle boxes of RGT's oracle-box experiment (``NIH(oracle_boxes='twin_boxes.csv')``); no other
reader looks at the file.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .io import TwinSpec, run_parallel, write_text
from .render import ImageJob, draw_and_save
from .sources import read_csv_lines

REAL_SIZE = 1024  # the released PNGs and the box file are in this pixel space
#: The release splits its 112,120 PNGs over 12 folders: 4,999 in the first, 10,000 in the others.
FIRST_FOLDER, PER_FOLDER = 4999, 10000
#: the 14 findings of Data_Entry (data_modules.nih.NIH14), the classes of twin_boxes.csv
FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
            "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
ORACLE_FILE = "twin_boxes.csv"
ORACLE_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],Drawn"
TEST_PATIENT_SHARE = 0.2


def folder_of(rank: int) -> str:
    k = 1 if rank < FIRST_FOLDER else min(12, 2 + (rank - FIRST_FOLDER) // PER_FOLDER)
    return f"images_{k:03d}/images"


def n_box_images(n: int, available: int = 880) -> int:
    """Box images in an n-image twin: a third of it, all 880 from n = 2,640 on."""
    return min(available, max(1, n // 3))


def read_boxes() -> tuple[str, dict[str, list[tuple[str, float, float, float, float]]]]:
    header, lines = read_csv_lines("nih_boxes")
    boxes: dict[str, list] = {}
    for line in lines:
        f = line.split(",")
        boxes.setdefault(f[0], []).append((f[1], *map(float, f[2:6])))
    return header, boxes


def write(root: Path, spec: TwinSpec, workers: int | None) -> None:
    header, lines = read_csv_lines("nih_entries")
    box_header, boxes = read_boxes()
    names = [line.split(",", 1)[0] for line in lines]
    rng = np.random.default_rng([spec.seed, 1])
    is_box = np.array([name in boxes for name in names])
    box_idx, other_idx = np.flatnonzero(is_box), np.flatnonzero(~is_box)
    n_box = min(n_box_images(spec.n, len(box_idx)), spec.n)
    chosen = np.sort(np.concatenate([
        rng.choice(box_idx, n_box, replace=False),
        rng.choice(other_idx, min(spec.n - n_box, len(other_idx)), replace=False),
    ]))
    scale = spec.size / REAL_SIZE
    rows = [lines[i] for i in chosen]
    write_text(root / "Data_Entry_2017.csv", "\n".join([header, *rows]) + "\n")

    box_rows, jobs = [], []
    for i in chosen:
        f = lines[i].split(",")
        name, labels, patient = f[0], f[1], int(f[3])
        img_boxes: dict[str, list] = {}
        for label, x, y, w, h in boxes.get(name, []):
            x, y, w, h = (v * scale for v in (x, y, w, h))
            box_rows.append(f"{name},{label},{x!r},{y!r},{w!r},{h!r},,,")
            canon = "Infiltration" if label == "Infiltrate" else label
            img_boxes.setdefault(canon, []).append((x, y, x + w, y + h))
        findings = [] if labels == "No Finding" else labels.split("|")
        crc = zlib.crc32(name.encode())
        jobs.append(ImageJob(
            path=str(root / folder_of(int(i)) / name),
            height=spec.size, width=spec.size,
            findings=findings, boxes=img_boxes,
            anatomy_seed=(spec.seed, 1, patient), image_seed=(spec.seed, 2, crc),
            difficulty=spec.difficulty,
            fmt="png-rgba" if crc % 100 == 0 else "png",
            box_classes=FINDINGS,
        ))
    write_text(root / "BBox_List_2017.csv", "\n".join([box_header, *box_rows]) + "\n")

    patients = sorted({int(lines[i].split(",")[3]) for i in chosen})
    n_test = int(round(len(patients) * TEST_PATIENT_SHARE)) if len(patients) > 1 else 0
    test_patients = set(rng.permutation(patients)[:n_test].tolist())
    split = {"train_val_list.txt": [], "test_list.txt": []}
    for i in chosen:
        f = lines[i].split(",")
        split["test_list.txt" if int(f[3]) in test_patients else "train_val_list.txt"].append(f[0])
    for fname, items in split.items():
        write_text(root / fname, "".join(s + "\n" for s in items))
    boxes_of = run_parallel(draw_and_save, jobs, workers, "nih twin")
    write_text(root / ORACLE_FILE, oracle_rows(jobs, boxes_of, spec.size))


def oracle_rows(jobs: list[ImageJob], boxes_of: list[tuple[dict, dict]], size: int) -> str:
    """twin_boxes.csv: each image's drawn and would-be boxes, clipped to the image, in file pixels."""
    rows = [ORACLE_HEADER]
    for job, (drawn, absent) in zip(jobs, boxes_of):
        name = Path(job.path).name
        for flag, found in ((1, drawn), (0, absent)):
            for label in FINDINGS:
                for box in found.get(label, ()):
                    x0, y0, x1, y1 = (float(v) for v in box)  # numpy scalars print as np.float64(…)
                    x0, y0 = min(max(x0, 0.0), size - 1.0), min(max(y0, 0.0), size - 1.0)
                    x1, y1 = min(max(x1, x0 + 1.0), float(size)), min(max(y1, y0 + 1.0), float(size))
                    rows.append(f"{name},{label},{x0!r},{y0!r},{x1 - x0!r},{y1 - y0!r},{flag}")
    return "\n".join(rows) + "\n"
