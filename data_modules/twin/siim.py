"""SIIM-ACR twin: real train-rle.csv rows (several per image kept), DICOMs under dicom-images-train/.

The rows are torchxrayvision's copy of the stage-2 labels (12,047 images of stage 1's train and test
sets). ``release`` (option): ``stage1`` (default) writes ``train-rle.csv`` + ``dicom-images-train/``;
``stage2`` writes ``stage_2_train.csv`` (header ``ImageId,EncodedPixels``) with the DICOMs of ~11% of the
images (stage 1's share of test images, 1,372 of 12,047; which ones is the twin's draw: the wheel does
not say) under ``dicom-images-test/``; ``png`` writes the PNG conversion with mask PNGs as Kaggle's
vbookshelf/pneumothorax-chest-xray-images-and-masks ships it: ``siim-acr-pneumothorax/png_images/``,
``png_masks/`` (0/255, one per image, black for negatives) and ``stage_1_train_images.csv`` /
``stage_1_test_images.csv`` (``new_filename,ImageId,has_pneumo``; files ``<k>_<train|test>_<has>_.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from PIL import Image

from ..rle import decode_union
from .io import TwinSpec, run_parallel, save_image, write_text
from .render import ImageJob, draw_and_save
from .sources import read_csv_lines

PNG_FOLDER = "siim-acr-pneumothorax"


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


STAGE1_TEST_SHARE = 1372 / 12047


def write(root: Path, spec: TwinSpec, workers: int | None) -> None:
    header, lines = read_csv_lines("siim")
    groups = group_rows(lines)
    ids = list(groups)
    rng = np.random.default_rng([spec.seed, 31])
    chosen = set(rng.choice(len(ids), min(spec.n, len(ids)), replace=False).tolist())
    keep = {ids[i] for i in chosen}
    release = spec.options.get("release", "stage1")
    order = sorted(chosen)
    test = set()
    if release != "stage1":  # stage 1's test images: the twin's own draw (the wheel does not name them)
        draw = np.random.default_rng([spec.seed, 34]).random(len(order)) < STAGE1_TEST_SHARE
        test = {ids[i] for i, t in zip(order, draw) if t}
    if release == "stage1":
        write_text(root / "train-rle.csv", "\n".join([header, *(l for l in lines if l.split(",", 1)[0] in keep)]) + "\n")
    elif release == "stage2":
        rows = [l.split(",", 1) for l in lines if l.split(",", 1)[0] in keep]
        write_text(root / "stage_2_train.csv",
                   "\n".join(["ImageId,EncodedPixels", *(f"{i},{r.strip()}" for i, r in rows)]) + "\n")
    jobs, masks, listed = [], [], {"train": [], "test": []}
    for i in order:
        image_id = ids[i]
        rles = [r for r in groups[image_id] if r != "-1"]
        split = "test" if image_id in test else "train"
        if release == "png":
            name = f"{len(listed[split])}_{split}_{int(bool(rles))}_.png"
            listed[split].append(f"{name},{image_id},{int(bool(rles))}")
            path, fmt = root / PNG_FOLDER / "png_images" / name, "png"
            masks.append((root / PNG_FOLDER / "png_masks" / name, tuple(rles)))
        else:
            folder = "dicom-images-test" if split == "test" else "dicom-images-train"
            path, fmt = root / dicom_path(image_id).replace("dicom-images-train", folder, 1), "dcm"
        jobs.append(ImageJob(
            path=str(path), height=spec.size, width=spec.size, findings=[],
            mask=tuple(rles) or None,
            anatomy_seed=(spec.seed, 32, i), image_seed=(spec.seed, 33, i),
            difficulty=spec.difficulty, fmt=fmt, dicom_uid=image_id if fmt == "dcm" else None,
        ))
    if release == "png":
        for split, name in (("train", "stage_1_train_images.csv"), ("test", "stage_1_test_images.csv")):
            write_text(root / PNG_FOLDER / name, "\n".join(["new_filename,ImageId,has_pneumo", *listed[split]]) + "\n")
        for path, rles in masks:
            full = decode_union(list(rles), 1024, 1024) if rles else np.zeros((1024, 1024), np.uint8)
            small = np.asarray(Image.fromarray(full * 255).resize((spec.size, spec.size), Image.NEAREST))
            save_image(str(path), small, "png")
    run_parallel(draw_and_save, jobs, workers, "siim twin")
