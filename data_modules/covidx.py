"""COVIDx CXR (Wang et al.) as released: list files with lines ``patient_id filename label source`` and
images in train/, val/, test/ (one folder per split, the folder a list's split names).

Releases (``detect_release``; ``data_modules/releases.py`` gives the public sources), detected from the
list files' names and vocabulary:

- Kaggle's lists ``train.txt``, ``val.txt``, ``test.txt``: COVIDx CXR-4 (with ``val.txt``; labels
  ``positive`` / ``negative``, COVID-19 vs rest) — what the SS-CXR paper's link serves today — or the
  older Kaggle CXR-2/CXR-3 ``train.txt`` / ``test.txt``.
- COVID-Net's own lists (github.com/lindawangg/COVID-Net, ``labels/``): ``train_COVIDx_CXR-3A.txt`` /
  ``test_COVIDx_CXR-3A.txt`` (CXR-3, three-class; ``…-3B`` binary), ``train_COVIDx9A.txt`` /
  ``test_COVIDx9A.txt`` (CXR-2 = V9A; ``9B`` binary) and the older ``train_COVIDx{,2…8B}.txt``. Their
  rows vary: a row without a source (``patient_id filename label``: the RSNA rows of the V3–V7 test
  lists; read with source ``(none)``), a patient id with a space (``COVID 70 COVID(70).png COVID-19
  sirm``: the 943 SIRM rows of V7/V8; fields are read from the right), and the source ``rnsa``, the
  release's misspelling of ``rsna`` on 199 rows of V9A/V9B (read as ``rsna``, named in a
  ``ReleaseNote``). CRLF line endings are read as lines; a header line (no release writes one) is
  skipped and named; a source none of these lists spells so (``'srim'``, ``'COHEN'``) is read as
  written and named (a newer release's site, or a misspelling that would make one site two).

A folder holding the lists of two releases (e.g. CXR-4's ``train.txt`` and CXR-3's
``train_COVIDx_CXR-3A.txt``) is refused, naming both, unless ``release`` picks one (``'kaggle'`` for
``train.txt``…, else the lists' suffix: ``'CXR-3A'``, ``'9A'``…). A release whose lists mix the two
vocabularies is refused, naming the files of each. Checked on every list of COVID-Net's labels/ (and
its cxr3 branch): V2, V3, V5, V7A, V8A/B, V9A/B and CXR-3A/B read; V1 (a duplicate row), V4 (one image
under two patient ids) and V6/V7B (an ACTMED patient in both test and train) are refused by the list
checks, naming the lines; the COVIDxSev lists (severity grades, not a classification release) by name.

Both label vocabularies are read: ``normal / pneumonia / COVID-19`` (three-class releases) and
``positive / negative`` (binary: CXR-4, the B lists). Tasks and the SS-CXR tables they serve
(``TABLES``): ``covid_vs_rest`` (Table 1; the only task of a binary release); ``pathology_vs_healthy``
(pneumonia or COVID-19 vs normal, Table 2); ``pneumonia_vs_covid`` (normals ineligible, Table 3) and
``pneumonia_vs_rest`` (pneumonia vs normal or COVID-19, Table 3's "pneumonia / non-pneumonia");
``3class`` (Table 4). Tables 2–4 need a three-class release: on a binary one they are refused, naming
the table and what to download (``release_tables`` lists them for a root). ``auto``: the richest task
the release defines (``3class`` on a three-class release, ``covid_vs_rest`` on a binary one), named in
a ``ReleaseNote`` — for pretraining, whose objective reads no label (the GMML producer's online probe
is a running sign only), so that it runs on whatever release is on disk.

Split sizes: SS-CXR §4.1 states 31,493 images, train 31,093 and test 400, with 8,596 normal, 5,503
pneumonia and 15,994 COVID-19 training images. CXR-3A's lists hold 29,634 + 400 (8,085 / 5,555 / 15,994):
the COVID-19 count is CXR-3's, the others match no published list (and 8,596 + 5,503 + 15,994 is
30,093, not 31,093), so the splits are the release's own lists, not the paper's numbers.

``held_out_sources`` are removed from train/val/test and returned as the ``shift`` split: the
distribution-shift test set. A held-out name that no row carries, or that a row carries only up to
case or punctuation ("COHEN" for "cohen"), is an error: either would let a held-out site into
training silently.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .base import CXRDataModule, DatasetIndex
from .checks import (EIGHT_BIT, FILE, LINE, SIXTEEN_BIT, ImageFormat, check_listed_once, check_patients_apart, where,
                     with_lines)
from .io import DataError, check_images
from .releases import Release, note
from .splits import split_patients, stratum_keys

TASKS = {
    "3class": ["normal", "pneumonia", "COVID-19"],
    "covid_vs_rest": ["COVID-19"],
    "pathology_vs_healthy": ["pathology"],
    "pneumonia_vs_covid": ["COVID-19"],
    "pneumonia_vs_rest": ["pneumonia"],
}
AUTO = "auto"
#: The SS-CXR table each task reproduces.
TABLES = {
    "covid_vs_rest": "SS-CXR Table 1",
    "pathology_vs_healthy": "SS-CXR Table 2",
    "pneumonia_vs_covid": "SS-CXR Table 3",
    "pneumonia_vs_rest": "SS-CXR Table 3",
    "3class": "SS-CXR Table 4",
}
THREE_CLASS_DOWNLOAD = ("a three-class release: COVIDx CXR-3's train_COVIDx_CXR-3A.txt and test_COVIDx_CXR-3A.txt "
                        "(github.com/lindawangg/COVID-Net, labels/) beside the CXR-3 images in train/ and test/, or "
                        "CXR-2's train_COVIDx9A.txt and test_COVIDx9A.txt")
LAYOUT = ("list files train.txt, test.txt (and val.txt), or COVID-Net's train_COVIDx<version>.txt and "
          "test_COVIDx<version>.txt (e.g. train_COVIDx_CXR-3A.txt), with lines 'patient_id filename label source'; "
          "images in train/, val/, test/")
VOCAB_3 = {"normal", "pneumonia", "COVID-19"}
VOCAB_2 = {"positive", "negative"}
LABELS = VOCAB_3 | VOCAB_2
#: A row of a list without a source field (the RSNA rows of COVIDx V3–V7's test lists).
NO_SOURCE = "(none)"
#: Misspellings a release ships, read under the right name (COVIDx V9A/V9B: 199 RSNA rows say 'rnsa').
SOURCE_ALIASES = {"rnsa": "rsna"}
#: The sources of COVID-Net's lists V3–CXR-3 (labels/ of github.com/lindawangg/COVID-Net); another name is
#: read as it is, and named (a newer release's site, or a misspelling to fix).
KNOWN_SOURCES = {"rsna", "cohen", "actmed", "sirm", "fig1", "ricord", "bimcv", "stonybrook", NO_SOURCE}
HEADER_WORDS = {"patient", "patientid", "patient_id", "pid", "id", "filename", "file", "path", "image", "label",
                "labels", "class", "finding", "source", "data_source", "datasource", "dataset"}
LIST_NAME = re.compile(r"^(?P<split>train|val|test)(?:_COVIDx(?P<version>[A-Za-z0-9_.-]*))?\.txt$")
SPLITS = ("train", "val", "test")
#: PNG and JPEG files from many sites. The releases do not document one bit depth for every site (some
#: sources publish 16-bit originals), so 16-bit grey is accepted and read as the others are; anything
#: else (a DICOM or TIFF under a .png name, 1-bit or 32-bit pixels) is refused.
IMAGE_FORMAT = ImageFormat(frozenset({"PNG", "JPEG"}), EIGHT_BIT | SIXTEEN_BIT, "COVIDx ships PNGs and JPEGs")


# ------------------------------------------------------------------------------------- list files
@dataclass(frozen=True)
class ListSet:
    """The list files of one release in a folder: ``version`` None for Kaggle's train.txt/val.txt/test.txt,
    else the suffix of COVID-Net's names ('_CXR-3A', '9A', '' for train_COVIDx.txt)."""

    version: str | None
    files: dict

    @property
    def key(self) -> str:
        if self.version is None:
            return "kaggle"
        return self.version.lstrip("_") or "1"

    def names(self) -> list[str]:
        return [self.files[s].name for s in SPLITS if s in self.files]


def _key(text: str) -> str:
    k = re.sub(r"[^a-z0-9]", "", str(text).lower())
    return k[1:] if re.fullmatch(r"v\d.*", k) else k


def find_list_sets(root: Path) -> dict[str, ListSet]:
    """Every release's list files in ``root``, by release key; a set without its train or test list is an error."""
    found: dict = {}
    for f in sorted(root.glob("*.txt")):
        m = LIST_NAME.match(f.name)
        if m and f.is_file():
            found.setdefault(m.group("version"), {})[m.group("split")] = f
    severity = [v for v in found if v is not None and v.lower() == "sev"]
    if severity and len(found) == 1:
        raise DataError(f"covidx: {root} holds only COVIDxSev lists ({', '.join(f.name for f in found[severity[0]].values())}): "
                        "airspace severity grades (level1/level2) of COVID-19 images, not a COVIDx classification "
                        f"release; expected {LAYOUT}")
    for v in severity:  # the severity set beside a classification release is not a second release
        del found[v]
    sets = {}
    for version, files in found.items():
        s = ListSet(version, files)
        lacking = [n for n in ("train", "test") if n not in files]
        if lacking:
            suffix = "" if version is None else f"_COVIDx{version}"
            raise DataError(f"covidx: {root} holds {', '.join(s.names())} but not "
                            f"{' or '.join(f'{n}{suffix}.txt' for n in lacking)}; expected each release's train and "
                            f"test lists side by side. Expected layout: {LAYOUT}")
        sets[s.key] = s
    return sets


def choose_list_set(root: Path, release: str | None = None) -> ListSet:
    """The one release's lists in ``root`` (or the one ``release`` names); two releases without a choice
    are refused, naming both."""
    sets = find_list_sets(root)
    if not sets:
        raise DataError(f"covidx: no COVIDx list file in {root}. Expected layout: {LAYOUT}")
    if release is not None:
        wanted = {_key(k): s for k, s in sets.items()}
        if _key(release) not in wanted:
            raise DataError(f"covidx: release {release!r} has no list files in {root}; found "
                            + "; ".join(f"release {k!r}: {', '.join(s.names())}" for k, s in sets.items()))
        return wanted[_key(release)]
    if len(sets) > 1:
        described = []
        for k, s in sets.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    name = describe_set(s, read_set(s)).name
            except DataError:
                name = "COVIDx lists"
            described.append(f"{name} ({', '.join(s.names())}; release: {k!r})")
        raise DataError(f"covidx: {root} holds the list files of {len(sets)} releases: {' and '.join(described)}; "
                        "expected one release per folder: set the DataModule's release (data.init_args.release) to "
                        "the one to read, or move the other lists out")
    return next(iter(sets.values()))


def _is_header(tokens: list[str]) -> bool:
    return not (set(tokens) & LABELS) and len({t.lower().strip(",;") for t in tokens} & HEADER_WORDS) >= 2


def read_list(path: Path) -> pd.DataFrame:
    """A list file's rows, with the file's name and each row's line (``checks.FILE``, ``checks.LINE``).

    Fields are read from the right: ``source`` last (absent when the last field is a label), then the
    label, then the filename; the rest is the patient id (which may hold a space)."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"covidx: {path} is not UTF-8 text ({err}); expected lines "
                        "'patient_id filename label source'") from None
    rows, lines, seen = [], [], False
    for k, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if not seen and _is_header(tokens):
            note(f"covidx: {path.name} line {k} is a header ({line.strip()!r}), not a row: skipped (no COVIDx "
                 "release writes one)")
            seen = True
            continue
        seen = True
        rows.append(_parse_row(path, k, line, tokens))
        lines.append(k)
    columns = ["patient_id", "filename", "label", "source", "_label_field"]
    table = with_lines(pd.DataFrame(rows, columns=columns), path, header=False)
    table[LINE] = np.asarray(lines, int)  # blank and header lines skipped: keep each row's own line
    if b"\r\n" in raw:
        note(f"covidx: {path.name} has CRLF (Windows) line endings: read line by line as usual")
    for wrong, right in SOURCE_ALIASES.items():
        hit = (table["source"] == wrong).to_numpy()
        if hit.any():
            note(f"covidx: {path.name}: {int(hit.sum())} row(s) name the source {wrong!r} (e.g. line "
                 f"{int(table[LINE].iloc[int(np.flatnonzero(hit)[0])])}), the release's misspelling of {right!r}: "
                 f"read as {right!r}")
            table.loc[hit, "source"] = right
    no_source = (table["source"] == NO_SOURCE).to_numpy()
    if no_source.any():
        note(f"covidx: {path.name}: {int(no_source.sum())} row(s) have no source field (3 fields, e.g. line "
             f"{int(table[LINE].iloc[int(np.flatnonzero(no_source)[0])])}, as in COVIDx V3–V7's test lists): read "
             f"with source {NO_SOURCE!r}")
    return table


def _parse_row(path: Path, k: int, line: str, tokens: list[str]) -> list:
    has_source = tokens[-1] not in LABELS
    need = 4 if has_source else 3
    if len(tokens) < need:
        raise DataError(f"{path}:{k}: expected 'patient_id filename label source' (or 'patient_id filename label'), "
                        f"got {line.strip()!r}")
    label_at = len(tokens) - (2 if has_source else 1)
    pid = " ".join(tokens[: label_at - 1])
    source = tokens[-1] if has_source else NO_SOURCE
    return [pid, tokens[label_at - 1], tokens[label_at], source, label_at + 1]


def read_set(lists: ListSet) -> pd.DataFrame:
    tables = []
    for split in SPLITS:
        f = lists.files.get(split)
        if f is None:
            continue
        t = read_list(f)
        t["split_file"] = split
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    other = table[~table["source"].isin(KNOWN_SOURCES)].reset_index(drop=True)
    if len(other):
        named = []
        for name, n in other["source"].value_counts().items():
            first = int(np.flatnonzero((other["source"] == name).to_numpy())[0])
            named.append(f"{name!r} ({n} row(s), e.g. {where(other, first)})")
        known = ", ".join(sorted(KNOWN_SOURCES - {NO_SOURCE}))
        note(f"covidx: source(s) {', '.join(named)} are not among the sources of COVIDx V3–CXR-3 ({known}): read as "
             "written; a misspelling would make one site two (fix the lists), a newer release's site is fine")
    return table


def describe_set(lists: ListSet, table: pd.DataFrame) -> Release:
    """The release a folder's lists are, once their vocabulary is known (``check_vocabulary`` first)."""
    binary = bool(table["label"].isin(VOCAB_2).all()) and len(table) > 0
    version = lists.version
    if version is None:
        if binary:
            name = "COVIDx CXR-4" if "val" in lists.files else "COVIDx CXR-2/CXR-3 (Kaggle lists, positive/negative)"
        else:
            name = "COVIDx, three-class Kaggle-style lists"
    else:
        v = version.lstrip("_")
        name = (f"COVIDx {v}" if v.upper().startswith("CXR") else f"COVIDx CXR-2 (V{v})" if v in ("9A", "9B")
                else f"COVIDx V{v or '1'}")
    tasks = ("covid_vs_rest",) if binary else tuple(TASKS)
    return Release("covidx", name, tuple(lists.names()), tasks,
                   {"vocabulary": "binary" if binary else "3class", "key": lists.key,
                    "sources": sorted(set(table["source"]))})


def detect_release(root: Path, release: str | None = None) -> Release:
    """The COVIDx release under ``root`` (its lists read and checked, no image looked for)."""
    lists = choose_list_set(Path(root), release)
    table = read_set(lists)
    check_lists(table)
    return describe_set(lists, table)


def release_tables(release: Release) -> dict[str, str | None]:
    """SS-CXR table -> None where ``release`` runs it, else what it needs."""
    out: dict[str, str | None] = {}
    for table in dict.fromkeys(TABLES.values()):
        lacking = [t for t, tab in TABLES.items() if tab == table and t not in release.tasks]
        out[table] = (None if not lacking else
                      f"task(s) {', '.join(map(repr, lacking))} need {THREE_CLASS_DOWNLOAD}; {release} is positive/negative")
    return out


def check_lists(table: pd.DataFrame) -> None:
    """The list files against each other, before any image is looked for: one vocabulary, each filename
    on one row of one list (not twice, not with two labels, not in two splits), and no patient of the
    test list in train or val (a patient is (source, patient_id): ids are per-site strings)."""
    check_vocabulary(table)
    check_listed_once(table, "filename", "covidx", "image", fields_ignored=["split_file", "path", "_label_field"])
    patient = table["source"].astype(str) + ":" + table["patient_id"].astype(str)
    check_patients_apart(table, patient, table["split_file"], "test", ["train", "val"], "covidx",
                         " (a patient is its source and patient_id)")


def _field(table: pd.DataFrame, i: int) -> int:
    return int(table["_label_field"].iloc[i]) if "_label_field" in table else 3


def check_vocabulary(table: pd.DataFrame) -> None:
    """Every label in one of the release's two vocabularies, and one vocabulary for the whole release."""
    label = table["label"]
    known = label.isin(VOCAB_3 | VOCAB_2).to_numpy()
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise DataError(f"covidx: {where(table, i)}, field {_field(table, i)} (label): {label.iloc[i]!r} is not a "
                        f"COVIDx label ({int((~known).sum())} such row(s)); expected one of {sorted(VOCAB_3)} or "
                        f"{sorted(VOCAB_2)}")
    binary = label.isin(VOCAB_2).to_numpy()
    if binary.any() and not binary.all():
        minority = binary if binary.sum() <= (~binary).sum() else ~binary  # name the odd rows out
        i = int(np.flatnonzero(minority)[0])
        others = sorted(set(label[~minority]))
        files = table[FILE].to_numpy()
        mixed = set(files[minority]) & set(files[~minority])
        two = ""
        if not mixed:  # whole files of each vocabulary: the lists of two releases in one folder
            two = (f"; {', '.join(sorted(set(files[binary])))} are a binary release's (positive/negative) and "
                   f"{', '.join(sorted(set(files[~binary])))} a three-class release's: two releases mixed in one folder")
        raise DataError(f"covidx: {where(table, i)}, field {_field(table, i)} (label): {label.iloc[i]!r} mixes the two "
                        f"vocabularies ({int(minority.sum())} such row(s); the other {int((~minority).sum())} use "
                        f"{others}); expected {sorted(VOCAB_3)} or {sorted(VOCAB_2)} throughout one release{two}")


def resolve_task(task: str, release: Release, root: Path) -> str:
    """``task`` on ``release``: 'auto' made the release's richest task (named), a task the release cannot
    give refused with the table it serves and what to download."""
    binary = release.details.get("vocabulary") == "binary"
    if task == AUTO:
        chosen = "covid_vs_rest" if binary else "3class"
        if binary:
            others = ", ".join(sorted({TABLES[t] for t in TASKS if t != chosen}))
            what = f"COVID-19 vs rest, the only task of a positive/negative release; {others} cannot run on it"
        else:
            what = "normal / pneumonia / COVID-19: every SS-CXR table can run on this release"
        note(f"covidx: task 'auto' on {release}: {chosen!r} ({what})")
        return chosen
    if binary and task != "covid_vs_rest":
        raise DataError(f"covidx: task {task!r} ({TABLES[task]}) needs a three-class release (normal / pneumonia / "
                        f"COVID-19); {root} holds {release}, which uses the positive/negative vocabulary: only task "
                        f"'covid_vs_rest' ({TABLES['covid_vs_rest']}) is defined on it. Download {THREE_CLASS_DOWNLOAD}")
    return task


def labels_for_task(raw: pd.Series, task: str) -> pd.DataFrame:
    vocab = set(raw)
    if task not in TASKS:
        raise DataError(f"covidx: task must be one of {[*TASKS, AUTO]}, got {task!r}")
    if vocab <= VOCAB_2:
        if task != "covid_vs_rest":
            raise DataError(f"covidx: this release uses the positive/negative vocabulary; only task "
                            f"'covid_vs_rest' ({TABLES['covid_vs_rest']}) is defined on it, not {task!r} "
                            f"({TABLES[task]} needs {THREE_CLASS_DOWNLOAD})")
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
    """COVIDx CXR; see the module docstring for the releases, tasks and ``release``."""

    name = "covidx"
    image_format = IMAGE_FORMAT

    def __init__(self, root: str, task: str = "3class", held_out_sources: list[str] | None = None,
                 val_share: float = 0.1, release: str | None = None, **kwargs):
        super().__init__(root, **kwargs)
        if task not in TASKS and task != AUTO:
            raise DataError(f"covidx: task must be one of {[*TASKS, AUTO]}, got {task!r}")
        self.task_name, self.held_out, self.val_share = task, list(held_out_sources or []), val_share
        self.release_choice = release
        self.release: Release | None = None

    def build_index(self) -> DatasetIndex:
        self._require_root(LAYOUT)
        lists = choose_list_set(self.root, self.release_choice)
        table = read_set(lists)
        table["path"] = [str(self.root / s / n) for s, n in zip(table["split_file"], table["filename"])]
        check_lists(table)
        self.release = describe_set(lists, table)
        task = resolve_task(self.task_name, self.release, self.root)
        present = check_images(table["path"].tolist(), self.on_missing, "covidx")
        table = table[present].reset_index(drop=True).drop(columns=[FILE, LINE, "_label_field"])
        labels = labels_for_task(table["label"], task)
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
        kind = "multiclass" if task == "3class" else "binary"
        index = DatasetIndex("covidx", self.root, table, labels, kind)
        index.notes["release"] = str(self.release)
        index.notes["task"] = task
        return index

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
