"""SIIM-ACR Pneumothorax as released and as most people hold it now (``detect_release``):

- stage 1 (Kaggle): ``train-rle.csv`` (``ImageId``, `` EncodedPixels`` — with its leading space) and
  DICOMs under ``dicom-images-train/**/<ImageId>.dcm``: 10,675 images; the 1,372 of
  ``dicom-images-test/`` have no labels in stage 1 (not indexed, named).
- stage 2 (Kaggle): ``stage_2_train.csv`` (the same two columns, with or without the space): the labels
  of stage 1's train *and* test images, 12,047 images in 12,954 rows (torchxrayvision's
  ``siim-pneumothorax-train-rle.csv.gz`` is this file), the DICOMs in ``dicom-images-train/`` and
  ``dicom-images-test/`` (stage 2's own unlabelled test images, ``stage_2_images/``, are not indexed).
  With ``train-rle.csv`` beside it, ``stage_2_train.csv`` is read (it holds stage 1's rows too) and the
  choice is named.
- a PNG export of either (``**/<ImageId>.png`` beside the label file; mask folders ``png_masks/``,
  ``mask/``, ``masks/`` are never taken for images).
- the PNG conversion with mask PNGs (Kaggle vbookshelf/pneumothorax-chest-xray-images-and-masks, the
  folder ``siim-acr-pneumothorax/``): ``png_images/<new_filename>``, ``png_masks/<new_filename>`` (a
  mask per image, 0/255) and ``stage_1_train_images.csv`` / ``stage_1_test_images.csv`` (``new_filename,
  ImageId, has_pneumo``; 10,675 + 1,372 images). Masks are the positive images' mask files (checked
  against their images' sizes at setup); a negative's (black) mask file is not read.

Anything else is refused by name: a label file of one variant beside the files of another, PNG
folders without the label CSVs, an image folder without a label file.

Masks of the RLE variants are the union of an image's rows (Kaggle relative, column-major RLE in a
1024² frame; ``-1`` = no pneumothorax), resized to the image. Protocols:

- ``random`` (default): ``val_share`` / ``test_share`` of the images, stratified on positive vs negative
  (the CSVs carry no patient id; each ImageId is its own group).
- ``camcontrast`` (CAMContrast Table 1: 8,540 / 2,135 / 1,372): test = stage 1's test images (1,372,
  whose labels came with stage 2), val = 20% of stage 1's training images ("for datasets without
  official validation split, 20% of the training split is selected for validation", §4), stratified,
  train = the rest. Needs a variant that tells stage 1's test images apart: stage 2 with
  ``dicom-images-test/``, or the PNG conversion's ``stage_1_test_images.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .checks import EIGHT_BIT, ImageFormat, check_listed_once, check_values_in, where, with_lines
from .io import DataError, check_images, read_table
from .releases import Release, note
from .rle import RLEError, runs
from .splits import split_patients, stratum_keys

STAGE1, STAGE2 = "train-rle.csv", "stage_2_train.csv"
PNG_FOLDER = "siim-acr-pneumothorax"
PNG_LISTS = {"train": "stage_1_train_images.csv", "test": "stage_1_test_images.csv"}
MASK_FOLDERS = {"png_masks", "mask", "masks"}
LAYOUT = ("train-rle.csv (ImageId, EncodedPixels) and dicom-images-train/<study>/<series>/<ImageId>.dcm (or "
          "**/<ImageId>.png); or stage_2_train.csv with dicom-images-train/ and dicom-images-test/; or the PNG "
          "conversion siim-acr-pneumothorax/ with png_images/, png_masks/, stage_1_train_images.csv and "
          "stage_1_test_images.csv")
PROTOCOLS = ("random", "camcontrast")
#: CAMContrast §4: 20% of a training split without an official validation split.
CAMCONTRAST_VAL_SHARE = 0.2
#: 8-bit grey DICOMs (MONOCHROME2, 1024²), or an 8-bit PNG export of them.
IMAGE_FORMAT = ImageFormat(frozenset({"DICOM", "PNG"}), EIGHT_BIT, "SIIM-ACR ships 8-bit DICOMs")


def read_rle_table(path) -> pd.DataFrame:
    df = read_table(path, [], LAYOUT)
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in ("ImageId", "EncodedPixels") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected 'ImageId' and ' EncodedPixels'")
    blank = df["EncodedPixels"].isna() | (df["EncodedPixels"].astype(str).str.strip() == "")
    if blank.any():
        rows = (np.flatnonzero(blank.to_numpy()) + 2).tolist()  # +2: the header, and 1-based lines
        ids = df.loc[blank, "ImageId"].astype(str).tolist()
        raise DataError(f"{path}: EncodedPixels is blank on line(s) {rows[:5]} (ImageId {ids[:3]}); the release "
                        "writes '-1' for an image without pneumothorax — a blank field is neither a mask nor '-1'")
    df["EncodedPixels"] = df["EncodedPixels"].astype(str).str.strip()
    for line, (image, rle) in enumerate(zip(df["ImageId"], df["EncodedPixels"]), 2):
        try:
            runs(rle)  # every run checked against the 1024² frame now, not mid-epoch
        except RLEError as err:
            raise DataError(f"{path}: line {line}, ImageId {image}: {err}") from None
    check_rle_rows(with_lines(df, path))
    return df


def check_rle_rows(df: pd.DataFrame) -> None:
    """Rows against each other: an image's rows are the parts of its mask, so the same row twice is a
    duplicate, and an image with '-1' (no pneumothorax) and a mask is a conflict."""
    check_listed_once(df, ["ImageId", "EncodedPixels"], "siim", "(ImageId, EncodedPixels) pair")
    empty = df["EncodedPixels"] == "-1"
    both = set(df.loc[empty, "ImageId"]) & set(df.loc[~empty, "ImageId"])
    if both:
        image = sorted(both)[0]
        i = int(np.flatnonzero((df["ImageId"] == image).to_numpy() & empty.to_numpy())[0])
        j = int(np.flatnonzero((df["ImageId"] == image).to_numpy() & ~empty.to_numpy())[0])
        raise DataError(f"siim: ImageId {image} has '-1' (no pneumothorax) on {where(df, i)} and a mask on "
                        f"{where(df, j)} ({len(both)} such image(s)); expected either '-1' alone or mask rows")


def group_masks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per image: its RLE strings (positives only) and label."""
    grouped = df.groupby("ImageId", sort=False)["EncodedPixels"].agg(lambda s: tuple(r for r in s if r != "-1"))
    return pd.DataFrame({"ImageId": grouped.index, "rles": grouped.to_numpy(),
                         "positive": grouped.map(len).gt(0).astype(np.float32).to_numpy()})


# ------------------------------------------------------------------------------------- releases
def _png_base(root: Path) -> Path | None:
    """The folder of the PNG conversion with mask PNGs (``siim-acr-pneumothorax/`` or the root), or None."""
    for base in (root / PNG_FOLDER, root):
        if (base / "png_images").is_dir() or any((base / f).is_file() for f in PNG_LISTS.values()):
            return base
    return None


def detect_release(root: Path) -> Release:
    """The SIIM-ACR variant under ``root``, from its files alone (no label file read)."""
    root = Path(root)
    png = _png_base(root)
    rle = [f for f in (STAGE2, STAGE1) if (root / f).is_file()]
    if png is not None:
        if rle:
            raise DataError(f"siim: {root} holds two SIIM-ACR variants: the PNG conversion with mask PNGs ({png}) and "
                            f"the Kaggle label file(s) {', '.join(rle)}; expected one variant per folder (move one out)")
        lacking = [n for n in ("png_images", "png_masks", PNG_LISTS["train"]) if not (png / n).exists()]
        if lacking:
            raise DataError(f"siim: {png} looks like the PNG conversion with mask PNGs but lacks {', '.join(lacking)}; "
                            f"expected png_images/, png_masks/, {PNG_LISTS['train']} and {PNG_LISTS['test']} (Kaggle "
                            "vbookshelf/pneumothorax-chest-xray-images-and-masks, unzipped as it ships)")
        files = [n for n in (PNG_LISTS["train"], PNG_LISTS["test"]) if (png / n).is_file()]
        protocols = PROTOCOLS if PNG_LISTS["test"] in files else ("random",)
        return Release("siim", "SIIM-ACR PNG conversion with mask PNGs", tuple(["png_images/", "png_masks/", *files]),
                       protocols, {"variant": "png", "base": png})
    if not rle:
        pngs = [d for d in ("png_images", "train", "mask", "masks", "images") if (root / d).is_dir()]
        found = f" (found {', '.join(d + '/' for d in pngs)} without a label file)" if pngs else ""
        raise DataError(f"siim: no SIIM-ACR label file under {root}{found}; expected one of the variants this "
                        f"DataModule reads: {LAYOUT}")
    if len(rle) == 2:
        note(f"siim: {root} holds {STAGE2} and {STAGE1}: reading {STAGE2}, which labels stage 1's train and test "
             f"images ({STAGE1}'s rows are among them)")
    label = rle[0]
    test_dir = (root / "dicom-images-test").is_dir()
    if label == STAGE2:
        name = "SIIM-ACR stage 2"
        protocols = PROTOCOLS if test_dir else ("random",)
    else:
        name = "SIIM-ACR stage 1"
        protocols = ("random",)
    dicoms = (root / "dicom-images-train").is_dir()
    files = [label] + (["dicom-images-train/"] if dicoms else []) + (["dicom-images-test/"] if test_dir else [])
    if not dicoms:
        name += " (PNG export)"
    return Release("siim", name, tuple(files), protocols, {"variant": "stage2" if label == STAGE2 else "stage1",
                                                          "label_file": root / label})


def _find_images(root: Path, suffix: str) -> dict[str, Path]:
    """ImageId -> file, every file of ``suffix`` under ``root`` outside the mask folders."""
    return {p.stem: p for p in root.rglob(f"*{suffix}") if not MASK_FOLDERS & set(p.relative_to(root).parts[:-1])}


def read_png_lists(base: Path) -> pd.DataFrame:
    """stage_1_train_images.csv and stage_1_test_images.csv as one table (stage-1 split in ``stage1``)."""
    tables = []
    for split, name in PNG_LISTS.items():
        f = base / name
        if split == "test" and not f.is_file():
            continue
        t = with_lines(read_table(f, ["new_filename", "ImageId", "has_pneumo"], LAYOUT), f)
        t["stage1"] = split
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    check_values_in(table, ["has_pneumo"], (0.0, 1.0), "siim", "1 (pneumothorax) or 0 (none)")
    blank = table["has_pneumo"].isna().to_numpy()
    if blank.any():
        i = int(np.flatnonzero(blank)[0])
        raise DataError(f"siim: {where(table, i)}, column 'has_pneumo' is blank; expected 1 (pneumothorax) or 0 (none)")
    check_listed_once(table, "ImageId", "siim", "image", fields_ignored=["stage1", "new_filename"])
    check_listed_once(table, "new_filename", "siim", "file", fields_ignored=["stage1"])
    return table


class SIIM(CXRDataModule):
    """SIIM-ACR pneumothorax segmentation; see the module docstring for the variants and protocols."""

    name = "siim"
    image_format = IMAGE_FORMAT

    def __init__(self, root: str, val_share: float = 0.1, test_share: float = 0.1, protocol: str = "random",
                 **kwargs):
        kwargs.setdefault("transforms", "seg")
        super().__init__(root, **kwargs)
        if protocol not in PROTOCOLS:
            raise DataError(f"siim: protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.val_share, self.test_share, self.protocol = val_share, test_share, protocol
        self.release: Release | None = None

    def build_index(self) -> DatasetIndex:
        self._require_root(LAYOUT)
        self.release = release = detect_release(self.root)
        if self.protocol not in release.tasks:
            raise DataError(f"siim: protocol {self.protocol!r} (CAMContrast Table 1) tests on stage 1's 1,372 test "
                            f"images, whose labels came with stage 2, but {self.root} holds {release}, which does not "
                            "tell them apart; expected stage_2_train.csv with dicom-images-train/ and dicom-images-test/, "
                            "or the PNG conversion's stage_1_test_images.csv")
        if release.details["variant"] == "png":
            index = self._png_index(release.details["base"])
        else:
            index = self._rle_index(release.details["label_file"])
        index.notes["release"] = str(release)
        return index

    def _rle_index(self, label_file: Path) -> DatasetIndex:
        images = group_masks(read_rle_table(label_file))
        found = _find_images(self.root / "dicom-images-train", ".dcm") if (self.root / "dicom-images-train").is_dir() else {}
        test_found = (_find_images(self.root / "dicom-images-test", ".dcm")
                      if (self.root / "dicom-images-test").is_dir() else {})
        stage1 = {i: "train" for i in found}
        if label_file.name == STAGE2:
            found = {**test_found, **found}
            stage1.update({i: "test" for i in test_found if i not in stage1})
        elif test_found:
            note(f"siim: {len(test_found)} DICOM(s) under dicom-images-test/ have no labels in {STAGE1} (stage 1's test "
                 f"images; stage 2's {STAGE2} labels them): not indexed")
        if not found:
            found = _find_images(self.root, ".png")
            stage1 = {}
        paths = [str(found.get(i, self.root / "dicom-images-train" / f"{i}.dcm")) for i in images["ImageId"]]
        present = check_images(paths, self.on_missing, "siim")
        images = images[present].reset_index(drop=True)
        meta = pd.DataFrame({"path": [p for p, ok in zip(paths, present) if ok],
                             "patient_id": images["ImageId"].to_numpy(), "image": images["ImageId"].to_numpy(),
                             "stage1": [stage1.get(i, "") for i in images["ImageId"]]})
        labels = pd.DataFrame({"Pneumothorax": images["positive"].to_numpy()})
        masks = [("rle", r) if r else None for r in images["rles"]]
        return DatasetIndex("siim", self.root, meta, labels, "segmentation", masks=masks)

    def _png_index(self, base: Path) -> DatasetIndex:
        table = read_png_lists(base)
        paths = [str(base / "png_images" / n) for n in table["new_filename"]]
        present = check_images(paths, self.on_missing, "siim")
        table = table[present].reset_index(drop=True)
        positive = table["has_pneumo"].astype(float).to_numpy() == 1
        mask_paths = [str(base / "png_masks" / n) for n in table["new_filename"]]
        lacking = [m for m, pos in zip(mask_paths, positive) if pos and not Path(m).is_file()]
        if lacking:
            i = mask_paths.index(lacking[0])
            raise DataError(f"siim: {where(table, i)}: image {table['new_filename'].iloc[i]} has has_pneumo 1 but no mask "
                            f"{lacking[0]} ({len(lacking)} such image(s)); expected a mask PNG of the same name in "
                            "png_masks/ for every positive image")
        meta = pd.DataFrame({"path": [p for p, ok in zip(paths, present) if ok],
                             "patient_id": table["ImageId"].astype(str).to_numpy(),
                             "image": table["ImageId"].astype(str).to_numpy(), "stage1": table["stage1"].to_numpy()})
        labels = pd.DataFrame({"Pneumothorax": positive.astype(np.float32)})
        masks = [("files", (m,)) if pos else None for m, pos in zip(mask_paths, positive)]
        return DatasetIndex("siim", self.root, meta, labels, "segmentation", masks=masks)

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        rows = np.flatnonzero(index.eligible)
        keys = stratum_keys(index.labels)
        if self.protocol == "camcontrast":
            stage1 = index.meta["stage1"].to_numpy()
            pool, test = rows[stage1[rows] == "train"], rows[stage1[rows] == "test"]
            parts = split_patients(index.meta["patient_id"].iloc[pool],
                                   {"train": 1 - CAMCONTRAST_VAL_SHARE, "val": CAMCONTRAST_VAL_SHARE},
                                   self.split_seed, strata=keys.iloc[pool])
            return {**{k: pool[v] for k, v in parts.items()}, "test": test}
        shares = {"train": 1 - self.val_share - self.test_share, "val": self.val_share, "test": self.test_share}
        parts = split_patients(index.meta["patient_id"].iloc[rows], shares, self.split_seed,
                               strata=keys.iloc[rows])
        return {k: rows[v] for k, v in parts.items()}


__all__ = ["SIIM", "detect_release", "read_rle_table", "group_masks", "check_rle_rows", "read_png_lists"]
