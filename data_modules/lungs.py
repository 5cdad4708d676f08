"""Lung masks for segmentation (SS-CXR §4.3): Montgomery (CXR_png/, ManualMask/leftMask/ and
rightMask/, merged here) and Shenzhen (CXR_png/, mask/<name>_mask.png; images without a mask are
not indexed, as in the released mask set). Train/val on ``train_sites``, test on ``test_sites``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .checks import EIGHT_BIT, SIXTEEN_BIT, ImageFormat
from .io import DataError
from .splits import split_patients

SITES = {"montgomery": ("Montgomery", "MontgomerySet"), "shenzhen": ("Shenzhen", "ChinaSet_AllFiles")}
LAYOUT = ("Montgomery/CXR_png/*.png + Montgomery/ManualMask/{leftMask,rightMask}/*.png and/or "
          "Shenzhen/CXR_png/*.png + Shenzhen/mask/*_mask.png")
#: PNGs; Montgomery's are 12-bit grey (stored as 16-bit PNG), Shenzhen's 8-bit. Masks are checked
#: against their images' sizes by the base (``check_mask_files``).
IMAGE_FORMAT = ImageFormat(frozenset({"PNG"}), EIGHT_BIT | SIXTEEN_BIT, "Montgomery ships 12-bit, Shenzhen 8-bit PNGs")


def _site_dir(root: Path, site: str) -> Path | None:
    for name in SITES[site]:
        if (root / name / "CXR_png").is_dir():
            return root / name
    return None


def _site_rows(root: Path, site: str) -> list[dict]:
    d = _site_dir(root, site)
    if d is None:
        return []
    rows = []
    for img in sorted((d / "CXR_png").glob("*.png")):
        if site == "montgomery":
            masks = [d / "ManualMask" / side / img.name for side in ("leftMask", "rightMask")]
        else:
            masks = [d / "mask" / f"{img.stem}_mask.png"]
        if all(m.is_file() for m in masks):
            rows.append({"path": str(img), "patient_id": f"{site}:{img.stem}", "site": site,
                         "abnormal": float(img.stem.endswith("_1")), "masks": tuple(map(str, masks))})
    return rows


class Lungs(CXRDataModule):
    name = "lungs"
    image_format = IMAGE_FORMAT

    def __init__(self, root: str, train_sites: list[str] | None = None, test_sites: list[str] | None = None,
                 val_share: float = 0.1, **kwargs):
        kwargs.setdefault("transforms", "seg")
        super().__init__(root, **kwargs)
        self.train_sites = list(train_sites or ["shenzhen"])
        self.test_sites = list(test_sites or ["montgomery"])
        bad = [s for s in self.train_sites + self.test_sites if s not in SITES]
        if bad or set(self.train_sites) & set(self.test_sites):
            raise DataError(f"lungs: sites must be among {list(SITES)} and train/test disjoint; got "
                            f"train {self.train_sites}, test {self.test_sites}")
        self.val_share = val_share

    def build_index(self) -> DatasetIndex:
        self._require_root(LAYOUT)
        rows = [r for s in self.train_sites + self.test_sites for r in _site_rows(self.root, s)]
        if not rows:
            raise DataError(f"lungs: no image with its mask(s) under {self.root}. Expected layout: {LAYOUT}")
        meta = pd.DataFrame(rows)
        labels = pd.DataFrame({"abnormal": meta["abnormal"].to_numpy(np.float32)})
        masks = [("files", m) for m in meta["masks"]]
        return DatasetIndex("lungs", self.root, meta.drop(columns=["masks"]), labels, "segmentation", masks=masks)

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        site = index.meta["site"]
        pool = np.flatnonzero(site.isin(self.train_sites).to_numpy())
        parts = split_patients(index.meta["patient_id"].iloc[pool], {"train": 1 - self.val_share, "val": self.val_share},
                               self.split_seed)
        out = {k: pool[v] for k, v in parts.items()}
        out["test"] = np.flatnonzero(site.isin(self.test_sites).to_numpy())
        return out
