"""What a DataModule hands the method it trains: the one door between data and method.

A ``CXRDataModule`` builds a ``DataContract`` in ``setup`` and hands it to the LightningModule it is
attached to (``module.bind_data(contract)``), before the module's own ``setup``: data flows one way,
DataModule → method. Methods, their models and cxrbench's callbacks read the data only through it
(``pl_module.data``), never ``trainer.datamodule``.

Most fields are plain values. Three are *doors*, callables that do data work only when a method
asks, because most methods never do and the work can be large:

- ``box_prior()``: the mean box per class, as fractions of the image side, from the dataset's box
  file (RGT's BYOA box size and fallback);
- ``train_batches()``: the training split once, in row order, with its transforms (a method that
  starts from its data, e.g. the thorax-box regressor's anchor box);
- ``full_images(size, batch_size)``: every train and val image (before the label fraction) whole at
  ``size``², in row order, as ``(batches, rows)`` (CAMContrast stage 1's heatmap export).

A method states the doors and optional fields it needs in ``data_needs``; binding refuses a
DataModule that cannot provide one, naming both, before any training step. Reading a field the
contract does not have is an ``AttributeError`` that lists the fields it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .io import DataError


@dataclass(frozen=True)
class BoxPrior:
    """Mean box per class as fractions of the image side: centres (cx, cy) and sizes (w, h), [K, 2]."""

    classes: tuple[str, ...]
    center: np.ndarray
    size: np.ndarray


@dataclass(frozen=True)
class DataContract:
    """The data a method may know. See the module docstring; ``images`` is the index's metadata table
    (one row per image: ``path``, ``patient_id`` and the release's own columns such as ``source``)."""

    dataset: str  # the release's name ("nih", "chexpert", …)
    datamodule: str  # the DataModule's class name (NIH, NIHCrops, …)
    root: Path
    label_kind: str  # multilabel | binary | multiclass | segmentation
    classes: tuple[str, ...]
    split_rows: dict[str, np.ndarray]  # index rows per split, after the label fraction
    test_splits: tuple[str, ...]  # the test dataloaders' splits, in order
    image_size: int  # training (and validation) input side
    eval_size: int  # test-type splits' input side
    preset: str  # the transform preset
    fraction: float
    split_seed: int
    images: pd.DataFrame
    train_positives: tuple[int, ...]  # per class, in the training split
    train_negatives: tuple[int, ...]
    protocol: str | None = None
    fold: int | None = None  # set under a cross-validation protocol only
    val_share: float | None = None
    sites: tuple[str, ...] = ()  # the training sites, where a release has several (lung masks)
    box_prior: Callable[[], BoxPrior] | None = None
    #: the file of the batches' ``oracle_boxes`` (one box per image and class: NIH's ``oracle_boxes``
    #: option, e.g. the twin's twin_boxes.csv); None where the batches carry none
    oracle_boxes: Path | None = None
    train_batches: Callable[[], object] | None = None
    full_images: Callable[[int, int | None], tuple[object, np.ndarray]] | None = None
    notes: dict = field(default_factory=dict)

    def __getattr__(self, name: str):  # only called for names the dataclass does not have
        raise AttributeError(f"the data contract has no field {name!r}; its fields are "
                             f"{', '.join(f.name for f in fields(DataContract))} (data_modules/contract.py)")

    @property
    def split_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.split_rows.items()}

    def require(self, needs: tuple[str, ...] | list[str], who: str) -> None:
        """Refuse, in one line, a contract without a field or door ``who`` (a method) needs."""
        names = {f.name for f in fields(DataContract)}
        unknown = [n for n in needs if n not in names]
        if unknown:
            raise DataError(f"{who} asks the data contract for {unknown}, which it never has; its fields are "
                            f"{sorted(names)}")
        missing = [n for n in needs if getattr(self, n) in (None, ())]
        if missing:
            raise DataError(f"{who} needs {missing} from its DataModule, which {self.datamodule} at {self.root} does "
                            f"not provide (task {self.label_kind}, classes {list(self.classes)}): pick a DataModule "
                            "that has them")


def contract_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(DataContract))


def label_counts(labels: pd.DataFrame, rows: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(positives, negatives) per class over ``rows``; unknown labels (NaN) count as neither."""
    lab = labels.to_numpy(np.float64)[np.asarray(rows, int)]
    return tuple(int(v) for v in np.nansum(lab == 1, 0)), tuple(int(v) for v in np.nansum(lab == 0, 0))


__all__ = ["BoxPrior", "DataContract", "contract_fields", "label_counts"]
