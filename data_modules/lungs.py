"""Lung masks for segmentation (SS-CXR §4.3). Train/val on ``train_sites``, test on ``test_sites``.

Releases (``detect_release``), per site:

- the per-site folders: Montgomery (NLM's MontgomerySet: ``CXR_png/``, ``ManualMask/leftMask/`` and
  ``rightMask/``, merged here; 138 images, every one with both masks) and Shenzhen (NLM's
  ChinaSet_AllFiles ``CXR_png/``, 662 images, with the separate set of 566 masks by Stirenko et al.,
  Kaggle yoctoman/shcxr-lung-mask, in ``mask/<name>_mask.png``), folders ``Montgomery``/``MontgomerySet``
  and ``Shenzhen``/``ChinaSet_AllFiles``;
- the combined "Chest X-ray Masks and Labels" set (Kaggle nikhilpandey360/chest-xray-masks-and-labels):
  ``Lung Segmentation/CXR_png/`` (800 images: 138 ``MCUCXR_*``, 662 ``CHNCXR_*``) and
  ``Lung Segmentation/masks/`` (704: Montgomery's as ``MCUCXR_xxxx_y.png``, both lungs in one file,
  Shenzhen's as ``CHNCXR_xxxx_y_mask.png`` — the same 566); its ``test/`` (96 images without masks)
  is not indexed. Also found under ``data/Lung Segmentation/``.

Images without a mask are not indexed (named in a ``ReleaseNote`` with their count, e.g. Shenzhen's
96). A site present in both layouts is refused, naming both: keep one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .checks import EIGHT_BIT, SIXTEEN_BIT, ImageFormat
from .io import DataError
from .releases import Release, note
from .splits import split_patients

SITES = {"montgomery": ("Montgomery", "MontgomerySet"), "shenzhen": ("Shenzhen", "ChinaSet_AllFiles")}
#: image-name prefix of each site in the combined set
PREFIX = {"montgomery": "MCUCXR", "shenzhen": "CHNCXR"}
COMBINED = ("Lung Segmentation", "data/Lung Segmentation")
LAYOUT = ("Montgomery/CXR_png/*.png + Montgomery/ManualMask/{leftMask,rightMask}/*.png and/or "
          "Shenzhen/CXR_png/*.png + Shenzhen/mask/*_mask.png; or the combined set 'Lung Segmentation/CXR_png/*.png + "
          "Lung Segmentation/masks/' (Chest X-ray Masks and Labels)")
#: PNGs; Montgomery's are 12-bit grey (stored as 16-bit PNG), Shenzhen's 8-bit. Masks are checked
#: against their images' sizes by the base (``check_mask_files``).
IMAGE_FORMAT = ImageFormat(frozenset({"PNG"}), EIGHT_BIT | SIXTEEN_BIT, "Montgomery ships 12-bit, Shenzhen 8-bit PNGs")


def _site_dir(root: Path, site: str) -> Path | None:
    for name in SITES[site]:
        if (root / name / "CXR_png").is_dir():
            return root / name
    return None


def _combined_dir(root: Path) -> Path | None:
    for name in COMBINED:
        if (root / name / "CXR_png").is_dir() and (root / name / "masks").is_dir():
            return root / name
    return None


def _site_rows(root: Path, site: str) -> tuple[list[dict], int, str | None]:
    """(rows with masks, images without, the layout read) of one site's per-site folder."""
    d = _site_dir(root, site)
    if d is None:
        return [], 0, None
    rows, bare = [], 0
    for img in sorted((d / "CXR_png").glob("*.png")):
        if site == "montgomery":
            masks = [d / "ManualMask" / side / img.name for side in ("leftMask", "rightMask")]
        else:
            masks = [d / "mask" / f"{img.stem}_mask.png"]
        if all(m.is_file() for m in masks):
            rows.append(_row(img, site, masks))
        else:
            bare += 1
    layout = f"{d.name}/ ({'CXR_png/, ManualMask/' if site == 'montgomery' else 'CXR_png/, mask/*_mask.png'})"
    return rows, bare, layout


def _combined_rows(d: Path, site: str) -> tuple[list[dict], int]:
    rows, bare = [], 0
    for img in sorted((d / "CXR_png").glob(f"{PREFIX[site]}_*.png")):
        candidates = [d / "masks" / f"{img.stem}_mask.png", d / "masks" / img.name]
        mask = next((m for m in candidates if m.is_file()), None)
        if mask is None:
            bare += 1
        else:
            rows.append(_row(img, site, [mask]))
    return rows, bare


#: The image's longer side in mm where the release documents its detector: Montgomery's 4,892 px at
#: 0.0875 mm (Jaeger et al. 2014, "Two public chest X-ray datasets", the set's README). Shenzhen's
#: description gives no pixel size, so its HD95 stays in pixels.
FIELD_MM = {"montgomery": 4892 * 0.0875, "shenzhen": float("nan")}


def _row(img: Path, site: str, masks: list[Path]) -> dict:
    return {"path": str(img), "patient_id": f"{site}:{img.stem}", "site": site,
            "abnormal": float(img.stem.endswith("_1")), "masks": tuple(map(str, masks)), "field_mm": FIELD_MM[site]}


def site_layouts(root: Path, sites: list[str]) -> dict[str, tuple[str, list[dict], int]]:
    """site -> (layout, rows with masks, images without) for each of ``sites`` found under ``root``;
    a site in both layouts is refused."""
    combined = _combined_dir(root)
    out = {}
    for site in sites:
        rows, bare, layout = _site_rows(root, site)
        crow, cbare = _combined_rows(combined, site) if combined is not None else ([], 0)
        if rows and crow:
            raise DataError(f"lungs: {site} images are under {root} in two layouts: {layout} and the combined "
                            f"Chest X-ray Masks and Labels set ({combined.relative_to(root)}/CXR_png, masks/); expected "
                            "one layout per site: move one out")
        if crow:
            rows, bare, layout = crow, cbare, f"{combined.relative_to(root)}/ (Chest X-ray Masks and Labels)"
        if rows:
            out[site] = (layout, rows, bare)
    return out


def detect_release(root: Path, sites: list[str] | None = None) -> Release:
    found = site_layouts(Path(root), list(sites or SITES))
    if not found:
        raise DataError(f"lungs: no image with its mask(s) under {root}. Expected layout: {LAYOUT}")
    name = "; ".join(f"{site}: {layout}, {len(rows)} masked images" for site, (layout, rows, _) in found.items())
    return Release("lungs", f"lung masks ({name})", tuple(layout for layout, _, _ in found.values()), tuple(found),
                   {"masks": {site: len(rows) for site, (_, rows, _) in found.items()},
                    "without_masks": {site: bare for site, (_, _, bare) in found.items()}})


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
        found = site_layouts(self.root, self.train_sites + self.test_sites)
        rows = [r for s in self.train_sites + self.test_sites if s in found for r in found[s][1]]
        if not rows:
            raise DataError(f"lungs: no image with its mask(s) under {self.root}. Expected layout: {LAYOUT}")
        for site, (layout, site_rows, bare) in found.items():
            if bare:
                note(f"lungs: {bare} {site} image(s) of {layout} have no mask ({len(site_rows)} do): not indexed")
        meta = pd.DataFrame(rows)
        labels = pd.DataFrame({"abnormal": meta["abnormal"].to_numpy(np.float32)})
        masks = [("files", m) for m in meta["masks"]]
        index = DatasetIndex("lungs", self.root, meta.drop(columns=["masks"]), labels, "segmentation", masks=masks)
        index.notes["release"] = "; ".join(f"{s}: {layout}" for s, (layout, _, _) in found.items())
        return index

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        site = index.meta["site"]
        pool = np.flatnonzero(site.isin(self.train_sites).to_numpy())
        parts = split_patients(index.meta["patient_id"].iloc[pool], {"train": 1 - self.val_share, "val": self.val_share},
                               self.split_seed)
        out = {k: pool[v] for k, v in parts.items()}
        out["test"] = np.flatnonzero(site.isin(self.test_sites).to_numpy())
        return out
