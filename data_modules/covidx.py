"""COVIDx CXR (Wang et al.) as released: train.txt, val.txt (newer releases), test.txt with lines
``patient_id filename label source`` and images in train/, val/, test/.

Both label vocabularies are read: ``normal / pneumonia / COVID-19`` (CXR-2/3) and
``positive / negative`` (CXR-4, COVID-19 vs rest). Tasks (SS-CXR Tables 1–4):
``3class``; ``covid_vs_rest``; ``pathology_vs_healthy`` (pneumonia or COVID-19 vs normal);
``pneumonia_vs_covid`` (normals ineligible); ``pneumonia_vs_rest`` (pneumonia vs normal or COVID-19,
Table 3's "pneumonia / non-pneumonia"). ``held_out_sources`` are removed from train/val/test and
returned as the ``shift`` split: the distribution-shift test set. A held-out name that no row
carries, or that a row carries only up to case or punctuation ("COHEN" for "cohen"), is an error:
either would let a held-out site into training silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .checks import (EIGHT_BIT, FILE, LINE, SIXTEEN_BIT, ImageFormat, check_listed_once, check_patients_apart, where,
                     with_lines)
from .io import DataError, check_images, require_file
from .splits import split_patients, stratum_keys

TASKS = {
    "3class": ["normal", "pneumonia", "COVID-19"],
    "covid_vs_rest": ["COVID-19"],
    "pathology_vs_healthy": ["pathology"],
    "pneumonia_vs_covid": ["COVID-19"],
    "pneumonia_vs_rest": ["pneumonia"],
}
LAYOUT = "train.txt, test.txt (and val.txt) with lines 'patient_id filename label source'; images in train/, val/, test/"
VOCAB_3 = {"normal", "pneumonia", "COVID-19"}
VOCAB_2 = {"positive", "negative"}
#: PNG and JPEG files from many sites. The releases do not document one bit depth for every site (some
#: sources publish 16-bit originals), so 16-bit grey is accepted and read as the others are; anything
#: else (a DICOM or TIFF under a .png name, 1-bit or 32-bit pixels) is refused.
IMAGE_FORMAT = ImageFormat(frozenset({"PNG", "JPEG"}), EIGHT_BIT | SIXTEEN_BIT, "COVIDx ships PNGs and JPEGs")


def read_list(path) -> pd.DataFrame:
    """A list file's rows, with the file's name and each row's line (``checks.FILE``, ``checks.LINE``)."""
    rows, lines = [], []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 4:
            raise DataError(f"{path}:{k}: expected 'patient_id filename label source', got {line!r}")
        rows.append(parts[:4])
        lines.append(k)
    table = with_lines(pd.DataFrame(rows, columns=["patient_id", "filename", "label", "source"]), path, header=False)
    table[LINE] = np.asarray(lines, int)  # blank lines skipped: keep each row's own line
    return table


def check_lists(table: pd.DataFrame) -> None:
    """The list files against each other, before any image is looked for: one vocabulary, each filename
    on one row of one list (not twice, not with two labels, not in two splits), and no patient of the
    test list in train or val (a patient is (source, patient_id): ids are per-site strings)."""
    check_vocabulary(table)
    check_listed_once(table, "filename", "covidx", "image", fields_ignored=["split_file", "path"])
    patient = table["source"].astype(str) + ":" + table["patient_id"].astype(str)
    check_patients_apart(table, patient, table["split_file"], "test", ["train", "val"], "covidx",
                         " (a patient is its source and patient_id)")


def check_vocabulary(table: pd.DataFrame) -> None:
    """Every label in one of the release's two vocabularies, and one vocabulary for the whole release."""
    label = table["label"]
    known = label.isin(VOCAB_3 | VOCAB_2).to_numpy()
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise DataError(f"covidx: {where(table, i)}, field 3 (label): {label.iloc[i]!r} is not a COVIDx label "
                        f"({int((~known).sum())} such row(s)); expected one of {sorted(VOCAB_3)} or {sorted(VOCAB_2)}")
    binary = label.isin(VOCAB_2).to_numpy()
    if binary.any() and not binary.all():
        minority = binary if binary.sum() <= (~binary).sum() else ~binary  # name the odd rows out
        i = int(np.flatnonzero(minority)[0])
        others = sorted(set(label[~minority]))
        raise DataError(f"covidx: {where(table, i)}, field 3 (label): {label.iloc[i]!r} mixes the two vocabularies "
                        f"({int(minority.sum())} such row(s); the other {int((~minority).sum())} use {others}); "
                        f"expected {sorted(VOCAB_3)} or {sorted(VOCAB_2)} throughout one release")


def labels_for_task(raw: pd.Series, task: str) -> pd.DataFrame:
    vocab = set(raw)
    if task not in TASKS:
        raise DataError(f"covidx: task must be one of {list(TASKS)}, got {task!r}")
    if vocab <= VOCAB_2:
        if task != "covid_vs_rest":
            raise DataError(f"covidx: this release uses the positive/negative vocabulary; only task "
                            f"'covid_vs_rest' is defined on it, not {task!r}")
        return pd.DataFrame({"COVID-19": (raw == "positive").astype(np.float32).to_numpy()})
    if not vocab <= VOCAB_3:
        raise DataError(f"covidx: unknown labels {sorted(vocab - VOCAB_3 - VOCAB_2)}; expected "
                        f"{sorted(VOCAB_3)} or {sorted(VOCAB_2)}")
    if task == "3class":
        return pd.DataFrame({c: (raw == c).astype(np.float32).to_numpy() for c in TASKS["3class"]})
    if task == "covid_vs_rest":
        return pd.DataFrame({"COVID-19": (raw == "COVID-19").astype(np.float32).to_numpy()})
    if task == "pathology_vs_healthy":
        return pd.DataFrame({"pathology": (raw != "normal").astype(np.float32).to_numpy()})
    if task == "pneumonia_vs_rest":
        return pd.DataFrame({"pneumonia": (raw == "pneumonia").astype(np.float32).to_numpy()})
    out = np.array(raw == "COVID-19", dtype=np.float32)
    out[(raw == "normal").to_numpy()] = np.nan
    return pd.DataFrame({"COVID-19": out})


def _source_key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


class COVIDx(CXRDataModule):
    name = "covidx"
    image_format = IMAGE_FORMAT

    def __init__(self, root: str, task: str = "3class", held_out_sources: list[str] | None = None,
                 val_share: float = 0.1, **kwargs):
        super().__init__(root, **kwargs)
        if task not in TASKS:
            raise DataError(f"covidx: task must be one of {list(TASKS)}, got {task!r}")
        self.task_name, self.held_out, self.val_share = task, list(held_out_sources or []), val_share

    def build_index(self) -> DatasetIndex:
        self._require_root(LAYOUT)
        tables = []
        for split in ("train", "val", "test"):
            f = self.root / f"{split}.txt"
            if split == "val" and not f.is_file():
                continue
            t = read_list(require_file(f, "covidx list", LAYOUT))
            t["split_file"] = split
            t["path"] = [str(self.root / split / n) for n in t["filename"]]
            tables.append(t)
        table = pd.concat(tables, ignore_index=True)
        check_lists(table)
        present = check_images(table["path"].tolist(), self.on_missing, "covidx")
        table = table[present].reset_index(drop=True).drop(columns=[FILE, LINE])
        labels = labels_for_task(table["label"], self.task_name)
        unknown = sorted(set(self.held_out) - set(table["source"]))
        if unknown:
            raise DataError(f"covidx: held_out_sources {unknown} not in this release; sources are "
                            f"{sorted(set(table['source']))}")
        near = sorted({s for s in set(table["source"]) - set(self.held_out)
                       if _source_key(s) in {_source_key(h) for h in self.held_out}})
        if near:
            raise DataError(f"covidx: rows with source(s) {near} match held_out_sources {self.held_out} only up to "
                            "case or punctuation: they would train on a held-out site. Name every spelling in "
                            "held_out_sources (or fix the list files)")
        task = "multiclass" if self.task_name == "3class" else "binary"
        return DatasetIndex("covidx", self.root, table, labels, task)

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        meta, ok = index.meta, index.eligible
        shifted = meta["source"].isin(self.held_out).to_numpy()
        usable = ok & ~shifted
        in_file = {s: (meta["split_file"] == s).to_numpy() for s in ("train", "val", "test")}
        out = {"test": np.flatnonzero(usable & in_file["test"])}
        if in_file["val"].any():
            out["train"] = np.flatnonzero(usable & in_file["train"])
            out["val"] = np.flatnonzero(usable & in_file["val"])
        else:
            pool = np.flatnonzero(usable & in_file["train"])
            parts = split_patients(meta["patient_id"].iloc[pool], {"train": 1 - self.val_share, "val": self.val_share},
                                   self.split_seed, strata=stratum_keys(index.labels).iloc[pool])
            out.update({k: pool[v] for k, v in parts.items()})
        if self.held_out:
            out["shift"] = np.flatnonzero(ok & shifted)
        return out
