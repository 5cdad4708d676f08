"""The twin: real metadata, synthetic pixels, the real on-disk layouts (SPEC §2.2).

``generate("nih", out, n=300, seed=0)`` writes a dataset the DataModules read exactly as they read
the real release. Same arguments -> byte-identical files. The folder appears only when complete.
"""

from __future__ import annotations

import importlib
from pathlib import Path

#: the datasets a twin can be written of (each has a writer module of that name, imported on use: PEP 562
#: ``WRITERS``, so that reading these declarations, as ``cxrbench --help`` does, imports no image stack)
DATASETS = ("nih", "chexpert", "covidx", "siim", "lungs")
#: Image side by default: the released size where there is one (NIH and SIIM are 1024²).
DEFAULT_SIZE = {"nih": 1024, "chexpert": 320, "covidx": 512, "siim": 1024, "lungs": 512}
#: The release variants each twin can write (``release`` option, ``cxrbench twin --release``); without
#: it, each writes the layout it always wrote (the first listed here). See each writer's docstring.
RELEASES = {
    "covidx": {"cxr4": "train.txt, val.txt, test.txt; positive/negative",
               "cxr3": "train_COVIDx_CXR-3A.txt, test_COVIDx_CXR-3A.txt",
               "cxr2": "train_COVIDx9A.txt, test_COVIDx9A.txt, with 'rnsa' sources",
               "v7a": "train_COVIDx7A.txt, test_COVIDx7A.txt: 3-, 4- and 5-field rows"},
    "chexpert": {"small": "CheXpert-v1.0-small (the default)", "full": "CheXpert-v1.0",
                 "both": "CheXpert-v1.0-small at --size and CheXpert-v1.0 at twice it",
                 "chexlocalize": "CheXpert-v1.0-small and CheXlocalize's CheXpert/test_labels.csv + test/"},
    "siim": {"stage1": "train-rle.csv + dicom-images-train/ (the default)",
             "stage2": "stage_2_train.csv + dicom-images-train/ and dicom-images-test/",
             "png": "siim-acr-pneumothorax/: png_images/, png_masks/, stage_1_{train,test}_images.csv"},
    "lungs": {"separate": "Montgomery/ and Shenzhen/ (the default)",
              "combined": "Chest X-ray Masks and Labels: Lung Segmentation/CXR_png + masks/"},
}

__all__ = ["generate", "WRITERS", "DATASETS", "DEFAULT_SIZE", "RELEASES", "TwinError", "TwinSpec", "read_manifest"]


def __getattr__(name: str):
    if name == "WRITERS":
        value = {d: importlib.import_module(f".{d}", __name__) for d in DATASETS}
    elif name in ("AtomicDir", "TwinError", "TwinSpec", "read_manifest"):
        value = getattr(importlib.import_module(".io", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


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
    from .io import AtomicDir, TwinError, TwinSpec

    if dataset not in DATASETS:
        raise TwinError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if int(n) < 1:
        raise TwinError(f"--n must be at least 1, got {n}")
    size = int(size or DEFAULT_SIZE[dataset])
    if size < 32:
        raise TwinError(f"--size must be at least 32 pixels, got {size}")
    if not 0.0 <= difficulty <= 1.0:
        raise TwinError(f"--difficulty must be in [0, 1], got {difficulty}")
    if dataset == "covidx" and options.get("vocabulary", "3class") not in ("3class", "binary"):
        raise TwinError(f"--vocabulary must be '3class' or 'binary', got {options['vocabulary']!r}")
    if "n_valid" in options and (dataset != "chexpert" or not isinstance(options["n_valid"], int)
                                 or options["n_valid"] < 1):
        raise TwinError(f"n_valid (valid.csv's rows) is an option of the chexpert twin, a whole number of at least "
                        f"1; got {options['n_valid']!r} for {dataset}")
    if "shortcut" in options:
        if dataset != "chexpert":
            raise TwinError(f"--shortcut is an option of the chexpert twin (the STN paper's lettering outside the "
                            f"thorax), not of {dataset}")
        from .chexpert import shortcut_strength

        shortcut_strength(TwinSpec(dataset, int(n), int(seed), size, float(difficulty), dict(options)))
    release = options.get("release")
    if release is not None:
        if release not in RELEASES.get(dataset, {}):
            known = ", ".join(f"{k} ({v})" for k, v in RELEASES.get(dataset, {}).items()) or "none: one layout only"
            raise TwinError(f"--release {release!r} is not a release of the {dataset} twin; releases: {known}")
        if dataset == "covidx" and "vocabulary" in options:
            raise TwinError("--vocabulary sets the labels of the default covidx layout; a --release writes its own "
                            "(cxr4: positive/negative; cxr3, cxr2, v7a: normal/pneumonia/COVID-19)")
    spec = TwinSpec(dataset, int(n), int(seed), size, float(difficulty), dict(sorted(options.items())))
    target = AtomicDir(Path(out), spec, force=force)
    if target.already_done():
        return Path(out)
    # Fail on a missing source file before anything is written.
    from .sources import lung_bank

    lung_bank()
    with target as tmp:
        importlib.import_module(f".{dataset}", __name__).write(tmp, spec, workers)
    return Path(out)
