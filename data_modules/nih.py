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
- ``camcontrast`` (CAMContrast Table 1: 69,044 / 17,480 / 25,596): the official lists, 20% of train_val
  for validation by patient ("for datasets without official validation split, 20% of the training
  split is selected for validation", §4; ``val_share`` is not read). Test (25,596) and train + val
  (86,524) are the paper's exactly; val is 20% of the train_val *images* by patient, about 17,305, not
  the paper's 17,480 (20.2%): that number comes from the paper's own draw of patients, which is not
  published, so no split can reproduce it from the label files. ``official`` with its default
  ``val_share`` 0.1 (~77.9k / 8.7k) is what the shared linear-probe config runs.

Oracle boxes (``oracle_boxes``, a file in BBox_List_2017's columns, e.g. the twin's twin_boxes.csv):
every batch carries one box per class (``oracle_boxes``, ``oracle_known``), for RGT's oracle-box
experiment (``RGT(box_source='oracle')``). The file must name every indexed image; a class it gives no
box for an image is flagged unknown. It never moves an image between splits: the box file does that.

Label sets: ``nih14``; ``nih8`` (the 8 box diseases); ``cardiomegaly`` (any image labelled
Cardiomegaly vs "No Finding"; every other image is ineligible); ``abnormal`` (CAMContrast's coarse
label: any finding vs "No Finding", a binary task).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .checks import (EIGHT_BIT, FILE, ImageFormat, check_listed_once, check_numbers, check_patients_apart,
                     check_words_in, where, with_lines)
from .io import DataError, check_images, read_table, require_file
from .releases import note
from .splits import split_patients, stratum_keys

NIH14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
         "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
NIH8 = NIH14[:8]
LABEL_SETS = {"nih14": NIH14, "nih8": NIH8, "cardiomegaly": ["Cardiomegaly"], "abnormal": ["Abnormal"]}
PROTOCOLS = ("official", "rgt", "amm", "camcontrast")
#: CAMContrast §4: 20% of a training split without an official validation split.
CAMCONTRAST_VAL_SHARE = 0.2
LAYOUT = ("Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv), BBox_List_2017.csv, train_val_list.txt, "
          "test_list.txt and PNGs under images*/ (e.g. images_001/images/00000001_000.png)")
BOX_ALIASES = {"Infiltrate": "Infiltration"}
NO_FINDING = "No Finding"
LIST_FILES = ("train_val_list.txt", "test_list.txt")
#: The release ships 8-bit PNGs, about 1% of them RGBA (read as grey); no 16-bit or JPEG file.
IMAGE_FORMAT = ImageFormat(frozenset({"PNG"}), EIGHT_BIT, "NIH ships 8-bit PNGs")


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


def check_entries(entries: pd.DataFrame) -> None:
    """Data_Entry rows (with their lines, ``checks.with_lines``) against themselves and the release's
    vocabulary: one row per image, findings among the 14 and "No Finding" (alone), a patient id."""
    check_listed_once(entries, "Image Index", "nih", "image")
    check_words_in(entries, "Finding Labels", [*NIH14, NO_FINDING], "nih",
                   f"'|'-separated findings among {NIH14} or {NO_FINDING!r} alone", sep="|")
    text = entries["Finding Labels"].astype(str)
    mixed = (text.str.contains(NO_FINDING, regex=False) & text.str.contains("|", regex=False)).to_numpy()
    if mixed.any():
        i = int(np.flatnonzero(mixed)[0])
        raise DataError(f"nih: {where(entries, i)}, column 'Finding Labels': {entries['Finding Labels'].iloc[i]!r} "
                        f"lists findings with {NO_FINDING!r}; expected {NO_FINDING!r} alone or findings without it")
    blank = entries["Patient ID"].isna().to_numpy() | (entries["Patient ID"].astype(str).str.strip() == "").to_numpy()
    if blank.any():
        i = int(np.flatnonzero(blank)[0])
        raise DataError(f"nih: {where(entries, i)}, column 'Patient ID' is blank; expected the patient's number "
                        "(splits are patient-disjoint)")


def check_box_rows(raw: pd.DataFrame, entries: pd.DataFrame) -> None:
    """BBox_List rows (with their lines) against themselves and Data_Entry (every listed image, before
    any absent image is skipped): numeric boxes of positive size, a finding of the release, an image
    of Data_Entry that carries that finding, and no row twice."""
    check_numbers(raw, ["Bbox [x", "y", "w", "h]"], "nih", "box pixels (x, y, w, h) in the 1024² image",
                  positive=["w", "h]"])
    check_words_in(raw, "Finding Label", [*NIH14, *BOX_ALIASES], "nih",
                   f"one of the findings {NIH14} (the box file writes 'Infiltrate' for 'Infiltration')")
    check_listed_once(raw, ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"], "nih", "box")
    boxed = entries[entries["Image Index"].isin(set(raw["Image Index"]))]  # 880 of 112,120 in the release
    findings = dict(zip(boxed["Image Index"], boxed["Finding Labels"].astype(str).str.split("|")))
    unknown = ~raw["Image Index"].isin(findings).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise DataError(f"nih: {where(raw, i)}: box image {raw['Image Index'].iloc[i]!r} has no row in Data_Entry "
                        f"({int(unknown.sum())} such box row(s)); expected every box on an image of Data_Entry")
    label = raw["Finding Label"].replace(BOX_ALIASES)
    off = np.array([lab not in findings[n] for n, lab in zip(raw["Image Index"], label)], bool)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        n = raw["Image Index"].iloc[i]
        raise DataError(f"nih: {where(raw, i)}: a box of finding {raw['Finding Label'].iloc[i]!r} on image {n!r}, "
                        f"whose Data_Entry findings are {'|'.join(findings[n])!r}; expected each box's finding among "
                        "its image's findings")


def read_oracle_boxes(f: Path, entries: pd.DataFrame) -> pd.DataFrame:
    """An oracle box file (BBox_List_2017's columns) for the indexed ``entries``: boxes of positive size,
    findings of the release, and a row for every indexed image (an image without one would silently
    get no oracle box)."""
    expected = ("BBox_List_2017.csv's columns (Image Index, Finding Label, Bbox [x, y, w, h]), one row per box; "
                "the NIH twin writes twin_boxes.csv")
    f = require_file(f, "nih option oracle_boxes", expected)
    raw = with_lines(read_table(f, ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"], expected), f)
    check_numbers(raw, ["Bbox [x", "y", "w", "h]"], "nih", "box pixels (x, y, w, h) in the image file",
                  positive=["w", "h]"])
    check_words_in(raw, "Finding Label", [*NIH14, *BOX_ALIASES], "nih", f"one of the findings {NIH14}")
    names = entries["Image Index"]
    missing = ~names.isin(set(raw["Image Index"])).to_numpy()
    if missing.any():
        raise DataError(f"nih: oracle box file {f} has no row for {int(missing.sum())} of the {len(names)} indexed "
                        f"image(s) (e.g. {names[missing].iloc[0]!r}); expected at least one box per image")
    return boxes_table(raw, {n: i for i, n in enumerate(names)})


def read_official_lists(root: Path, what: str) -> pd.DataFrame:
    """train_val_list.txt and test_list.txt as one table (image, file, line): no image on two lines."""
    parts = []
    for name in LIST_FILES:
        f = require_file(root / name, what, LAYOUT)
        names = [line.strip() for line in f.read_text().splitlines()]
        table = with_lines(pd.DataFrame({"Image Index": names}), f, header=False)
        parts.append(table[table["Image Index"] != ""])
    table = pd.concat(parts, ignore_index=True)
    check_listed_once(table, "Image Index", "nih", "image")
    return table


def check_official_lists(meta: pd.DataFrame, lists: pd.DataFrame) -> None:
    """The official lists against the index: every indexed image in one of them (else it would be
    dropped silently), and no patient in both (the official split is patient-wise)."""
    listed = set(lists["Image Index"])
    unlisted = ~meta["image"].isin(listed).to_numpy()
    if unlisted.any():
        names = meta["image"][unlisted].tolist()
        raise DataError(f"nih: {len(names)} image(s) of Data_Entry are in neither {LIST_FILES[0]} nor {LIST_FILES[1]} "
                        f"(e.g. {names[:3]}); expected every image in exactly one official list")
    patient_of = dict(zip(meta["image"], meta["patient_id"]))
    known = lists[lists["Image Index"].isin(patient_of)].reset_index(drop=True)
    check_patients_apart(known, known["Image Index"].map(patient_of), known[FILE], LIST_FILES[1],
                         [LIST_FILES[0]], "nih", " (the official lists split by patient)")


def find_images(root: Path) -> dict[str, str]:
    return {p.name: str(p) for p in root.glob("images*/**/*.png")}


class NIH(CXRDataModule):
    """NIH ChestX-ray14. See the module docstring for protocols and label sets."""

    name = "nih"
    image_format = IMAGE_FORMAT

    def __init__(self, root: str, protocol: str = "official", label_set: str = "nih14",
                 val_share: float = 0.1, box_patients: str = "split", oracle_boxes: str | None = None, **kwargs):
        super().__init__(root, **kwargs)
        self.oracle_boxes = oracle_boxes
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
        entries = with_lines(read_table(path, ["Image Index", "Finding Labels", "Patient ID"], LAYOUT), path)
        check_entries(entries)
        all_entries = entries
        images = find_images(self.root)
        paths = [images.get(n, str(self.root / "images" / n)) for n in entries["Image Index"]]
        present = check_images(paths, self.on_missing, f"nih ({path.name})")
        entries = entries[present].reset_index(drop=True)
        paths = [p for p, ok in zip(paths, present) if ok]
        index = index_from_entries(self.root, entries, paths, self.label_set, self._read_boxes(entries, all_entries))
        if self.oracle_boxes is not None:
            index.oracle_file = self.root / self.oracle_boxes  # an absolute path stays itself
            index.oracle_boxes = read_oracle_boxes(index.oracle_file, entries)
        return index

    def _read_boxes(self, entries: pd.DataFrame, all_entries: pd.DataFrame | None = None) -> pd.DataFrame | None:
        """The boxes of ``entries`` (the indexed rows), checked against ``all_entries`` (every row of
        Data_Entry, absent images included; default: ``entries``)."""
        f = self.root / "BBox_List_2017.csv"
        if not f.is_file():
            if self.protocol == "rgt":
                raise DataError(f"nih: protocol 'rgt' needs the box file {f}. Expected layout: {LAYOUT}")
            return None
        raw = with_lines(read_table(f, ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"], LAYOUT), f)
        check_box_rows(raw, entries if all_entries is None else all_entries)
        return boxes_table(raw, {n: i for i, n in enumerate(entries["Image Index"])})

    def _official_lists(self) -> tuple[set, set]:
        table = self._official_list_table()
        return tuple(set(table.loc[table[FILE] == name, "Image Index"]) for name in LIST_FILES)

    def _official_list_table(self) -> pd.DataFrame:
        return read_official_lists(self.root, f"nih protocol {self.protocol!r}")

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        lists = None
        if self.protocol in ("official", "amm", "camcontrast"):
            table = self._official_list_table()
            check_official_lists(index.meta, table)
            lists = tuple(set(table.loc[table[FILE] == name, "Image Index"]) for name in LIST_FILES)
            self._note_box_images(index, lists)
        return nih_splits(index, self.protocol, self.split_seed, self.val_share, lists, self.box_patients)


    @staticmethod
    def _note_box_images(index: DatasetIndex, lists: tuple[set, set]) -> None:
        """Where the box images lie in the official lists: if all are in test_list.txt, a model trained on
        train_val (CAMContrast's stage 1 of Table 8) never saw them and could score nih8-loc itself,
        without the RGT protocol's second stage 1 (issue 29; to be read on the real lists)."""
        boxed = set(index.meta["image"].iloc[index.rows_with_boxes()])
        if boxed:
            in_test = len(boxed & lists[LIST_FILES.index("test_list.txt")])
            note(f"nih: {in_test} of the {len(boxed)} box images are in test_list.txt"
                 + ("" if in_test == len(boxed) else f", {len(boxed) - in_test} in train_val_list.txt"))


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
    if protocol in ("official", "amm", "camcontrast"):
        val_share = CAMCONTRAST_VAL_SHARE if protocol == "camcontrast" else val_share
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
