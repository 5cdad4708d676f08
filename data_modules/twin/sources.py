"""The real metadata the twin is built from: label files and lung masks shipped in torchxrayvision.

torchxrayvision is used only as a carrier of these files (``torchxrayvision/data/``); it is never
imported, because importing it pulls in its models and their download hooks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import zipfile
from pathlib import Path

import numpy as np

REAL_FILES = {
    "nih_entries": "Data_Entry_2017_v2020.csv.gz",
    "nih_boxes": "BBox_List_2017.csv.gz",
    "chexpert": "chexpert_train.csv.gz",
    "siim": "siim-pneumothorax-train-rle.csv.gz",
    "lung_masks": "semantic_masks_v7labs_lungs.zip",
}

#: Side of the square in which every lung-mask pair of the bank is stored.
BANK_SIZE = 256
_BANK_VERSION = 1


class MissingSourceError(FileNotFoundError):
    """A real metadata file the twin needs is not installed."""


def data_dir() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise MissingSourceError(
            "the twin needs the real label files shipped in the 'torchxrayvision' wheel, "
            "but torchxrayvision is not installed (pip install torchxrayvision)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def real_file(key: str) -> Path:
    """Path of one real metadata file, with an error naming it when it is absent."""
    path = data_dir() / REAL_FILES[key]
    if not path.is_file():
        raise MissingSourceError(
            f"missing real metadata file {path} (expected in torchxrayvision/data/: "
            f"{REAL_FILES[key]}); reinstall torchxrayvision"
        )
    return path


def read_csv_lines(key: str) -> tuple[str, list[str]]:
    """Header and data lines of a real CSV, verbatim, so the twin can write real rows byte for byte."""
    import gzip

    with gzip.open(real_file(key), "rt", newline="") as fh:
        lines = fh.read().splitlines()
    return lines[0], lines[1:]


def _cache_dir() -> Path:
    root = os.environ.get("CXRBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cxrbench"
    )
    return Path(root)


def _build_lung_bank() -> np.ndarray:
    """Decode the real lung masks into label maps (1 = image-left lung, 2 = image-right lung).

    Each usable mask (two large connected components; 82 of the 517 files are empty) is cropped to
    the bounding box of both lungs and resized to BANK_SIZE², so the twin can fit it into any thorax.
    """
    from PIL import Image
    from scipy import ndimage

    out = []
    with zipfile.ZipFile(real_file("lung_masks")) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith("/"):
                continue
            a = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L"))
            if a.max() == 0:
                continue
            lab, n = ndimage.label(a > a.max() / 2)
            sizes = np.bincount(lab.ravel())[1:]
            order = np.argsort(sizes)[::-1]
            if n < 2 or sizes[order[1]] < 0.05 * sizes.sum():
                continue
            comps = [(lab == k + 1) for k in order[:2]]
            comps.sort(key=lambda m: np.nonzero(m)[1].mean())  # image-left first
            ys, xs = np.nonzero(comps[0] | comps[1])
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            labels = np.zeros(a.shape, np.uint8)
            labels[comps[0]] = 1
            labels[comps[1]] = 2
            crop = Image.fromarray(labels[y0:y1, x0:x1])
            out.append(np.asarray(crop.resize((BANK_SIZE, BANK_SIZE), Image.NEAREST)))
    return np.stack(out)


def lung_bank() -> np.ndarray:
    """The real lung-mask pairs as uint8 label maps [K, BANK_SIZE, BANK_SIZE], cached on disk."""
    global _BANK
    if _BANK is not None:
        return _BANK
    src = real_file("lung_masks")
    digest = hashlib.sha1(f"{_BANK_VERSION}:{src.stat().st_size}".encode()).hexdigest()[:12]
    cache = _cache_dir() / f"lung_bank_{digest}.npy"
    if cache.is_file():
        try:
            _BANK = np.load(cache)
            return _BANK
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    bank = _build_lung_bank()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, bank)
    os.replace(tmp, cache)
    _BANK = bank
    return bank


_BANK: np.ndarray | None = None
