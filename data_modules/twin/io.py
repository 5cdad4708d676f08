"""Output side of the twin: atomic dataset folders, a manifest, parallel rendering, image writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..io import atomic_write_text

MANIFEST = "twin.json"
TWIN_FORMAT = 2  # bump when the same spec would draw different pixels


class TwinError(ValueError):
    """A twin cannot be written as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class TwinSpec:
    dataset: str
    n: int
    seed: int
    size: int
    difficulty: float
    options: dict = field(default_factory=dict)
    format: int = TWIN_FORMAT

    def to_json(self) -> dict:
        return asdict(self)


def read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


class AtomicDir:
    """Build a dataset in a hidden sibling folder, then rename it into place in one step.

    A killed run leaves only ``.<name>.partial-*`` behind, never a folder that looks complete; the
    manifest is written last, inside the partial folder, before the rename.
    """

    def __init__(self, out: Path, spec: TwinSpec, force: bool = False):
        self.out, self.spec, self.force = Path(out), spec, force
        self.tmp = self.out.parent / f".{self.out.name}.partial-{uuid.uuid4().hex[:8]}"

    def already_done(self) -> bool:
        """True when ``out`` is a complete twin of the same spec; raises when it is something else."""
        if not self.out.exists():
            return False
        found = read_manifest(self.out)
        if found == self.spec.to_json() and not self.force:
            return True
        if found is None:
            raise TwinError(
                f"output folder {self.out} exists and is not a cxrbench twin (no {MANIFEST}); "
                "choose another --out or remove it yourself"
            )
        if not self.force:
            raise TwinError(
                f"output folder {self.out} holds a twin of another spec ({_diff(found, self.spec.to_json())}); "
                "pass --force to replace it or choose another --out"
            )
        return False

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.out.parent.glob(f".{self.out.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        write_json(self.tmp / MANIFEST, self.spec.to_json())
        if self.out.exists():  # --force over an earlier twin (checked in already_done)
            trash = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, trash)
            os.replace(self.tmp, self.out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)
        return False


def _diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} there vs {b.get(k)!r} asked" for k in keys)


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        fh.write(text)


def save_image(path: str, img: np.ndarray, fmt: str, dicom_uid: str | None = None) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        Image.fromarray(img).save(path, compress_level=1)
    elif fmt == "png-rgba":  # a few real NIH PNGs are RGBA: readers must convert
        Image.fromarray(img).convert("RGBA").save(path, compress_level=1)
    elif fmt == "jpg":
        Image.fromarray(img).save(path, quality=92)
    elif fmt == "dcm":
        _save_dicom(path, img, dicom_uid or Path(path).stem)
    else:
        raise ValueError(f"unknown image format {fmt!r}")


#: the real SIIM files' typical PixelSpacing (mm, at 1024²), written whatever the twin's size
PIXEL_SPACING_MM = 0.168


def _save_dicom(path: str, img: np.ndarray, uid: str) -> None:
    """A CR DICOM through SimpleITK, with every generated tag fixed so output is reproducible."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(img)
    # the geometry too: after a DICOM has been read in the same process, SimpleITK's GDCM writer takes
    # PixelSpacing from the image's spacing (1.0 by default) instead of the tag set below (and adds geometry
    # tags: such a file's bytes differ, its pixels and the tags the readers use do not)
    image.SetSpacing((PIXEL_SPACING_MM, PIXEL_SPACING_MM))
    tags = {
        "0008|0016": "1.2.840.10008.5.1.4.1.1.7",  # secondary capture
        "0008|0018": uid,  # SOP instance UID = ImageId, as in the SIIM release
        "0008|0060": "CR",
        "0010|0020": uid.split(".")[-2] if "." in uid else uid,
        "0020|000d": uid + ".2",
        "0020|000e": uid + ".3",
        "0008|0020": "19010101",
        "0008|0030": "000000",
        "0008|0012": "19010101",
        "0008|0013": "000000",
        "0028|0030": f"{PIXEL_SPACING_MM}\\{PIXEL_SPACING_MM}",
    }
    for k, v in tags.items():
        image.SetMetaData(k, v)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(path)
    writer.Execute(image)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_parallel(fn: Callable, jobs: list, workers: int | None, desc: str) -> list:
    """``[fn(j) for j in jobs]`` on ``workers`` processes, in order, with a progress bar."""
    workers = max(1, min(workers or default_workers(), len(jobs) or 1))
    bar = dict(total=len(jobs), desc=desc, unit="img", disable=None, mininterval=1.0)
    if workers == 1:
        return [fn(j) for j in tqdm(jobs, **bar)]
    chunk = max(1, min(32, len(jobs) // (workers * 8)))
    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(fn, jobs, chunksize=chunk), **bar))


def _init_worker() -> None:
    # Rendering is numpy/scipy; keep each worker on one BLAS thread so N workers use N cores.
    os.environ["OMP_NUM_THREADS"] = "1"


def iter_chunks(seq: list, n: int) -> Iterable[list]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
