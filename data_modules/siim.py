"""SIIM-ACR Pneumothorax as released: train-rle.csv (``ImageId``, `` EncodedPixels`` — with its
leading space) and DICOMs under dicom-images-train/**/<ImageId>.dcm, or a PNG export (**/<ImageId>.png).

Masks are the union of an image's rows (Kaggle relative, column-major RLE in a 1024² frame; ``-1`` =
no pneumothorax), resized to the image. Splits: ``val_share`` / ``test_share`` of images, stratified
on positive vs negative (the CSV carries no patient id; each ImageId is its own group).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .checks import EIGHT_BIT, ImageFormat, check_listed_once, where, with_lines
from .io import DataError, check_images, read_table
from .rle import RLEError, runs
from .splits import split_patients, stratum_keys

LAYOUT = "train-rle.csv (ImageId, EncodedPixels) and dicom-images-train/<study>/<series>/<ImageId>.dcm (or **/<ImageId>.png)"
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


class SIIM(CXRDataModule):
    name = "siim"
    image_format = IMAGE_FORMAT

    def __init__(self, root: str, val_share: float = 0.1, test_share: float = 0.1, **kwargs):
        kwargs.setdefault("transforms", "seg")
        super().__init__(root, **kwargs)
        self.val_share, self.test_share = val_share, test_share

    def build_index(self) -> DatasetIndex:
        self._require_root(LAYOUT)
        images = group_masks(read_rle_table(self.root / "train-rle.csv"))
        found = {p.stem: str(p) for pat in ("dicom-images-train/**/*.dcm", "**/*.png") for p in self.root.glob(pat)}
        paths = [found.get(i, str(self.root / "dicom-images-train" / f"{i}.dcm")) for i in images["ImageId"]]
        present = check_images(paths, self.on_missing, "siim")
        images = images[present].reset_index(drop=True)
        meta = pd.DataFrame({"path": [p for p, ok in zip(paths, present) if ok],
                             "patient_id": images["ImageId"].to_numpy(), "image": images["ImageId"].to_numpy()})
        labels = pd.DataFrame({"Pneumothorax": images["positive"].to_numpy()})
        masks = [("rle", r) if r else None for r in images["rles"]]
        return DatasetIndex("siim", self.root, meta, labels, "segmentation", masks=masks)

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        rows = np.flatnonzero(index.eligible)
        shares = {"train": 1 - self.val_share - self.test_share, "val": self.val_share, "test": self.test_share}
        parts = split_patients(index.meta["patient_id"].iloc[rows], shares, self.split_seed,
                               strata=stratum_keys(index.labels).iloc[rows])
        return {k: rows[v] for k, v in parts.items()}
