"""One uint8 memmap of every image of a dataset at one size: decode a PNG once, read it for ever.

Files, beside each other: ``<prefix>.u8`` (N×S×S raw bytes), ``<prefix>.sizes.npy`` (original H, W per
image) and ``<prefix>.json`` (the key and shape). The json is written last, after both data files are
renamed into place, so it marks a complete cache. The key hashes every image's path, byte size and
mtime: a changed, added or removed image, a truncated data file or a missing json means the cache is
stale and is rebuilt, never read. Workers open the memmap lazily: it is shared through the page cache,
not copied into each worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from .io import atomic_write_text, read_image

FORMAT = 1


def default_cache_root() -> Path:
    base = os.environ.get("CXRBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cxrbench")
    return Path(base) / "images"


def cache_key(paths: list[str], size: int) -> str:
    h = hashlib.sha1(f"{FORMAT}:{size}:{len(paths)}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _default_sigterm() -> None:
    """Forked workers inherit the parent's signal handlers; under submitit (a SLURM job) SIGTERM is
    ignored there, so Pool.terminate() could not stop them and the job hung at exit instead of
    requeueing. Workers take the default: SIGTERM ends them."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _load_resized(args: tuple[str, int]) -> tuple[np.ndarray, int, int]:
    path, size = args
    img = read_image(path)
    h, w = img.shape
    if (h, w) != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    return img, h, w


class ImageCache:
    """``check`` (optional): called with every path before the cache is built, to refuse files the
    release never ships before one is decoded (the DataModule's format and bit-depth check)."""

    def __init__(self, prefix: Path, paths: list[str], size: int, check: Callable[[list[str]], None] | None = None):
        self.prefix, self.paths, self.size = Path(prefix), list(paths), int(size)
        self.check = check
        self.data_path = Path(f"{prefix}.u8")
        self.sizes_path = Path(f"{prefix}.sizes.npy")
        self.meta_path = Path(f"{prefix}.json")
        self._mm: np.memmap | None = None
        self._sizes: np.ndarray | None = None
        self._key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = cache_key(self.paths, self.size)
        return self._key

    def is_valid(self) -> bool:
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return False
        n, s = len(self.paths), self.size
        return (
            meta.get("key") == self.key
            and meta.get("shape") == [n, s, s]
            and self.data_path.is_file()
            and self.data_path.stat().st_size == n * s * s
            and self.sizes_path.is_file()
        )

    @property
    def nbytes(self) -> int:
        return len(self.paths) * self.size * self.size

    def check_space(self) -> None:
        """Refuse, before any image is decoded, a cache the disk cannot hold (with 5% to spare): the
        message names the folder and the gigabytes needed, and how to avoid the cache."""
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.prefix.parent).free
        need = int(self.nbytes * 1.05)
        if need > free:
            raise OSError(
                f"the image cache {self.data_path} needs {need / 1e9:.1f} GB ({len(self.paths)} images at "
                f"{self.size}²) but {self.prefix.parent} has {free / 1e9:.1f} GB free: point cache_dir (or "
                "$CXRBENCH_CACHE) at a larger disk, lower cache_size/eval_size, or set cache=False")

    def ensure(self, workers: int | None = None, progress: bool = True) -> "ImageCache":
        """Validate, or (re)build under a file lock so parallel ranks build it once."""
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        if self.is_valid():
            return self
        self.check_space()
        if self.check is not None:
            self.check(self.paths)
        with open(f"{self.prefix}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.is_valid():
                self._build(workers, progress)
        return self

    def _build(self, workers: int | None, progress: bool) -> None:
        n, s = len(self.paths), self.size
        with contextlib.suppress(FileNotFoundError):
            self.meta_path.unlink()  # from here on the old cache is invalid whatever happens
        tmp_data = Path(f"{self.data_path}.tmp{os.getpid()}")
        tmp_sizes = Path(f"{self.prefix}.tmp{os.getpid()}.sizes.npy")
        data = np.memmap(tmp_data, dtype=np.uint8, mode="w+", shape=(max(n, 1), s, s))
        sizes = np.zeros((n, 2), np.int32)
        workers = max(1, min(workers or len(os.sched_getaffinity(0)), n or 1))
        jobs = [(p, s) for p in self.paths]
        bar = dict(total=n, desc=f"cache {self.prefix.name}", unit="img", disable=not progress or None, mininterval=1.0)
        try:
            if workers == 1:
                results = map(_load_resized, jobs)
                it = tqdm(results, **bar)
                for i, (img, h, w) in enumerate(it):
                    data[i], sizes[i] = img, (h, w)
            else:
                ctx = mp.get_context("fork")
                with ctx.Pool(workers, initializer=_default_sigterm) as pool:
                    chunk = max(1, min(64, n // (workers * 8) or 1))
                    for i, (img, h, w) in enumerate(tqdm(pool.imap(_load_resized, jobs, chunksize=chunk), **bar)):
                        data[i], sizes[i] = img, (h, w)
            data.flush()
            del data
            np.save(tmp_sizes, sizes)
            os.replace(tmp_data, self.data_path)
            os.replace(tmp_sizes, self.sizes_path)
            meta = {"key": self.key, "shape": [n, s, s], "format": FORMAT, "n_images": n}
            atomic_write_text(self.meta_path, json.dumps(meta))
        finally:
            for t in (tmp_data, tmp_sizes):
                with contextlib.suppress(FileNotFoundError):
                    t.unlink()

    def __getitem__(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        if self._mm is None:  # opened lazily, in each worker process
            n, s = len(self.paths), self.size
            self._mm = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=(n, s, s))
            self._sizes = np.load(self.sizes_path)
        h, w = self._sizes[i]
        return np.array(self._mm[i]), (int(h), int(w))

    def __getstate__(self):  # never pickle an open memmap into a worker
        state = dict(self.__dict__)
        state["_mm"] = state["_sizes"] = None
        return state


class RowCache:
    """A cache over some rows of an index only (``rows``, sorted): indexed by the index's row, like a
    whole-index cache. The full-size test of AMM caches its test-type splits alone this way (NIH at
    1024² is ~118 GB for every image, ~11 GB for the cardiomegaly test + loc rows)."""

    def __init__(self, cache: ImageCache, rows: np.ndarray):
        self.cache, self.rows = cache, np.asarray(rows, np.int64)
        self._pos = {int(r): i for i, r in enumerate(self.rows)}

    def ensure(self, workers: int | None = None, progress: bool = True) -> "RowCache":
        self.cache.ensure(workers, progress)
        return self

    def __getitem__(self, row: int) -> tuple[np.ndarray, tuple[int, int]]:
        return self.cache[self._pos[int(row)]]
