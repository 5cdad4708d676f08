"""Reading images and label files with errors that name the file, column or option at fault."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to a temporary sibling, then rename it over ``path``: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


class DataError(ValueError):
    """Bad or missing input data; the message names what is wrong and what was expected."""


def require_file(path: Path, what: str, layout: str) -> Path:
    if not Path(path).is_file():
        raise DataError(f"{what}: expected file {path} is missing. Expected layout: {layout}")
    return Path(path)


def read_table(path: Path, required: Iterable[str], layout: str, **kw) -> pd.DataFrame:
    """A CSV whose required columns are checked, with the file and the missing names in the error."""
    require_file(path, "label file", layout)
    try:
        df = pd.read_csv(path, **kw)
    except Exception as err:  # pandas raises many types for a damaged file
        raise DataError(f"cannot parse {path}: {err}") from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; expected columns include {list(required)}, "
            f"found {list(df.columns)}"
        )
    return df


def check_images(paths: list[str], on_missing: str, dataset: str) -> np.ndarray:
    """Boolean mask of rows whose image exists; raises (or warns, with counts) on missing files."""
    if on_missing not in ("error", "skip"):
        raise DataError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    exists = np.fromiter((os.path.isfile(p) for p in paths), bool, len(paths))
    n_missing = int((~exists).sum())
    if n_missing:
        examples = [p for p, e in zip(paths, exists) if not e][:3]
        msg = f"{dataset}: {n_missing} of {len(paths)} listed images are absent (e.g. {examples})"
        if on_missing == "error":
            raise DataError(msg + "; fix the root or pass on_missing='skip' to drop them")
        warnings.warn(msg + "; skipped (on_missing='skip')", stacklevel=2)
    return exists


def read_image(path: str) -> np.ndarray:
    """Any CXR file (PNG, incl. the RGBA ones of NIH; JPG; DICOM) -> uint8 [H, W]."""
    try:
        if path.lower().endswith(".dcm"):
            return _read_dicom(path)
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I", "F"):
                return _to_uint8(np.asarray(im, np.float32))
            if im.format == "JPEG":
                im.draft("L", im.size)
            return np.array(im.convert("L"))  # a writable copy: torch.from_numpy needs one
    except (OSError, ValueError, RuntimeError) as err:
        raise DataError(f"cannot decode image {path}: {err}") from err


def _read_dicom(path: str) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.LoadPrivateTagsOff()
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img)
    arr = arr[0] if arr.ndim == 3 else arr
    if arr.dtype == np.uint8:
        out = arr
    else:
        out = _to_uint8(arr.astype(np.float32))
    if reader.HasMetaDataKey("0028|0004") and reader.GetMetaData("0028|0004").strip() == "MONOCHROME1":
        out = 255 - out  # inverted grey scale: bone dark
    return out


def dicom_header(path: str):
    """A SimpleITK reader holding ``path``'s DICOM header only (no pixel data read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise DataError(f"cannot read the DICOM header of {path}: {str(err).splitlines()[0]}") from None
    return reader


def dicom_pixel_spacing(path: str) -> tuple[float, float] | None:
    """A DICOM's pixel size in mm, (row, column), from its header alone: PixelSpacing (0028,0030), else
    ImagerPixelSpacing (0018,1164) as CR files often carry only that; None when neither is there or the
    file is not a DICOM. SimpleITK's own GetSpacing() says 1.0 for a file without the tag, so the tags
    are read, not the spacing."""
    if not path.lower().endswith(".dcm"):
        return None
    reader = dicom_header(path)
    for tag in ("0028|0030", "0018|1164"):
        if reader.HasMetaDataKey(tag):
            try:
                row, col = (float(v) for v in reader.GetMetaData(tag).strip().split("\\")[:2])
            except ValueError:
                continue
            if row > 0 and col > 0:
                return row, col
    return None


def _to_uint8(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / max(hi - lo, 1e-6) * 255 + 0.5).astype(np.uint8)


def folder_digest(folder: str | Path, files: list[str]) -> str:
    """sha256 over a folder artifact's data files (in the order named), read in 16 MiB blocks: the
    content hash of the ``heatmaps`` artifact, checked by its consumers (``cxrbench.artifacts``)."""
    import hashlib

    h = hashlib.sha256()
    for name in files:
        h.update(f"F{name}\n".encode())
        with open(Path(folder) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()
