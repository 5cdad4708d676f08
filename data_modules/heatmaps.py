"""The ``heatmaps`` artifact of CAMContrast stage 1: a folder written by ``HeatmapWriter``, read by
``HeatmapStore`` (the crop DataModule, ``data_modules.crops.NIHCrops``, cuts its heatmap crops from it).

``heatmaps.u8`` is an N×S×S uint8 memmap (S = the stage-1 image side; the heatmap of row ``rows[i]``
of the dataset index at position i), ``rows.npy`` the index rows, ``artifact.json`` (kind, format,
producer run, dataset name/root/key, image size, splits) written last, and the folder renamed into
place only then: a reader never sees an interrupted export. The same record header as the file
artifacts (``cxrbench.artifacts``: kind, format, producer), in JSON beside the maps because the maps
are one memmap too large for ``torch.save`` at paper scale (~17 GB). Modelled on the image cache
(``cache.py``): opened lazily in each worker, shared through the page cache, never pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .base import DatasetIndex
from .io import DataError, atomic_write_text, folder_digest

FORMAT = 2  # 2: artifact.json holds the sha256 of the data files


def dataset_key(index: DatasetIndex) -> str:
    """What identifies a dataset's rows wherever it lives: its name and the ordered image file names."""
    return images_key(index.name, index.meta)


def images_key(name: str, meta) -> str:
    """``dataset_key`` from a dataset's name and its metadata table (a data contract's ``images``)."""
    h = hashlib.sha1(f"{name}:{len(meta)}".encode())
    for p in meta["path"]:
        h.update(os.path.basename(p).encode() + b"\n")
    return h.hexdigest()


class HeatmapWriter:
    """Writes a heatmap store for ``rows`` at side ``size``; ``put`` batches in any order, then ``commit``
    (every row must have been written) — or use it as a context manager, which commits on success and
    removes the temporary folder on an error."""

    def __init__(self, path: str | Path, rows: np.ndarray, size: int, meta: dict):
        self.path, self.size = Path(path), int(size)
        self.rows = np.unique(np.asarray(rows, np.int64))
        if len(self.rows) == 0:
            raise DataError(f"heatmaps {self.path}: no rows to write")
        self.meta = dict(meta)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self._pos = np.full(int(self.rows.max()) + 1, -1, np.int64)
        self._pos[self.rows] = np.arange(len(self.rows))
        self._data = np.memmap(self.tmp / "heatmaps.u8", dtype=np.uint8, mode="w+",
                               shape=(len(self.rows), self.size, self.size))
        self._filled = np.zeros(len(self.rows), bool)

    def put(self, rows, maps) -> None:
        rows = np.asarray(torch.as_tensor(rows).cpu(), np.int64).reshape(-1)
        maps = np.asarray(torch.as_tensor(maps).cpu())
        if maps.dtype != np.uint8 or maps.shape[1:] != (self.size, self.size) or len(maps) != len(rows):
            raise ValueError(f"heatmaps must be uint8 [{len(rows)}, {self.size}, {self.size}], got {maps.dtype} {maps.shape}")
        pos = self._pos[rows] if rows.max() < len(self._pos) else None
        if pos is None or (pos < 0).any():
            raise ValueError(f"heatmap rows {rows.tolist()[:5]}… are not among the rows this store was opened for")
        self._data[pos] = maps
        self._filled[pos] = True

    def commit(self) -> Path:
        missing = self.rows[~self._filled]
        if len(missing):
            raise DataError(f"heatmaps {self.path}: {len(missing)} of {len(self.rows)} rows were never written "
                            f"(e.g. {missing[:5].tolist()})")
        self._data.flush()
        del self._data
        np.save(self.tmp / "rows.npy", self.rows)
        files = {"data": "heatmaps.u8", "rows": "rows.npy"}
        meta = {"kind": "heatmaps", "format": FORMAT, **self.meta, "image_size": self.size, "n": int(len(self.rows)),
                "files": files, "dtype": "uint8", "scale": 255, "sha256": folder_digest(self.tmp, sorted(files.values()))}
        atomic_write_text(self.tmp / "artifact.json", json.dumps(meta, indent=1, default=str))  # last: marks it whole
        if self.path.exists():  # a stale folder without artifact.json (an interrupted export of another writer)
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(AttributeError):
            del self._data
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "HeatmapWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class HeatmapStore:
    """Reads a heatmap store: ``meta`` (artifact.json), ``rows``, ``has(rows)``, ``crop(row, top, left, size)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_file = self.path / "artifact.json"
        if not self.path.is_dir():
            raise DataError(f"heatmaps {self.path} does not exist (has the stage-1 cell that produces it finished?)")
        if not meta_file.is_file():
            raise DataError(f"heatmaps {self.path} has no artifact.json: an interrupted export; run its stage-1 cell again")
        self.meta = json.loads(meta_file.read_text())
        if self.meta.get("kind") != "heatmaps" or self.meta.get("format") != FORMAT:
            raise DataError(f"{self.path} is a {self.meta.get('kind')!r} artifact of format {self.meta.get('format')}, "
                            f"not a heatmaps artifact of format {FORMAT}")
        self.size = int(self.meta["image_size"])
        self.rows = np.load(self.path / "rows.npy")
        n = int(self.meta["n"])
        data = self.path / "heatmaps.u8"
        if len(self.rows) != n or not data.is_file() or data.stat().st_size != n * self.size * self.size:
            raise DataError(f"heatmaps {self.path}: data files do not match artifact.json ({n} maps of {self.size}²)")
        files = sorted((self.meta.get("files") or {}).values())
        if folder_digest(self.path, files) != self.meta.get("sha256"):  # one read of the maps, before any use
            raise DataError(f"heatmaps {self.path}: its files do not match the sha256 they were written with (altered "
                            "or damaged after the export); run its stage-1 cell again")
        self._pos = np.full(int(self.rows.max()) + 1, -1, np.int64)
        self._pos[self.rows] = np.arange(len(self.rows))
        self._mm: np.memmap | None = None

    @property
    def producer_run(self) -> str | None:
        return (self.meta.get("producer") or {}).get("run_id")

    def has(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        inside = rows < len(self._pos)
        out = np.zeros(len(rows), bool)
        out[inside] = self._pos[rows[inside]] >= 0
        return out

    def full(self, row: int) -> np.ndarray:
        return np.array(self._memmap()[self._position(row)])

    def crop(self, row: int, top: int, left: int, size: int) -> np.ndarray:
        return np.array(self._memmap()[self._position(row), top:top + size, left:left + size])

    def _position(self, row: int) -> int:
        pos = self._pos[row] if row < len(self._pos) else -1
        if pos < 0:
            raise KeyError(f"heatmaps {self.path} have no map for index row {row}")
        return int(pos)

    def _memmap(self) -> np.memmap:
        if self._mm is None:  # opened lazily, in each worker process
            self._mm = np.memmap(self.path / "heatmaps.u8", dtype=np.uint8, mode="r",
                                 shape=(len(self.rows), self.size, self.size))
        return self._mm

    def __getstate__(self):  # never pickle an open memmap into a worker
        state = dict(self.__dict__)
        state["_mm"] = None
        return state


__all__ = ["FORMAT", "dataset_key", "images_key", "HeatmapWriter", "HeatmapStore"]
