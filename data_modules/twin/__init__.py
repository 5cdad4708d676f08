"""The twin: real metadata, synthetic pixels, the real on-disk layouts (SPEC §2.2).

``generate("nih", out, n=300, seed=0)`` writes a dataset the DataModules read exactly as they read
the real release. Same arguments -> byte-identical files. The folder appears only when complete.
"""

from __future__ import annotations

from pathlib import Path

from . import chexpert, covidx, lungs, nih, siim
from .io import AtomicDir, TwinError, TwinSpec, read_manifest

WRITERS = {"nih": nih, "chexpert": chexpert, "covidx": covidx, "siim": siim, "lungs": lungs}
#: Image side by default: the released size where there is one (NIH and SIIM are 1024²).
DEFAULT_SIZE = {"nih": 1024, "chexpert": 320, "covidx": 512, "siim": 1024, "lungs": 512}

__all__ = ["generate", "WRITERS", "DEFAULT_SIZE", "TwinError", "TwinSpec", "read_manifest"]


def generate(
    dataset: str,
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int | None = None,
    difficulty: float = 0.5,
    workers: int | None = None,
    force: bool = False,
    **options,
) -> Path:
    """Write a twin of ``dataset`` into ``out``; returns ``out``. Reuses a finished twin of the same spec."""
    if dataset not in WRITERS:
        raise TwinError(f"unknown dataset {dataset!r}; choose one of {', '.join(WRITERS)}")
    if int(n) < 1:
        raise TwinError(f"--n must be at least 1, got {n}")
    size = int(size or DEFAULT_SIZE[dataset])
    if size < 32:
        raise TwinError(f"--size must be at least 32 pixels, got {size}")
    if not 0.0 <= difficulty <= 1.0:
        raise TwinError(f"--difficulty must be in [0, 1], got {difficulty}")
    if dataset == "covidx" and options.get("vocabulary", "3class") not in ("3class", "binary"):
        raise TwinError(f"--vocabulary must be '3class' or 'binary', got {options['vocabulary']!r}")
    spec = TwinSpec(dataset, int(n), int(seed), size, float(difficulty), dict(sorted(options.items())))
    target = AtomicDir(Path(out), spec, force=force)
    if target.already_done():
        return Path(out)
    # Fail on a missing source file before anything is written.
    from .sources import lung_bank

    lung_bank()
    with target as tmp:
        WRITERS[dataset].write(tmp, spec, workers)
    return Path(out)
