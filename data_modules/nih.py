"""NIH ChestX-ray14 (Wang et al. 2017) as released: Data_Entry_2017(_v2020).csv, BBox_List_2017.csv,
train_val_list.txt / test_list.txt, PNGs under any images*/ folder.

Protocols:
- ``official``: the release's train_val / test lists; ``val_share`` of train_val patients for val.
- ``rgt`` (RGT §IV-A): the 880 box images are held out (the ``loc`` split, never trained on) and the
  rest of the dataset is split 70/10/20 by patient, the box patients' other images like any other
  (the paper's partition). ``box_patients='exclude'`` is stricter: no image of a box patient in train,
  val or test. (Pinning the box patients to test, as cxrbench did before, put 63% of the test images
  on 726 patients and drifted the test prevalences from train.)
- ``amm`` (Cardio-XAttentionNet, Data preprocessing): the official patient-wise split, 10% of train
  as val (the paper's cardiomegaly-vs-normal task is ``label_set='cardiomegaly'``).

Label sets: ``nih14``; ``nih8`` (the 8 box diseases); ``cardiomegaly`` (any image labelled
Cardiomegaly vs "No Finding"; every other image is ineligible); ``abnormal`` (CAMContrast's coarse
label: any finding vs "No Finding", a binary task).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .io import DataError, check_images, read_table, require_file
from .splits import split_patients, stratum_keys

NIH14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
         "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
NIH8 = NIH14[:8]
LABEL_SETS = {"nih14": NIH14, "nih8": NIH8, "cardiomegaly": ["Cardiomegaly"], "abnormal": ["Abnormal"]}
PROTOCOLS = ("official", "rgt", "amm")
LAYOUT = ("Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv), BBox_List_2017.csv, train_val_list.txt, "
          "test_list.txt and PNGs under images*/ (e.g. images_001/images/00000001_000.png)")
BOX_ALIASES = {"Infiltrate": "Infiltration"}


def entries_file(root: Path) -> Path:
    for name in ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"nih: no Data_Entry_2017.csv or Data_Entry_2017_v2020.csv in {root}. Expected layout: {LAYOUT}")


def labels_from_entries(entries: pd.DataFrame, label_set: str) -> pd.DataFrame:
    """Multi-hot labels of a label set; NaN where the row is outside the task (cardiomegaly set)."""
    if label_set not in LABEL_SETS:
        raise DataError(f"nih: label_set must be one of {list(LABEL_SETS)}, got {label_set!r}")
    if label_set == "abnormal":  # CAMContrast's coarse labels: "No Finding" = normal, anything else abnormal
        return pd.DataFrame({"Abnormal": (entries["Finding Labels"] != "No Finding").astype(np.float32).to_numpy()})
    findings = entries["Finding Labels"].astype(str).str.split("|")
    hot = pd.DataFrame({c: findings.map(lambda f, c=c: c in f).astype(np.float32) for c in NIH14})
    labels = hot[LABEL_SETS[label_set]].copy()
    if label_set == "cardiomegaly":
        normal = entries["Finding Labels"] == "No Finding"
        labels.loc[~(normal | (hot["Cardiomegaly"] == 1)), "Cardiomegaly"] = np.nan
    return labels


def boxes_table(raw: pd.DataFrame, rows_of: dict[str, int]) -> pd.DataFrame:
    """The box file (``Bbox [x``, ``y``, ``w``, ``h]`` + empty columns) -> row, label, x0, y0, x1, y1."""
    raw = raw[raw["Image Index"].isin(rows_of)]
    x, y, w, h = (raw[c].astype(float).to_numpy() for c in ("Bbox [x", "y", "w", "h]"))
    if ((w <= 0) | (h <= 0)).any():
        raise DataError("nih: BBox_List_2017.csv has boxes with non-positive width or height")
    return pd.DataFrame({
        "row": raw["Image Index"].map(rows_of).to_numpy(),
        "label": raw["Finding Label"].replace(BOX_ALIASES).to_numpy(),
        "x0": x, "y0": y, "x1": x + w, "y1": y + h,
    })


def find_images(root: Path) -> dict[str, str]:
    return {p.name: str(p) for p in root.glob("images*/**/*.png")}


class NIH(CXRDataModule):
    """NIH ChestX-ray14. See the module docstring for protocols and label sets."""

    name = "nih"

    def __init__(self, root: str, protocol: str = "official", label_set: str = "nih14",
                 val_share: float = 0.1, box_patients: str = "split", **kwargs):
        super().__init__(root, **kwargs)
        if box_patients not in ("split", "exclude"):
            raise DataError(f"nih: box_patients must be 'split' or 'exclude', got {box_patients!r}")
        self.box_patients = box_patients
        if protocol not in PROTOCOLS:
            raise DataError(f"nih: protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if label_set not in LABEL_SETS:
            raise DataError(f"nih: label_set must be one of {list(LABEL_SETS)}, got {label_set!r}")
        self.protocol, self.label_set, self.val_share = protocol, label_set, val_share

    def build_index(self) -> DatasetIndex:
        self._require_root(LAYOUT)
        path = entries_file(self.root)
        entries = read_table(path, ["Image Index", "Finding Labels", "Patient ID"], LAYOUT)
        images = find_images(self.root)
        paths = [images.get(n, str(self.root / "images" / n)) for n in entries["Image Index"]]
        present = check_images(paths, self.on_missing, f"nih ({path.name})")
        entries = entries[present].reset_index(drop=True)
        paths = [p for p, ok in zip(paths, present) if ok]
        return index_from_entries(self.root, entries, paths, self.label_set, self._read_boxes(entries))

    def _read_boxes(self, entries: pd.DataFrame) -> pd.DataFrame | None:
        f = self.root / "BBox_List_2017.csv"
        if not f.is_file():
            if self.protocol == "rgt":
                raise DataError(f"nih: protocol 'rgt' needs the box file {f}. Expected layout: {LAYOUT}")
            return None
        raw = read_table(f, ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"], LAYOUT)
        return boxes_table(raw, {n: i for i, n in enumerate(entries["Image Index"])})

    def _official_lists(self) -> tuple[set, set]:
        lists = []
        for name in ("train_val_list.txt", "test_list.txt"):
            f = require_file(self.root / name, f"nih protocol {self.protocol!r}", LAYOUT)
            lists.append(set(f.read_text().split()))
        return lists[0], lists[1]

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        lists = self._official_lists() if self.protocol in ("official", "amm") else None
        return nih_splits(index, self.protocol, self.split_seed, self.val_share, lists, self.box_patients)


def index_from_entries(root: Path, entries: pd.DataFrame, paths: list[str], label_set: str,
                       boxes: pd.DataFrame | None) -> DatasetIndex:
    meta = pd.DataFrame({
        "path": paths,
        "image": entries["Image Index"].to_numpy(),
        "patient_id": entries["Patient ID"].astype(str).to_numpy(),
    })
    for col in ("Patient Age", "Patient Gender", "View Position", "Finding Labels"):
        if col in entries:
            meta[col] = entries[col].to_numpy()
    labels = labels_from_entries(entries, label_set)
    task = "binary" if labels.shape[1] == 1 else "multilabel"
    return DatasetIndex("nih", Path(root), meta, labels, task, boxes=boxes)


def nih_splits(index: DatasetIndex, protocol: str, seed: int, val_share: float,
               lists: tuple[set, set] | None = None, box_patients: str = "split") -> dict[str, np.ndarray]:
    meta, ok = index.meta, index.eligible
    keys = stratum_keys(index.labels)
    if protocol in ("official", "amm"):
        train_val, test_list = lists
        in_test = meta["image"].isin(test_list).to_numpy()
        in_tv = meta["image"].isin(train_val).to_numpy()
        tv_rows = np.flatnonzero(in_tv & ok)
        parts = split_patients(meta["patient_id"].iloc[tv_rows], {"train": 1 - val_share, "val": val_share},
                               seed, strata=keys.iloc[tv_rows])
        out = {k: tv_rows[v] for k, v in parts.items()}
        out["test"] = np.flatnonzero(in_test & ok)
        boxed = index.rows_with_boxes()
        out["loc"] = boxed[ok[boxed]] if len(boxed) else boxed
        return out
    # rgt (§IV-A): the box images held out for localization, the rest 70/10/20 by patient.
    boxed = index.rows_with_boxes()
    if len(boxed) == 0:
        raise DataError("nih: protocol 'rgt' needs box images (BBox_List_2017.csv rows for indexed images)")
    is_box = np.zeros(len(meta), bool)
    is_box[boxed] = True
    pool = np.flatnonzero(ok & ~is_box)
    if box_patients == "exclude":  # stricter: no image of a box patient in train, val or test
        pool = pool[~meta["patient_id"].iloc[pool].isin(set(meta["patient_id"].iloc[boxed])).to_numpy()]
    elif box_patients != "split":
        raise DataError(f"nih: box_patients must be 'split' (the paper) or 'exclude', got {box_patients!r}")
    parts = split_patients(meta["patient_id"].iloc[pool], {"train": 0.7, "val": 0.1, "test": 0.2}, seed,
                           strata=keys.iloc[pool])
    out = {k: pool[v] for k, v in parts.items()}
    out["loc"] = boxed
    return out
