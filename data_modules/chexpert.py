"""CheXpert (Irvin et al. 2019) as released: CheXpert-v1.0(-small)/train.csv and valid.csv; ``Path`` is
relative to the folder above CheXpert-v1.0-small.

Label values are 1 (positive), 0 (negative), -1 (uncertain) and blank (not mentioned = negative, as
the CheXpert authors treat it). ``uncertainty``: ``ones`` (U-Ones: -1 -> 1), ``zeros`` (-1 -> 0),
``ignore`` (-1 -> NaN: unknown, excluded from the loss and metrics).

Tasks:
- ``findings``: the 14 observations, multi-label.
- ``abnormal`` (STN §III-A): abnormal = any observation other than Support Devices positive after
  the policy; normal = "No Finding" and nothing else positive (support devices ignored). A row that
  is neither (nothing mentioned, or only ignored uncertainties) is ineligible.

Protocols: ``cv`` (STN: 5-fold patient-grouped, stratified CV over train.csv; fold k tests on fold k,
validates on fold k+1, trains on the other three), ``official`` (train.csv with ``val_share`` of
its patients as val; valid.csv as test) and ``labelled_test`` (train.csv trains, valid.csv validates —
or ``val_share`` of train.csv's patients without it —, and CheXpert's labelled test set tests: the 668
images of 500 patients whose radiologist labels CheXlocalize published).

Releases (``detect_release``): ``CheXpert-v1.0-small`` (~320 px JPEGs) and ``CheXpert-v1.0`` (full
resolution; its train.csv's Paths say ``CheXpert-v1.0/…``). With both on disk the input size chooses:
above 320 px (max of ``image_size``, ``eval_size`` and the preset's size: STN's 512) the full release,
else the small one; the choice is named in a ``ReleaseNote``, and so is a small-only folder read at
more than 320 px (upsampled). The labelled test set, as CheXlocalize's README lays it out
(``CheXpert/test_labels.csv`` and ``CheXpert/test/``; also looked for beside train.csv and in the root):
``Path`` = ``test/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg`` relative to the CSV's folder, the 14
observations (0/1), and no Sex/Age/Frontal-Lateral/AP-PA columns (torchxrayvision's
``CheXlocalize_Dataset`` notes the blinded test CSV drops them): Frontal/Lateral is read from the file
name; without AP/PA, protocol ``labelled_test`` needs ``view='any'``. Found but not used by the
protocol, it is named in a ``ReleaseNote``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .checks import (EIGHT_BIT, ImageFormat, check_listed_once, check_patients_apart, check_values_in, check_words_in,
                     where, with_lines)
from .io import DataError, check_images, read_table
from .releases import Release, note
from .splits import grouped_folds, split_patients, stratum_keys

OBSERVATIONS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                "Pleural Other", "Fracture", "Support Devices"]
POLICIES = ("ones", "zeros", "ignore")
VIEWS = ("any", "PA", "AP")
LAYOUT = "CheXpert-v1.0-small/train.csv, CheXpert-v1.0-small/valid.csv and the images at each row's Path"
#: The values the release writes in an observation column (blank: not mentioned), and in its view columns
#: (train.csv writes 'LL' on 16 frontal rows and 'RL' on one; AP/PA is blank on every lateral row).
LABEL_VALUES = (1.0, 0.0, -1.0)
VIEW_VALUES = {"Frontal/Lateral": ("Frontal", "Lateral"), "AP/PA": ("AP", "PA", "LL", "RL")}
#: JPEGs, 8-bit grey (CheXpert-v1.0-small and the full-size release alike).
IMAGE_FORMAT = ImageFormat(frozenset({"JPEG"}), EIGHT_BIT, "CheXpert ships 8-bit JPEGs")


SMALL, FULL = "CheXpert-v1.0-small", "CheXpert-v1.0"
#: The small release's image side (its JPEGs are ~320 px on their short side).
SMALL_SIDE = 320
TEST_LABELS = "test_labels.csv"
PROTOCOLS = ("cv", "official", "labelled_test")


def find_folder(root: Path, size: int | None = None, quiet: bool = False) -> tuple[Path, Path]:
    """(folder holding train.csv, folder that Path entries are relative to). With both releases under
    ``root``, ``size`` (the largest input side) chooses: above 320 px the full one."""
    present = [root / n for n in (SMALL, FULL) if (root / n / "train.csv").is_file()]
    say = (lambda m: None) if quiet else note
    if len(present) == 2:
        full = size is not None and size > SMALL_SIDE
        chosen = present[1] if full else present[0]
        say(f"chexpert: both {SMALL} and {FULL} are under {root}; the input size ({size} px) is "
            f"{'above' if full else 'at most'} {SMALL_SIDE} px, the small release's side: reading {chosen.name}")
        return chosen, root
    if present:
        if present[0].name == SMALL and size is not None and size > SMALL_SIDE:
            say(f"chexpert: only {SMALL} is under {root}: the {size} px inputs are upsampled from its ~{SMALL_SIDE} px "
                f"images; put {FULL} beside it to read full-resolution images")
        return present[0], root
    if (root / "train.csv").is_file():
        return root, root.parent
    raise DataError(f"chexpert: no CheXpert-v1.0-small/train.csv (or CheXpert-v1.0/) under {root}. Expected layout: {LAYOUT}")


def find_test_labels(root: Path, folder: Path) -> Path | None:
    """CheXlocalize's labelled test set (``test_labels.csv``), where a download puts it, or None."""
    for candidate in (root / "CheXpert" / TEST_LABELS, folder / TEST_LABELS, root / TEST_LABELS):
        if candidate.is_file():
            return candidate
    return None


def detect_release(root: Path, size: int | None = None) -> Release:
    """The CheXpert release the DataModule reads under ``root`` at input side ``size``."""
    folder, base = find_folder(Path(root), size, quiet=True)
    test = find_test_labels(Path(root), folder)
    files = [str((folder / "train.csv").relative_to(base))]
    if (folder / "valid.csv").is_file():
        files.append(str((folder / "valid.csv").relative_to(base)))
    if test is not None:
        files.append(str(test.relative_to(base)))
    name = {SMALL: "CheXpert-v1.0-small", FULL: "CheXpert-v1.0 (full resolution)"}.get(folder.name, "CheXpert")
    if test is not None:
        name += " with CheXlocalize's labelled test set"
    protocols = ("cv", "official") + (("labelled_test",) if test is not None else ())
    return Release("chexpert", name, tuple(files), protocols, {"folder": str(folder), "test_labels": test})


def read_test_labels(path: Path, base: Path) -> pd.DataFrame:
    """test_labels.csv (CheXlocalize) as train.csv's columns: Path made relative to ``base`` (the folder
    train.csv's Paths are relative to), Frontal/Lateral from the file name where the CSV has none, AP/PA
    blank where it has none (``_ap_pa_listed`` False)."""
    df = with_lines(read_table(path, ["Path", *OBSERVATIONS], LAYOUT), path)
    rel = df["Path"].astype(str).str.replace(r"^CheXpert-v1\.0(-small)?/", "", regex=True)
    prefix = path.parent.relative_to(base).as_posix()
    df["Path"] = [f"{prefix}/{p}" if prefix != "." else p for p in rel]
    if "Frontal/Lateral" not in df:
        df["Frontal/Lateral"] = np.where(rel.str.contains("_lateral", case=False), "Lateral", "Frontal")
    df["_ap_pa_listed"] = "AP/PA" in df
    if "AP/PA" not in df:
        df["AP/PA"] = ""
    df["_file"] = "test"
    return df


def check_table(table: pd.DataFrame) -> None:
    """train.csv and valid.csv rows (with their lines, ``checks.with_lines``; ``_file`` the split)
    against the release: label values 1 / 0 / -1 / blank, the view columns' words, a patient folder in
    every Path, each Path on one row, and no patient in both files (valid.csv is the official test)."""
    check_values_in(table, OBSERVATIONS, LABEL_VALUES, "chexpert",
                    "1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned)")
    check_words_in(table, "Frontal/Lateral", VIEW_VALUES["Frontal/Lateral"], "chexpert", "'Frontal' or 'Lateral'")
    frontal = (table["Frontal/Lateral"] == "Frontal").to_numpy()
    if "_ap_pa_listed" in table:  # CheXlocalize's test_labels.csv has no AP/PA column
        frontal = frontal & table["_ap_pa_listed"].fillna(True).astype(bool).to_numpy()
    check_words_in(table[frontal].reset_index(drop=True), "AP/PA", VIEW_VALUES["AP/PA"], "chexpert",
                   f"one of {list(VIEW_VALUES['AP/PA'])} on a frontal view")
    patient = table["Path"].astype(str).str.extract(r"^[^/]+/[^/]+/(patient[^/]*)/.", expand=False)
    bad = patient.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"chexpert: {where(table, i)}, column 'Path': {table['Path'].iloc[i]!r} has no patient folder; "
                        "expected CheXpert-v1.0-small/<train|valid>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg")
    check_listed_once(table, "Path", "chexpert", "image", fields_ignored=["_file", "_ap_pa_listed"])
    check_patients_apart(table, patient, table["_file"], "valid", ["train"], "chexpert",
                         " (valid.csv is the official test set: its 200 patients have no image in train.csv)")
    if "_file" in table and (table["_file"] == "test").any():
        check_patients_apart(table, patient, table["_file"], "test", ["train", "valid"], "chexpert",
                             " (the labelled test set's 500 patients have no image in train.csv or valid.csv)")


def check_release_paths(train: pd.DataFrame, folder: Path, base: Path) -> None:
    """train.csv's Paths under the folder it ships in (a full release's train.csv in the small folder
    would read each image from the other release)."""
    if folder == base:
        return
    first = train["Path"].astype(str).str.split("/").str[0]
    bad = (first != folder.name).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"chexpert: {where(train, i)}, column 'Path': {train['Path'].iloc[i]!r} is not under "
                        f"{folder.name}/ ({int(bad.sum())} such row(s)); expected the Paths of {folder.name}'s own "
                        f"train.csv ({folder.name}/train/patientNNNNN/…)")


def apply_policy(raw: pd.DataFrame, policy: str) -> pd.DataFrame:
    if policy not in POLICIES:
        raise DataError(f"chexpert: uncertainty must be one of {POLICIES}, got {policy!r}")
    vals = raw[OBSERVATIONS].astype(float).fillna(0.0)
    return vals.replace(-1.0, {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[policy])


def abnormal_labels(findings: pd.DataFrame) -> pd.Series:
    """STN task: 1 abnormal, 0 normal, NaN neither."""
    disease = findings.drop(columns=["No Finding", "Support Devices"])
    any_pos = (disease == 1).any(axis=1)
    normal = (findings["No Finding"] == 1) & ~any_pos
    out = pd.Series(np.nan, index=findings.index, dtype=np.float32)
    out[any_pos] = 1.0
    out[normal] = 0.0
    return out


def index_from_table(root: Path, base: Path, table: pd.DataFrame, task: str, policy: str,
                     frontal_only: bool, view: str) -> DatasetIndex:
    findings = apply_policy(table, policy)
    if task == "findings":
        labels = findings.astype(np.float32).reset_index(drop=True)
    elif task == "abnormal":
        labels = pd.DataFrame({"Abnormal": abnormal_labels(findings).to_numpy()})
    else:
        raise DataError(f"chexpert: task must be 'findings' or 'abnormal', got {task!r}")
    eligible = ~labels.isna().all(axis=1).to_numpy()
    if frontal_only:
        eligible &= (table["Frontal/Lateral"] == "Frontal").to_numpy()
    if view not in VIEWS:
        raise DataError(f"chexpert: view must be one of {VIEWS}, got {view!r}")
    if view != "any":
        eligible &= (table["AP/PA"] == view).to_numpy()
    meta = pd.DataFrame({
        "path": [str(base / p) for p in table["Path"]],
        "rel_path": table["Path"].to_numpy(),
        "patient_id": table["Path"].str.split("/").str[2].to_numpy(),
        "split_file": table["_file"].to_numpy() if "_file" in table else "train",
        "Frontal/Lateral": table["Frontal/Lateral"].to_numpy(),
        "AP/PA": table["AP/PA"].to_numpy(),
    })
    return DatasetIndex("chexpert", root, meta, labels, "multilabel" if task == "findings" else "binary", eligible=eligible)


class CheXpert(CXRDataModule):
    name = "chexpert"
    image_format = IMAGE_FORMAT

    def __init__(self, root: str, task: str = "abnormal", uncertainty: str = "ones", frontal_only: bool = True,
                 view: str = "PA", protocol: str = "cv", fold: int = 0, n_folds: int = 5,
                 val_share: float = 0.1, **kwargs):
        super().__init__(root, **kwargs)
        if protocol not in PROTOCOLS:
            raise DataError(f"chexpert: protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if not (0 <= fold < n_folds):
            raise DataError(f"chexpert: fold must be in [0, {n_folds}), got {fold}")
        if uncertainty not in POLICIES:
            raise DataError(f"chexpert: uncertainty must be one of {POLICIES}, got {uncertainty!r}")
        self.task_name, self.policy, self.frontal_only, self.view = task, uncertainty, frontal_only, view
        self.protocol, self.fold, self.n_folds, self.val_share = protocol, fold, n_folds, val_share

    def input_side(self) -> int:
        """The largest side the images are read at (training, evaluation, the preset's default)."""
        from .transforms import DEFAULT_SIZE

        train = int(self.image_size or DEFAULT_SIZE.get(self.preset, 0))
        return max(train, int(self.eval_size or 0))

    def build_index(self) -> DatasetIndex:
        self._require_root(LAYOUT)
        folder, base = find_folder(self.root, self.input_side())
        required = ["Path", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]
        tables = []
        for split in ("train", "valid"):
            f = folder / f"{split}.csv"
            if split == "valid" and not f.is_file() and self.protocol in ("cv", "labelled_test"):
                continue
            t = with_lines(read_table(f, required, LAYOUT), f)
            t["_file"] = split
            tables.append(t)
        check_release_paths(tables[0], folder, base)
        test = find_test_labels(self.root, folder)
        if self.protocol == "labelled_test":
            if test is None:
                raise DataError(f"chexpert: protocol 'labelled_test' needs CheXpert's labelled test set: no "
                                f"{TEST_LABELS} in {self.root / 'CheXpert'}, {folder} or {self.root}. Download "
                                "CheXlocalize (Stanford AIMI) and put its CheXpert/test_labels.csv and CheXpert/test/ "
                                "under the root")
            tables.append(read_test_labels(test, base))
            if self.view != "any" and not tables[-1]["_ap_pa_listed"].all():
                raise DataError(f"chexpert: {test} has no AP/PA column (CheXlocalize's test labels drop it), so view "
                                f"{self.view!r} cannot select its images; use view='any' (frontal_only still applies: "
                                "its file names say frontal or lateral)")
        elif test is not None:
            note(f"chexpert: found CheXpert's labelled test set {test} (CheXlocalize); protocol {self.protocol!r} "
                 "does not read it, protocol 'labelled_test' tests on it")
        table = pd.concat(tables, ignore_index=True)
        check_table(table)
        present = check_images([str(base / p) for p in table["Path"]], self.on_missing, "chexpert")
        table = table[present].reset_index(drop=True)
        index = index_from_table(self.root, base, table, self.task_name, self.policy, self.frontal_only, self.view)
        index.notes["release"] = folder.name + (f" + {test.relative_to(self.root)}" if test is not None
                                                and self.protocol == "labelled_test" else "")
        return index

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        splits = chexpert_splits(index, self.protocol, self.fold, self.n_folds, self.split_seed, self.val_share)
        if index.task == "binary":
            where = f"fold {self.fold} of {self.n_folds}" if self.protocol == "cv" else f"protocol {self.protocol!r}"
            require_both_classes(index, splits, where)
        return splits


def require_both_classes(index: DatasetIndex, splits: dict[str, np.ndarray], where: str) -> None:
    """A binary split without one of its classes has no AUC and no recall operating point: refuse it
    before any training, naming the split and its counts."""
    y = index.labels.iloc[:, 0].to_numpy()
    for name in ("train", "val", "test"):
        rows = splits.get(name)
        if rows is None or len(rows) == 0:
            continue  # an empty split is reported by the base with the filters that emptied it
        pos, neg = int(np.sum(y[rows] == 1)), int(np.sum(y[rows] == 0))
        if pos == 0 or neg == 0:
            raise DataError(
                f"chexpert: split '{name}' of {where} has {pos} abnormal and {neg} normal images; AUC, the weighted "
                "sampler and the 95%-recall operating point need both classes in every split. Use more images "
                "(a larger twin), fewer folds, or a wider view filter (view='any')")


def chexpert_splits(index: DatasetIndex, protocol: str, fold: int, n_folds: int, seed: int,
                    val_share: float) -> dict[str, np.ndarray]:
    meta, ok = index.meta, index.eligible
    keys = stratum_keys(index.labels)
    train_file = (meta["split_file"] == "train").to_numpy()
    pool = np.flatnonzero(ok & train_file)
    if protocol == "labelled_test":
        out = {"test": np.flatnonzero(ok & (meta["split_file"] == "test").to_numpy())}
        valid = np.flatnonzero(ok & (meta["split_file"] == "valid").to_numpy())
        if len(valid):
            return {"train": pool, "val": valid, **out}
        parts = split_patients(meta["patient_id"].iloc[pool], {"train": 1 - val_share, "val": val_share}, seed,
                               strata=keys.iloc[pool])
        return {**{k: pool[v] for k, v in parts.items()}, **out}
    if protocol == "cv":
        folds = grouped_folds(meta["patient_id"].iloc[pool], keys.iloc[pool], n_folds, seed)
        val_fold = (fold + 1) % n_folds
        return {"train": pool[(folds != fold) & (folds != val_fold)], "val": pool[folds == val_fold],
                "test": pool[folds == fold]}
    parts = split_patients(meta["patient_id"].iloc[pool], {"train": 1 - val_share, "val": val_share}, seed,
                           strata=keys.iloc[pool])
    out = {k: pool[v] for k, v in parts.items()}
    out["test"] = np.flatnonzero(ok & (meta["split_file"] == "valid").to_numpy())
    return out
