"""What the data layer checks before training, beyond the columns and files ``io`` asks for.

- list files against each other: an image listed twice, an image with two labels, an image or a
  patient in two splits;
- label values against the release's vocabulary, and label values that are not numbers;
- image formats and bit depths against what the release ships (``ImageFormat``);
- mask files against their images (same size, the masks of one image the same size).

Every check raises a one-line ``DataError`` that names the file, the row and the column at fault and
says what was expected. Rows are named by their *line* in the file: 1-based, the header of a CSV is
line 1, so the first data row of a CSV is line 2 and the first row of a header-less list is line 1.
Tables carry the file and line of each row in the columns ``FILE`` and ``LINE`` (``with_lines``), so
that a row keeps its line through the concatenations and filters that build an index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image

from .io import DataError, dicom_header

FILE, LINE = "_list_file", "_list_line"  # not "_file": CheXpert tables use it for the split


def with_lines(table: pd.DataFrame, path, header: bool = True) -> pd.DataFrame:
    """``table`` (one row per data line of ``path``, in file order) with its file name and line numbers."""
    out = table.copy()
    out[FILE] = Path(path).name
    out[LINE] = np.arange(len(table)) + (2 if header else 1)
    return out


def where(table: pd.DataFrame, i: int) -> str:
    """'train.csv line 12' for row position ``i`` of a table made by ``with_lines``."""
    return f"{table[FILE].iloc[i]} line {int(table[LINE].iloc[i])}"


def _value(v) -> str:
    """A cell as a message shows it: text quoted, numbers as the file writes them (not numpy's repr)."""
    return repr(v) if isinstance(v, str) else str(v)


def _short(values: Iterable, n: int = 3) -> str:
    values = list(values)
    more = f" and {len(values) - n} more" if len(values) > n else ""
    return ", ".join(map(str, values[:n])) + more


# ------------------------------------------------------------------------------------- list files
def check_listed_once(table: pd.DataFrame, key: str | list[str], dataset: str, what: str,
                      fields_ignored: Iterable[str] = ()) -> None:
    """Each value of ``key`` (an image's file name or path) on one row only. A second row is a
    duplicate (same fields), a conflict (another label or patient) or a leak (another split file):
    the message says which, naming both rows. ``fields_ignored``: columns derived from the file (e.g. the
    split or path a list implies), not compared."""
    key = [key] if isinstance(key, str) else list(key)
    second = table.duplicated(key, keep="first").to_numpy()
    if not second.any():
        return
    j = int(np.flatnonzero(second)[0])
    same = (table[key] == table[key].iloc[j]).all(axis=1).to_numpy()
    i = int(np.flatnonzero(same)[0])
    fields = [c for c in table.columns if c not in (FILE, LINE) and c not in fields_ignored]
    differ = [c for c in fields if str(table[c].iloc[i]) != str(table[c].iloc[j])]
    disagree = ", ".join(f"{c!r} ({_value(table[c].iloc[i])} vs {_value(table[c].iloc[j])})" for c in differ)
    name = ", ".join(str(table[c].iloc[j]) for c in key)
    if table[FILE].iloc[i] != table[FILE].iloc[j]:
        kind = "is listed in two split files (an evaluation image must never be trained on)"
        kind += f", with rows that disagree on {disagree}" if differ else ""
    elif differ:
        kind = f"has two rows that disagree on {disagree}"
    else:
        kind = "is listed twice (a duplicate row)"
    raise DataError(f"{dataset}: {what} {name} {kind}: {where(table, i)} and {where(table, j)}; "
                    f"expected each {what} on exactly one row of one list")


def check_patients_apart(table: pd.DataFrame, patient: pd.Series, split: pd.Series, held: str,
                         others: Iterable[str], dataset: str, option: str = "") -> None:
    """No patient of split ``held`` (e.g. test) with an image in one of ``others`` (e.g. train, val):
    the splits are patient-disjoint, or the test scores images of patients trained on."""
    patient, split = patient.astype(str).to_numpy(), split.astype(str).to_numpy()
    in_held = split == held
    in_other = np.isin(split, list(others))
    both = np.intersect1d(patient[in_held], patient[in_other])
    if not len(both):
        return
    p = both[0]
    i = int(np.flatnonzero(in_held & (patient == p))[0])
    j = int(np.flatnonzero(in_other & (patient == p))[0])
    raise DataError(f"{dataset}: {len(both)} patient(s) have images in the {held!r} split and in "
                    f"{split[j]!r} (e.g. patient {p}: {where(table, i)} and {where(table, j)}); expected "
                    f"patient-disjoint splits{option}")


# ------------------------------------------------------------------------------------- label values
def check_values_in(table: pd.DataFrame, columns: Iterable[str], allowed: Iterable[float], dataset: str,
                    expected: str) -> None:
    """Every value of ``columns`` a number in ``allowed`` (or blank, where the release leaves cells
    blank). A value that is not a number is named as such, not left to a float conversion's traceback."""
    allowed = np.asarray(list(allowed), float)
    for c in columns:
        raw = table[c]
        num = pd.to_numeric(raw, errors="coerce").to_numpy(float)
        blank = _blank(raw)
        not_number = np.isnan(num) & ~blank
        if not_number.any():
            i = int(np.flatnonzero(not_number)[0])
            raise DataError(f"{dataset}: {where(table, i)}, column {c!r}: {_value(raw.iloc[i])} is not a number; "
                            f"expected {expected}")
        bad = ~blank & ~np.isin(num, allowed)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{dataset}: {where(table, i)}, column {c!r}: {_value(raw.iloc[i])} is not a value "
                            f"this release uses ({int(bad.sum())} such row(s)); expected {expected}")


def check_numbers(table: pd.DataFrame, columns: Iterable[str], dataset: str, expected: str,
                  positive: Iterable[str] = ()) -> None:
    """Every value of ``columns`` a number (``positive``: above zero), blank included as a fault."""
    positive = set(positive)
    for c in columns:
        raw = table[c]
        num = pd.to_numeric(raw, errors="coerce").to_numpy(float)
        bad = ~np.isfinite(num)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = "blank" if pd.isna(raw.iloc[i]) else f"{_value(raw.iloc[i])} is not a number"
            raise DataError(f"{dataset}: {where(table, i)}, column {c!r}: {value}; expected {expected}")
        if c in positive and (num <= 0).any():
            i = int(np.flatnonzero(num <= 0)[0])
            raise DataError(f"{dataset}: {where(table, i)}, column {c!r}: {_value(raw.iloc[i])} is not above zero; "
                            f"expected {expected}")


def check_words_in(table: pd.DataFrame, column: str, allowed: Iterable[str], dataset: str, expected: str,
                   sep: str | None = None) -> None:
    """Every value of a text column (each ``sep``-separated part, where a cell lists several) in the
    release's vocabulary; a blank cell is refused too."""
    allowed = set(allowed)
    raw = table[column]
    blank = _blank(raw)
    text = raw.astype(str)
    if sep:  # each distinct cell split once: a release repeats a few hundred combinations
        ok = {v: all(w in allowed for w in v.split(sep)) for v in pd.unique(text)}
        known = text.map(ok).to_numpy(bool)
    else:
        known = text.isin(allowed).to_numpy()
    bad = blank | ~known
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = "blank" if blank[i] else _value(raw.iloc[i])
        unknown = sorted({w for v in text[bad & ~blank] for w in (v.split(sep) if sep else [v]) if w not in allowed})
        seen = f" (unknown: {_short(map(repr, unknown), 5)})" if unknown else ""
        raise DataError(f"{dataset}: {where(table, i)}, column {column!r}: {value} is not in this release's "
                        f"vocabulary{seen}; expected {expected}")


def _blank(raw: pd.Series) -> np.ndarray:
    """Cells the release leaves empty: NaN, or (in a text column) only whitespace."""
    blank = raw.isna().to_numpy().copy()
    if not pd.api.types.is_numeric_dtype(raw):
        blank |= (raw.astype(str).str.strip() == "").to_numpy()
    return blank


# ------------------------------------------------------------------------------------- image formats
#: PIL modes of 8 bits per channel, and those of more (16-bit grey PNGs open as I;16, 32-bit as I / F).
EIGHT_BIT = frozenset({"L", "LA", "P", "RGB", "RGBA"})
SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class ImageFormat:
    """The file formats (PIL names; ``DICOM`` for .dcm) and pixel modes a release ships. Checked from the
    file headers (no pixels decoded) where images are first read: before the cache is built, or at
    setup when the DataModule reads without a cache."""

    formats: frozenset
    modes: frozenset = EIGHT_BIT
    note: str = ""  # where the expectation comes from, for the message

    def describe(self) -> str:
        depth = "8-bit" if self.modes <= EIGHT_BIT else "8- or 16-bit"
        note = f" ({self.note})" if self.note else ""
        return f"{'/'.join(sorted(self.formats))} images, {depth}{note}"


def image_header(path: str) -> tuple[str, str, tuple[int, int]]:
    """(format, mode, (width, height)) from a file's header; DICOM: ('DICOM', mode of its pixel type)."""
    if path.lower().endswith(".dcm"):
        import SimpleITK as sitk

        reader = dicom_header(path)
        pixel = reader.GetPixelID()
        # named as PIL would name the same pixels, so one vocabulary of modes serves every format
        mode = {sitk.sitkUInt8: "L", sitk.sitkUInt16: "I;16", sitk.sitkInt16: "I;16"}.get(
            pixel, sitk.GetPixelIDValueAsString(pixel))
        if reader.GetNumberOfComponents() == 3 and mode == "L":
            mode = "RGB"
        size = reader.GetSize()
        return "DICOM", mode, (int(size[0]), int(size[1]))
    try:
        with Image.open(path) as im:
            return str(im.format), str(im.mode), im.size
    except (OSError, ValueError) as err:
        raise DataError(f"cannot decode image {path}: {err}") from None


def check_image_formats(paths: Iterable[str], expected: ImageFormat, dataset: str) -> None:
    """Every image's file format and pixel mode among those the release ships: a 16-bit PNG in an 8-bit
    release would be min-max rescaled to 8 bits unlike its neighbours, a JPEG named .png decoded as if
    nothing were wrong; both are refused, naming the file, what it is and what was expected."""
    for path in paths:
        fmt, mode, _ = image_header(path)
        if fmt not in expected.formats or mode not in expected.modes:
            raise DataError(f"{dataset}: image {path} is a {fmt} of mode {mode} ({_depth(mode)}); expected "
                            f"{expected.describe()}. Convert it as the release's other images are, or remove its row")


def _depth(mode: str) -> str:
    if mode in EIGHT_BIT:
        return "8 bits per channel"
    if mode in SIXTEEN_BIT:
        return "16 bits"
    return {"1": "1 bit", "I": "32-bit integer", "F": "32-bit float"}.get(mode, "not 8 bits per channel")


# ------------------------------------------------------------------------------------- masks
def check_mask_sizes(image_paths: list[str], mask_files: list[tuple[str, ...]], dataset: str) -> None:
    """Each image's mask files the same size as each other and as the image (header reads only): masks
    of different sizes could not be unioned (a crash mid-epoch), and a mask of another size than its
    image would be resized onto it, silently misplacing the outline."""
    for image, masks in zip(image_paths, mask_files):
        if not masks:
            continue
        sizes = [image_header(m)[2] for m in masks]
        for m, s in zip(masks[1:], sizes[1:]):
            if s != sizes[0]:
                raise DataError(f"{dataset}: the masks of image {image} differ in size: {masks[0]} is "
                                f"{_wh(sizes[0])}, {m} is {_wh(s)}; expected every mask of an image at the "
                                "image's size")
        size = image_header(image)[2]
        if sizes[0] != size:
            raise DataError(f"{dataset}: mask {masks[0]} is {_wh(sizes[0])} but its image {image} is {_wh(size)}; "
                            "expected each mask at its image's size")


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]} (w x h)"



__all__ = ["FILE", "LINE", "EIGHT_BIT", "SIXTEEN_BIT", "ImageFormat", "with_lines", "where", "check_listed_once",
           "check_patients_apart", "check_values_in", "check_words_in", "check_image_formats", "image_header",
           "check_mask_sizes", "check_numbers"]
