"""The releases of each dataset as researchers download them today, and how the DataModules name them.

Every DataModule detects the variant of its dataset from what is on disk (``detect_release`` of each
dataset module), reads it through its one code path, or refuses it with a ``DataError`` naming the
variant found and the one needed. What a variant changes about the data (a choice between two
releases on disk, a misspelled source read under its right name, a header line skipped) is said in a
``ReleaseNote`` warning, never silently. ``release_tables`` says which paper tables a release on disk
can run and, for the others, what to download.

Variants (public sources in brackets):

- COVIDx (``covidx``) [github.com/lindawangg/COVID-Net ``docs/COVIDx.md`` and ``labels/``; Kaggle
  andyczhao/covidx-cxr2]: COVIDx CXR-4 (``train.txt``, ``val.txt``, ``test.txt``, positive/negative);
  the Kaggle CXR-2/CXR-3 ``train.txt``/``test.txt``; COVID-Net's own lists ``train_COVIDx_CXR-3A.txt`` /
  ``test_COVIDx_CXR-3A.txt`` (CXR-3, three-class; ``…-3B`` binary), ``train_COVIDx9A.txt`` (CXR-2 = V9A,
  three-class, with its 199 rows of source ``rnsa``), and the older V1–V8 lists (rows of 3 fields
  without a source, patient ids with a space: ``COVID 70 COVID(70).png COVID-19 sirm``).
- CheXpert (``chexpert``) [stanfordmlgroup CheXpert; rajpurkarlab/cheXlocalize README]:
  ``CheXpert-v1.0-small`` and ``CheXpert-v1.0`` (chosen by the input size when both are present), and
  the labelled test set of CheXlocalize (``test_labels.csv``, 668 images of 500 patients).
- SIIM-ACR (``siim``) [Kaggle siim-acr-pneumothorax-segmentation; sneddy/pneumothorax-segmentation's
  ``input/``; Kaggle vbookshelf/pneumothorax-chest-xray-images-and-masks]: stage 1 (``train-rle.csv`` +
  ``dicom-images-train/``), stage 2 (``stage_2_train.csv`` + ``dicom-images-train/`` and the now
  labelled ``dicom-images-test/``), a PNG export of either, and the PNG conversion with mask PNGs
  (``png_images/``, ``png_masks/``, ``stage_1_train_images.csv``, ``stage_1_test_images.csv``).
- Lung masks (``lungs``) [NLM Montgomery/Shenzhen sets; Kaggle yoctoman/shcxr-lung-mask (the 566
  Shenzhen masks); Kaggle nikhilpandey360/chest-xray-masks-and-labels]: the per-site folders, and the
  combined "Chest X-ray Masks and Labels" set (``Lung Segmentation/CXR_png`` + ``masks/``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path


class ReleaseNote(UserWarning):
    """What a release on disk changes about the data, said once at setup (a choice, a repair)."""


def note(message: str) -> None:
    warnings.warn(message, ReleaseNote, stacklevel=3)


@dataclass(frozen=True)
class Release:
    """A variant of a dataset found on disk: its name, the files that identify it, what it supports."""

    dataset: str
    name: str
    files: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()  # the tasks (or protocols) the variant can give
    details: dict = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        files = f" ({', '.join(self.files)})" if self.files else ""
        return f"{self.name}{files}"


def detect_release(dataset: str, root: str | Path, **options) -> Release:
    """The variant of ``dataset`` under ``root`` (a ``DataError`` names what is there otherwise)."""
    from . import chexpert, covidx, lungs, siim

    modules = {"covidx": covidx, "chexpert": chexpert, "siim": siim, "lungs": lungs}
    if dataset not in modules:
        raise ValueError(f"no release detection for {dataset!r}; datasets: {sorted(modules)}")
    return modules[dataset].detect_release(Path(root), **options)


def release_tables(dataset: str, root: str | Path, **options) -> dict[str, str | None]:
    """Paper table -> None where the release under ``root`` can run it, else what to download."""
    from . import covidx

    if dataset != "covidx":
        return {}
    return covidx.release_tables(detect_release(dataset, root, **options))


__all__ = ["Release", "ReleaseNote", "note", "detect_release", "release_tables"]
