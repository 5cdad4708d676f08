"""CAMContrast's crop-level dataset: five fixed crops per image, each an instance, with its heatmap crop.

Paper: ../shared/papers/004_724384b118fd035f.txt, §3.1 ("the crop-level dataset was pre-generated"),
§3.2 (fixed crop training, negative and background suppression), Algorithm 1. Every image is resized
to ``full_size`` (448) and cut into four non-overlapping corner crops and one centre crop of
``full_size // 2`` (224), at (top, left) = (0, 0), (0, 224), (224, 0), (224, 224), (112, 112) — the
public code's positions (``crop_origins``). Each crop is its own instance: crops of one image at
different positions are negatives of each other.

The heatmaps these crops come with are stage 1's ``heatmaps`` artifact (``data_modules.heatmaps``).

- the **crop DataModule** ``NIHCrops``: NIH (coarse normal/abnormal labels by default) whose train and
  val splits are the five crops of each image, the image crop through the preset's random transforms,
  and — when ``heatmaps`` names an artifact — its heatmap crop, resized to ``heatmap_size`` (14×14)
  when read, as the public code does, and zeroed for normal images (negative suppression, Fig. 2).
  Without ``heatmaps`` it is the crop dataset of the baselines SimCLR-crop, SupCE-crop, SupCon-crop.

Batches of the crop splits: ``image`` [B, 1, s, s] (or [B, V, 1, s, s] with ``views`` > 1), ``heatmap``
[B, 1, 14, 14] float in [0, 1] (with heatmaps), ``label`` [B, 1], ``index`` = row·5 + crop (one id per
instance, what the online probe de-duplicates on), ``row`` (the image's index row), ``crop`` (0–4:
tl, tr, bl, br, c), ``patient_id``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from .base import DatasetIndex, collate
from .cache import ImageCache
from .heatmaps import HeatmapStore, dataset_key
from .io import DataError, read_image
from .nih import NIH
from .transforms import build_transforms

CROP_NAMES = ("tl", "tr", "bl", "br", "c")
#: uint8 pixels above this are foreground (public code: raw pixel > 15/255; paper Fig. 3: threshold 15)
FOREGROUND_THRESHOLD = 15


def crop_origins(full: int, crop: int) -> list[tuple[int, int]]:
    """(top, left) of the five fixed crops of a ``full``² image, in CROP_NAMES order (public code:
    the centre crop starts at int((full − crop + 1) / 2))."""
    if not 0 < crop <= full:
        raise ValueError(f"crop {crop} must be in (0, {full}]")
    far, mid = full - crop, int((full - crop + 1) * 0.5)
    return [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]


def read_full(cache: ImageCache | None, path: str, row: int, size: int) -> np.ndarray:
    """Image ``row`` as uint8 [size, size]: from the cache (resized with PIL bilinear when the cache's
    side differs, the same resize the cache itself uses) or decoded from ``path``."""
    img = cache[row][0] if cache is not None else read_image(path)
    if img.shape != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    return img


# ---------------------------------------------------------------------------------------- datasets
class FullImages(Dataset):
    """Whole images at ``size``² as uint8 [1, size, size] with their index row: what stage 1's heatmap
    export reads (no random transform: the crops are cut from exactly this image)."""

    def __init__(self, index: DatasetIndex, rows: np.ndarray, size: int, cache: ImageCache | None):
        self.rows, self.size, self.cache = np.asarray(rows, np.int64), int(size), cache
        self._paths = index.meta["path"].tolist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        r = int(self.rows[i])
        return {"image": torch.from_numpy(read_full(self.cache, self._paths[r], r, self.size))[None], "index": r}


def export_rows(dm) -> np.ndarray:
    """Every train and val row of a DataModule before its label fraction (stage 1's heatmap export)."""
    if not dm.datasets:
        dm.setup("fit")
    splits = dm.make_splits(dm.index)  # again: the splits before the label fraction
    return np.unique(np.concatenate([np.asarray(splits[s], np.int64) for s in ("train", "val") if s in splits]))


def export_loader(dm, size: int, batch_size: int | None = None) -> tuple[DataLoader, np.ndarray]:
    """A loader of the whole train+val images of ``dm`` at ``size``², in row order, and those rows."""
    rows = export_rows(dm)
    cache = dm.image_cache().ensure() if dm.use_cache else None
    if cache is not None and dm.cache_size < size:
        raise DataError(f"heatmap export at {size}² needs cache_size >= {size} (it is {dm.cache_size}) or cache=False")
    ds = FullImages(dm.index, rows, size, cache)
    return DataLoader(ds, batch_size=batch_size or dm.batch_size, shuffle=False, num_workers=dm.num_workers), rows


class CropDataset(Dataset):
    """The five fixed crops of each row as instances (index i: row ``rows[i // 5]``, crop ``i % 5``)."""

    def __init__(self, index: DatasetIndex, rows: np.ndarray, transform, cache: ImageCache | None, full_size: int,
                 views: int = 1, heatmaps: HeatmapStore | None = None, heatmap_size: int = 14):
        self.rows, self.transform, self.cache = np.asarray(rows, np.int64), transform, cache
        self.full_size, self.crop_size = int(full_size), int(full_size) // 2
        self.origins = crop_origins(self.full_size, self.crop_size)
        self.views, self.heatmaps, self.heatmap_size = int(views), heatmaps, int(heatmap_size)
        self._paths = index.meta["path"].tolist()
        self._pids = index.meta["patient_id"].astype(str).tolist()
        self._labels = index.labels.to_numpy(np.float32)

    def __len__(self) -> int:
        return len(self.rows) * len(self.origins)

    def locate(self, i: int) -> tuple[int, int, int, int]:
        """(row, crop, top, left) of instance ``i``."""
        r, k = int(self.rows[i // len(self.origins)]), i % len(self.origins)
        return (r, k, *self.origins[k])

    def image_crop(self, i: int) -> np.ndarray:
        """The untransformed image crop of instance ``i`` (uint8 [crop, crop])."""
        r, _, top, left = self.locate(i)
        img = read_full(self.cache, self._paths[r], r, self.full_size)
        return img[top:top + self.crop_size, left:left + self.crop_size]

    def heatmap_crop(self, i: int, resize: bool = True) -> torch.Tensor:
        """Instance ``i``'s heatmap crop: [1, 14, 14] float in [0, 1] as stage 2 reads it (PIL bilinear
        resize of the uint8 crop, as the public code's ``Resize((14, 14))``), zeros for a normal image;
        ``resize=False``: the stored crop at full resolution, before suppression (for checks)."""
        r, _, top, left = self.locate(i)
        hm = self.heatmaps.crop(r, top, left, self.crop_size)
        if not resize:
            return torch.from_numpy(hm)[None]
        if self._labels[r, 0] != 1:  # negative suppression: a normal image's heatmap crop is empty
            return torch.zeros(1, self.heatmap_size, self.heatmap_size)
        small = np.asarray(Image.fromarray(hm).resize((self.heatmap_size, self.heatmap_size), Image.BILINEAR))
        return torch.from_numpy(small.astype(np.float32) / 255.0)[None]

    def __getitem__(self, i: int) -> dict:
        r, k, _, _ = self.locate(i)
        crop = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(self.image_crop(i)))[None])
        if self.views > 1:
            image = torch.stack([self.transform(crop).as_subclass(torch.Tensor) for _ in range(self.views)])
        else:
            image = self.transform(crop).as_subclass(torch.Tensor)
        out = {"image": image, "label": torch.from_numpy(self._labels[r].copy()), "index": r * len(self.origins) + k,
               "row": r, "crop": k, "patient_id": self._pids[r]}
        if self.heatmaps is not None:
            out["heatmap"] = self.heatmap_crop(i)
        return out


# ---------------------------------------------------------------------------------------- DataModule
class NIHCrops(NIH):
    """NIH ChestX-ray14 as CAMContrast's crop-level dataset (stage 2 and the "-crop" baselines).

    Args (beyond NIH's; ``label_set`` defaults to 'abnormal', ``transforms`` to 'camcontrast',
    ``image_size`` — the side a crop is trained at — to 224, ``cache_size`` to ``full_size``):
        full_size: side of the whole image the five crops are cut from (448; crops of full_size // 2).
        heatmaps: path of a ``heatmaps`` artifact of CAMContrast stage 1 (``${needs.heatmaps}`` in a
            sweep); each crop then comes with its heatmap crop. None: image crops only (baselines).
        heatmaps_run: the stage-1 run id the heatmaps must come from (default: the run folder the
            artifact sits in, ``<runs>/<run id>/artifacts/heatmaps``).
        heatmap_size: side the heatmap crop is resized to when read (14, public code).

    Refused before training, each with a message naming both sides: a heatmap artifact of another
    stage-1 run, of another image size or of another dataset (other image list) than this module's;
    a train or val image without a heatmap; heatmaps on a label set other than the binary
    normal/abnormal one (normal crops could not be zeroed); a training split without normal or without
    abnormal images.
    """

    def __init__(self, root: str, heatmaps: str | None = None, heatmaps_run: str | None = None, full_size: int = 448,
                 heatmap_size: int = 14, label_set: str = "abnormal", transforms: str = "camcontrast",
                 image_size: int | None = 224, cache_size: int | None = None, **kwargs):
        if full_size < 2 or full_size % 2:
            raise DataError(f"full_size must be an even number of pixels, got {full_size}")
        super().__init__(root, label_set=label_set, transforms=transforms, image_size=image_size,
                         cache_size=int(cache_size or full_size), **kwargs)
        if self.use_cache and self.cache_size < full_size:
            raise DataError(f"full_size {full_size} exceeds cache_size {self.cache_size}: set cache_size >= {full_size} "
                            f"(= {full_size} reads crops without a resize) or cache=False")
        if heatmap_size < 7:
            raise DataError(f"heatmap_size must be >= 7 (three unpadded 3×3 convolutions follow), got {heatmap_size}")
        if heatmaps is not None and label_set != "abnormal":
            raise DataError(f"nih crops: heatmaps need label_set 'abnormal' (normal crops are zeroed by the coarse "
                            f"label), got label_set {label_set!r}")
        self.heatmaps_path, self.heatmaps_run = heatmaps, heatmaps_run
        self.full_size, self.heatmap_size = int(full_size), int(heatmap_size)
        self.heatmap_store: HeatmapStore | None = None

    def open_heatmaps(self) -> HeatmapStore:
        """The heatmap artifact, checked against this DataModule (run, image size, dataset)."""
        path = Path(self.heatmaps_path)
        store = HeatmapStore(path)
        meta = store.meta
        expect_run = self.heatmaps_run
        if expect_run is None and path.parent.name == "artifacts":
            expect_run = path.parent.parent.name
        if expect_run is not None and store.producer_run != expect_run:
            raise DataError(f"heatmaps {path} were written by stage-1 run {store.producer_run!r}, but this cell expects "
                            f"run {expect_run!r}: the artifact belongs to another stage-1 run; rerun that cell")
        if store.size != self.full_size:
            raise DataError(f"heatmaps {path} are {store.size}² (stage 1 image_size), but this DataModule cuts its crops "
                            f"from {self.full_size}² images (full_size): set full_size {store.size} or regenerate them")
        index = self.prepare_index()
        key = dataset_key(index)
        if meta.get("dataset") != index.name or meta.get("dataset_key") != key:
            raise DataError(f"heatmaps {path} were made for dataset {meta.get('dataset')!r} at {meta.get('dataset_root')} "
                            f"({meta.get('n_index')} images), but this DataModule reads {index.name!r} at {self.root} "
                            f"({len(index.meta)} images): another dataset or image list")
        return store

    def samples_per_row(self, split: str) -> int:
        return len(crop_origins(self.full_size, self.full_size // 2)) if split in ("train", "val") else 1

    def build_datasets(self) -> None:
        super().build_datasets()
        store = self.open_heatmaps() if self.heatmaps_path is not None else None
        if store is not None:
            for split in ("train", "val"):
                rows = self.splits[split]
                missing = rows[~store.has(rows)]
                if len(missing):
                    names = self.index.meta["path"].iloc[missing[:3]].map(os.path.basename).tolist()
                    raise DataError(f"nih crops: {len(missing)} of {len(rows)} {split} images have no heatmap in "
                                    f"{self.heatmaps_path} (e.g. {names}): the heatmaps cover the train+val images of "
                                    f"stage 1's split ({store.meta.get('split')}); use the same protocol, split_seed "
                                    "and val_share in both stages")
            lab = self.index.labels.to_numpy()[self.splits["train"], 0]
            n_norm, n_abn = int((lab == 0).sum()), int((lab == 1).sum())
            if n_norm == 0 or n_abn == 0:
                raise DataError(f"nih crops: the training split has {n_norm} normal and {n_abn} abnormal images; "
                                "CAMContrast contrasts abnormal heatmaps with the empty ones of normal images and needs both")
        self.heatmap_store = store
        cache = self.image_cache() if self.use_cache else None
        for split in ("train", "val"):
            views = self.views
            t = build_transforms(self.preset, split == "train" or views > 1, self.image_size, self.image_size)
            self.datasets[split] = CropDataset(self.index, self.splits[split], t, cache, self.full_size, views, store,
                                               self.heatmap_size)

    def summary(self) -> str:
        text = super().summary()
        if self.heatmap_store is not None:
            text += f"\n  heatmaps: {self.heatmaps_path} (stage-1 run {self.heatmap_store.producer_run})"
        return text + f"\n  crops: 5 per image of {self.full_size}², {self.full_size // 2}² each, trained at {self.image_size}²"


__all__ = ["CROP_NAMES", "FOREGROUND_THRESHOLD", "crop_origins", "FullImages", "CropDataset", "NIHCrops", "export_loader",
           "export_rows", "collate"]
