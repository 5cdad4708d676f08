"""The contract every dataset meets, the Dataset that reads it, and the shared LightningDataModule.

A dataset is a ``DatasetIndex``: a metadata table (one row per image file: ``path``, ``patient_id``,
…), a labels table beside it (float, NaN = unknown for this task), the rows this task may use
(``eligible``), and optionally boxes (pixels of the image file) and mask sources. A subclass of
``CXRDataModule`` only builds the index and its splits; reading, caching, label fractions,
transforms and batching are here, identical for every dataset and every method.

A batch is a dict: ``image`` uint8 [B, 1, H, W] (float32 in [0, 1] once on the device: ``transforms.to_float``); ``label`` float [B, C] (NaN = unknown) or
long [B] for multi-class tasks; ``index`` (row of the index) and ``patient_id``; ``mask`` uint8
[B, 1, H, W] where masks exist, with ``orig_size`` (long [B, 2]: the file's H, W) and ``pixel_mm`` (float32
[B, 2]: a file pixel's size in mm, row and column, NaN where neither the DICOM header nor the release's
``field_mm`` meta column says it); ``boxes`` (list of float [k, 4] XYXY pixels of the transformed image; empty for images without boxes)
and ``box_labels`` (list of long [k], class positions, -1 outside the label set) where boxes exist;
``oracle_boxes`` (float [B, C, 4], XYXY pixels of the transformed image, one per class) and
``oracle_known`` (bool [B, C]: False where the oracle file has no box of that class for the image) where
the index has oracle boxes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, default_collate
from torchvision import tv_tensors

from .cache import ImageCache, RowCache, default_cache_root
from .checks import ImageFormat, check_image_formats, check_mask_sizes
from .contract import BoxPrior, DataContract, label_counts
from .io import DataError, dicom_pixel_spacing, read_image
from .rle import decode_union
from .splits import check_label_coverage, label_fraction, stratum_keys
from .transforms import build_transforms

TASKS = ("multilabel", "binary", "multiclass", "segmentation")


@dataclass
class DatasetIndex:
    name: str
    root: Path
    meta: pd.DataFrame  # RangeIndex; columns include path (absolute) and patient_id; optional field_mm
    labels: pd.DataFrame  # same index; float with NaN for unknown; columns = class names
    task: str
    eligible: np.ndarray | None = None  # rows this task/filter may use (default: any known label)
    boxes: pd.DataFrame | None = None  # row, label, x0, y0, x1, y1 in pixels of the image file
    masks: list | None = None  # per row: ("rle", (str, ...)) | ("files", (path, ...)) | None
    notes: dict = field(default_factory=dict)
    #: One box per (row, class) where an oracle says where each finding is, or would be (RGT's oracle-box
    #: experiment; NIH's ``oracle_boxes`` option): row, label, x0, y0, x1, y1 in pixels of the image file.
    #: Unlike ``boxes`` it never decides a split.
    oracle_boxes: pd.DataFrame | None = None
    oracle_file: Path | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.eligible is None:
            self.eligible = ~self.labels.isna().all(axis=1).to_numpy()
        self.eligible = np.asarray(self.eligible, bool)

    @property
    def classes(self) -> list[str]:
        return list(self.labels.columns)

    def rows_with_boxes(self) -> np.ndarray:
        return np.array([], int) if self.boxes is None else np.unique(self.boxes["row"].to_numpy())


def class_box_prior(index: DatasetIndex, rows=None) -> BoxPrior:
    """The mean box per class of an index's box file (pixels of each image file) as fractions of the
    image side, over ``rows`` (default: all). Reads each box image's size from its file."""
    if index.boxes is None or len(index.boxes) == 0:
        raise DataError(f"{index.name}: BYOA needs box statistics, but this index has no boxes "
                        "(NIH needs BBox_List_2017.csv)")
    boxes = index.boxes if rows is None else index.boxes[index.boxes["row"].isin(set(np.asarray(rows).tolist()))]
    sizes = {}
    for r in boxes["row"].unique():
        with Image.open(index.meta["path"].iloc[int(r)]) as im:
            sizes[int(r)] = im.size  # (w, h): box pixels are relative to the file's size
    wh = np.array([sizes[int(r)] for r in boxes["row"]], np.float64)
    x0, y0 = boxes["x0"].to_numpy() / wh[:, 0], boxes["y0"].to_numpy() / wh[:, 1]
    x1, y1 = boxes["x1"].to_numpy() / wh[:, 0], boxes["y1"].to_numpy() / wh[:, 1]
    center, size, missing = [], [], []
    for c in index.classes:
        sel = boxes["label"].to_numpy() == c
        if not sel.any():
            missing.append(c)
            continue
        center.append([((x0 + x1) / 2)[sel].mean(), ((y0 + y1) / 2)[sel].mean()])
        size.append([(x1 - x0)[sel].mean(), (y1 - y0)[sel].mean()])
    if missing:
        raise DataError(f"{index.name}: no box in the training data for class(es) {missing}; BYOA needs a "
                        "mean box per class (use a label set whose classes all have boxes, e.g. nih8)")
    return BoxPrior(tuple(index.classes), np.array(center), np.array(size))


def load_mask(source, out_hw: tuple[int, int]) -> np.ndarray:
    """A mask source ("rle" strings in the 1024² SIIM frame, or mask files to union) at out_hw."""
    kind, items = source
    if kind == "rle":
        m = decode_union(list(items), 1024, 1024)
    elif kind == "files":
        m = None
        for p in items:
            a = read_image(p) > 0
            m = a if m is None else (m | a)
        m = m.astype(np.uint8)
    else:
        raise ValueError(f"unknown mask source {kind!r}")
    if m.shape != tuple(out_hw):
        m = np.asarray(Image.fromarray(m).resize((out_hw[1], out_hw[0]), Image.NEAREST))
    return m


class CXRDataset(Dataset):
    """One split's images. ``views`` > 1 (pretraining): ``image`` is [V, 1, H, W], V independent draws of
    the (random) transform of the same image — the views a contrastive method compares."""

    def __init__(self, index: DatasetIndex, rows: np.ndarray, transform, cache: ImageCache | None = None,
                 views: int = 1):
        self.index, self.rows, self.transform, self.cache = index, np.asarray(rows, int), transform, cache
        self.views = int(views)
        self._paths = index.meta["path"].tolist()
        self._pids = index.meta["patient_id"].astype(str).tolist()
        self._labels = index.labels.to_numpy(np.float32)
        self._boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._mm: dict[int, tuple[float, float]] = {}
        if index.boxes is not None:
            cls = {c: i for i, c in enumerate(index.classes)}
            for r, g in index.boxes.groupby("row"):
                self._boxes[int(r)] = (g[["x0", "y0", "x1", "y1"]].to_numpy(np.float32),
                                       np.array([cls.get(l, -1) for l in g["label"]], np.int64))
        self._oracle = None if index.oracle_boxes is None else oracle_per_class(index)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        r = int(self.rows[i])
        if self.cache is not None:
            img, (h0, w0) = self.cache[r]
        else:
            img = read_image(self._paths[r])
            h0, w0 = img.shape
        h, w = img.shape
        if self.views > 1:
            image = tv_tensors.Image(torch.from_numpy(img)[None])
            views = torch.stack([self.transform(image).as_subclass(torch.Tensor) for _ in range(self.views)])
            return {"image": views, "label": self._label(r), "index": r, "patient_id": self._pids[r]}
        sample = {"image": tv_tensors.Image(torch.from_numpy(img)[None])}
        boxes = self._boxes.get(r)
        if boxes is not None:
            xyxy = boxes[0] * np.array([w / w0, h / h0, w / w0, h / h0], np.float32)
            sample["boxes"] = tv_tensors.BoundingBoxes(torch.from_numpy(xyxy), format="XYXY", canvas_size=(h, w))
        if self._oracle is not None:
            xyxy = self._oracle[0][r] * np.array([w / w0, h / h0, w / w0, h / h0], np.float32)
            sample["oracle"] = tv_tensors.BoundingBoxes(torch.from_numpy(xyxy), format="XYXY", canvas_size=(h, w))
        if self.index.masks is not None and self.index.masks[r] is not None:
            sample["mask"] = tv_tensors.Mask(torch.from_numpy(np.array(load_mask(self.index.masks[r], (h, w))))[None])
        elif self.index.task == "segmentation":
            sample["mask"] = tv_tensors.Mask(torch.zeros(1, h, w, dtype=torch.uint8))
        # An image alone goes through the transforms as a plain tensor: half the dispatch cost of a dict.
        sample = self.transform(sample) if len(sample) > 1 else {"image": self.transform(sample["image"])}
        out = {
            "image": sample["image"].as_subclass(torch.Tensor),
            "label": self._label(r),
            "index": r,
            "patient_id": self._pids[r],
        }
        if "mask" in sample:
            out["mask"] = sample["mask"].as_subclass(torch.Tensor)
            out["orig_size"] = torch.tensor([h0, w0])  # the file's (H, W): distances in its pixels (HD95)
            out["pixel_mm"] = torch.tensor(self._pixel_mm(r, h0, w0), dtype=torch.float32)  # and in mm (float32: MPS)
        if boxes is not None:
            out["boxes"] = sample["boxes"].as_subclass(torch.Tensor)
            out["box_labels"] = torch.from_numpy(boxes[1])
        if self._oracle is not None:
            out["oracle_boxes"] = sample["oracle"].as_subclass(torch.Tensor)
            out["oracle_known"] = torch.from_numpy(self._oracle[1][r])
        return out


    def _pixel_mm(self, r: int, h0: int, w0: int) -> tuple[float, float]:
        """The size in mm of one pixel of row ``r``'s file, (row, column); NaN where nothing says it. A
        DICOM's header says it for its own file; a release that documents its detector gives the index
        a ``field_mm`` column (the image's longer side in mm), which holds whatever size the file was
        saved at. Read once per row."""
        if r not in self._mm:
            field = self.index.meta["field_mm"].iloc[r] if "field_mm" in self.index.meta else math.nan
            if np.isfinite(field):
                self._mm[r] = (float(field) / max(h0, w0),) * 2
            else:
                self._mm[r] = dicom_pixel_spacing(self._paths[r]) or (math.nan, math.nan)
        return self._mm[r]

    def _label(self, r: int) -> torch.Tensor:
        label = self._labels[r]
        return torch.tensor(int(np.nanargmax(label))) if self.index.task == "multiclass" else torch.tensor(label)


def oracle_per_class(index: DatasetIndex) -> tuple[np.ndarray, np.ndarray]:
    """The index's oracle boxes as one box per (row, class), [N, C, 4] file pixels, and which exist
    [N, C]. Of several boxes of one class on one image the largest is kept (RGT reads one box per
    class); a class without a box gets a 1-pixel placeholder at the origin, flagged unknown."""
    n, classes = len(index.meta), {c: i for i, c in enumerate(index.classes)}
    xyxy = np.tile(np.array([0, 0, 1, 1], np.float32), (n, len(classes), 1))
    known = np.zeros((n, len(classes)), bool)
    table = index.oracle_boxes[index.oracle_boxes["label"].isin(classes)]
    area = (table["x1"] - table["x0"]) * (table["y1"] - table["y0"])
    table = (table.assign(area=area.to_numpy()).sort_values("area", kind="stable")
             .drop_duplicates(["row", "label"], keep="last"))  # the largest of each (row, class)
    rows, cols = table["row"].to_numpy(int), table["label"].map(classes).to_numpy(int)
    xyxy[rows, cols] = table[["x0", "y0", "x1", "y1"]].to_numpy(np.float32)
    known[rows, cols] = True
    return xyxy, known


class RaggedList(list):
    """A batch's per-image tensors of varying length (boxes, box labels): a plain list of tensors, that
    crosses the worker → main process pipe as one numpy array and its lengths. Sent as tensors, each of
    the 2 × batch small tensors took its own shared-memory file descriptor, and the pipe, not the
    workers, bounded the loader (cache path with 2 workers: ~2× slower than without the lists)."""

    def __reduce__(self):
        flat = torch.cat(list(self)) if len(self) else torch.zeros(0)
        return _ragged_list, (flat.numpy(), [len(t) for t in self], tuple(flat.shape[1:]))


def _ragged_list(flat: np.ndarray, lengths: list[int], tail: tuple) -> list[torch.Tensor]:
    t = torch.from_numpy(flat)
    return [x.reshape(-1, *tail) for x in t.split(lengths)] if lengths else []


def collate(batch: list[dict]) -> dict:
    """default_collate, except per-image box lists, which vary in length (empty for box-less images)."""
    ragged = {}
    if any("boxes" in b for b in batch):
        ragged["boxes"] = RaggedList(b.pop("boxes", torch.zeros(0, 4)) for b in batch)
        ragged["box_labels"] = RaggedList(b.pop("box_labels", torch.zeros(0, dtype=torch.long)) for b in batch)
    out = default_collate(batch)
    out.update(ragged)
    return out


class CXRDataModule(L.LightningDataModule):
    """Shared base. Subclasses implement ``build_index`` and ``make_splits``.

    Args:
        root: dataset folder, in the release's layout (twin or real).
        batch_size, num_workers: the loaders'.
        transforms: a preset of ``data_modules.transforms`` (the paper's pipeline).
        image_size, eval_size: input side for training (and validation) / for test, loc and shift
            splits (default: the preset's).
        split_seed: fixes the splits; independent of the training seed.
        fraction, subset_seed: nested, stratified label fraction of the training split.
        cache: read images from the uint8 memmap cache (built on first use).
        cache_size: side of the cached images; must be ≥ image_size. An ``eval_size`` above it gets a
            cache of its own holding the test, shift and loc rows alone at ``eval_size`` (AMM's
            full-size test), never every image at full size.
        cache_dir: where caches live (default $CXRBENCH_CACHE/images or ~/.cache/cxrbench/images).
        on_missing: 'error' or 'skip' for listed images that are absent.
        views: images per sample in the train and val splits (> 1 for contrastive pretraining: each
            a separate draw of the training transforms, validation included, so that the validation
            loss is the training objective on held-out images).
        sampler: 'random' (shuffle) or 'weighted' (STN: a WeightedRandomSampler drawing each class of
            the training split equally often; for multi-label tasks, each rarest-label stratum).
        pin_memory: page-locked batches for fast, non-blocking copies to a GPU; None (default): off
            here, and turned on by the cxrbench CLI when the run is on CUDA (``lightning_cli.gpu_defaults``).
    """

    name = "dataset"
    #: The file formats and bit depths the release ships, checked before images are first read
    #: (``check_image_files``); None: not checked.
    image_format: ImageFormat | None = None

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        num_workers: int = 0,
        transforms: str = "plain",
        image_size: int | None = None,
        eval_size: int | None = None,
        split_seed: int = 0,
        fraction: float = 1.0,
        subset_seed: int = 0,
        cache: bool = True,
        cache_size: int = 256,
        cache_dir: str | None = None,
        on_missing: str = "error",
        pin_memory: bool | None = None,
        views: int = 1,
        sampler: str = "random",
    ):
        super().__init__()
        if not (0 < fraction <= 1):
            raise DataError(f"fraction must be in (0, 1], got {fraction}")
        if views < 1:
            raise DataError(f"views must be >= 1, got {views}")
        if sampler not in ("random", "weighted"):
            raise DataError(f"sampler must be 'random' or 'weighted', got {sampler!r}")
        self.views, self.sampler = int(views), sampler
        if on_missing not in ("error", "skip"):
            raise DataError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
        self.root = Path(root)
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, bool(pin_memory)
        self.preset, self.image_size, self.eval_size = transforms, image_size, eval_size
        self.split_seed, self.fraction, self.subset_seed = split_seed, fraction, subset_seed
        self.use_cache, self.cache_size, self.cache_dir = cache, cache_size, cache_dir
        self.on_missing = on_missing
        if cache:
            from .transforms import DEFAULT_SIZE

            need = image_size or DEFAULT_SIZE.get(transforms, 0)
            if need > cache_size:
                raise DataError(f"image_size {need} exceeds cache_size {cache_size}: "
                                f"set cache_size >= {need} or cache=False")
        self.index: DatasetIndex | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.datasets: dict[str, CXRDataset] = {}
        self._cache: ImageCache | None = None
        self._extra_test_splits: tuple[str, ...] = ()  # asked for by the method (``wants_test_splits``)

    # ---- to implement -------------------------------------------------------------------
    def build_index(self) -> DatasetIndex:
        raise NotImplementedError

    def make_splits(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        """Row positions per split ('train', 'val', 'test', and extras such as 'loc', 'shift')."""
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------------
    def _require_root(self, layout: str) -> None:
        if not self.root.is_dir():
            raise DataError(f"{self.name}: root {self.root} does not exist. Expected layout: {layout}")

    def prepare_index(self) -> DatasetIndex:
        if self.index is None:
            self.index = self.build_index()
        return self.index

    @property
    def classes(self) -> list[str]:
        return self.prepare_index().classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def task(self) -> str:
        return self.prepare_index().task

    def image_cache(self) -> ImageCache:
        """One cache per (dataset root, size), over every image of the index, whatever the task."""
        if self._cache is None:
            index = self.prepare_index()
            root_tag = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:8]
            base = Path(self.cache_dir) if self.cache_dir else default_cache_root()
            prefix = base / f"{index.name}-{root_tag}-{self.cache_size}"
            self._cache = ImageCache(prefix, index.meta["path"].tolist(), self.cache_size, check=self.format_check())
        return self._cache

    def eval_cache(self, splits: dict[str, np.ndarray]) -> RowCache | None:
        """The test-type splits' own cache at ``eval_size`` when it exceeds ``cache_size`` (AMM tests at
        full size): only the rows it scores, never the whole dataset at full size; None otherwise.
        Called by ``setup`` once ``self.splits`` is set (``test_splits`` reads it)."""
        if not self.use_cache or not self.eval_size or self.eval_size <= self.cache_size:
            return None
        rows = np.unique(np.concatenate([splits[s] for s in self._base_test_splits()]))
        index = self.prepare_index()
        root_tag = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:8]
        rows_tag = hashlib.sha1(rows.tobytes()).hexdigest()[:8]
        base = Path(self.cache_dir) if self.cache_dir else default_cache_root()
        prefix = base / f"{index.name}-{root_tag}-{self.eval_size}-eval-{rows_tag}"
        paths = index.meta["path"].iloc[rows].tolist()
        return RowCache(ImageCache(prefix, paths, self.eval_size, check=self.format_check()), rows)

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.build_datasets()
        self.hand_contract()

    # ---- the data contract ------------------------------------------------------------------
    def hand_contract(self) -> None:
        """Give the attached LightningModule its ``DataContract`` (``data_modules.contract``), before its
        own ``setup``. A module may name extra splits it scores at test (``wants_test_splits``, e.g. the
        validation split a val-chosen operating point needs); those that exist join the test loaders."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is None or not hasattr(module, "bind_data"):
            return
        wanted = tuple(getattr(module, "wants_test_splits", ()) or ())
        base = self._base_test_splits()
        self._extra_test_splits = tuple(s for s in wanted if s in self.datasets and s not in base)
        module.bind_data(self.contract())

    def contract(self) -> DataContract:
        """What a method may know of this data (see ``data_modules.contract``)."""
        if not self.datasets:
            self.setup()
        from .transforms import DEFAULT_SIZE

        index = self.index
        image_size = int(self.image_size or DEFAULT_SIZE.get(self.preset, 224))
        pos, neg = label_counts(index.labels, self.splits["train"])
        protocol = getattr(self, "protocol", None)
        return DataContract(
            dataset=index.name, datamodule=type(self).__name__, root=self.root, label_kind=index.task,
            classes=tuple(index.classes), split_rows={k: np.asarray(v) for k, v in self.splits.items()},
            test_splits=tuple(self.test_splits), image_size=image_size, eval_size=int(self.eval_size or image_size),
            preset=self.preset, fraction=float(self.fraction), split_seed=int(self.split_seed), images=index.meta,
            train_positives=pos, train_negatives=neg, protocol=protocol,
            fold=int(self.fold) if protocol == "cv" and getattr(self, "fold", None) is not None else None,
            val_share=getattr(self, "val_share", None), sites=tuple(getattr(self, "train_sites", ()) or ()),
            box_prior=(lambda: class_box_prior(index)) if index.boxes is not None and len(index.boxes) else None,
            oracle_boxes=index.oracle_file if index.oracle_boxes is not None else None,
            train_batches=lambda: self.dataloader("train", shuffle=False),
            full_images=self.full_images, notes={"excluded_classes": dict(index.notes.get("excluded_classes", {}))})

    def full_images(self, size: int, batch_size: int | None = None):
        """Every train and val image, whole at ``size``², in row order: ``(loader, rows)``."""
        from .crops import export_loader

        return export_loader(self, size, batch_size)

    def build_datasets(self) -> None:
        index = self.prepare_index()
        splits = self.make_splits(index)
        for name, rows in splits.items():
            if name in ("train", "val", "test") and len(rows) == 0:
                raise DataError(f"{self.name}: split '{name}' is empty after filtering "
                                f"({int(index.eligible.sum())} eligible rows of {len(index.meta)}); "
                                "check the task, filters and protocol options")
        keys = stratum_keys(index.labels)
        splits["train"] = label_fraction(splits["train"], keys, self.fraction, self.subset_seed)
        # Before any image is read: a split that cannot teach or score the task, masks that do not fit
        # their images and images of a format or bit depth the release never ships stop setup here.
        check_label_coverage(index, splits, self.fraction)
        self.check_mask_files(index)
        if not self.use_cache:
            self.check_image_files(index, splits)  # with a cache, ImageCache.ensure checks before building
        self.splits = splits
        workers = max(1, self.num_workers) if self.num_workers else None
        full = self.eval_cache(splits)
        if full is not None and not full.cache.is_valid():
            full.cache.check_space()  # before the training-size cache is built, not after
        cache = self.image_cache().ensure(workers=workers) if self.use_cache else None
        full = full.ensure(workers=workers) if full is not None else None
        for name, rows in splits.items():
            # val watches training at the training size; only test-type splits use eval_size
            # (e.g. AMM trains at 224 and tests at full size).
            eval_size = self.image_size if name == "val" else self.eval_size
            views = self.views if name in ("train", "val") else 1
            t = build_transforms(self.preset, name == "train" or views > 1, self.image_size, eval_size,
                                 crop=name != "loc")
            from_cache = full if full is not None and name in self._base_test_splits() else cache
            self.datasets[name] = CXRDataset(index, rows, t, from_cache, views=views)

    def split_sizes(self, index: DatasetIndex | None = None) -> dict[str, int]:
        """Samples per split as ``setup`` makes them (the label fraction applied), from the label files and
        lists alone: no image is decoded, cached or format-checked (``cxrbench bench --budget``).
        ``index``: one built before by a DataModule of the same dataset options (a budget asks for many
        label fractions and folds of one dataset, and NIH's index takes seconds to build)."""
        if index is not None:
            self.index = index
        index = self.prepare_index()
        splits = self.make_splits(index)
        splits["train"] = label_fraction(splits["train"], stratum_keys(index.labels), self.fraction, self.subset_seed)
        return {name: len(rows) * self.samples_per_row(name) for name, rows in splits.items()}

    def samples_per_row(self, split: str) -> int:
        """Training samples one index row gives in ``split`` (CAMContrast's crop DataModule: five)."""
        return 1

    def format_check(self):
        """The check of every image's format and bit depth against ``image_format`` (from the file
        headers), or None. Run where images are first read: by ``ImageCache.ensure`` before it builds a
        cache (a valid cache was checked when it was built, and its key changes with any file's size or
        mtime; ``cxrbench cache`` goes through it too), and by ``check_image_files`` without a cache.
        A ``partial`` of a module function, so that a cache holding it still pickles into workers."""
        if self.image_format is None:
            return None
        return partial(check_image_formats, expected=self.image_format, dataset=self.name)

    def check_image_files(self, index: DatasetIndex, splits: dict[str, np.ndarray]) -> None:
        """Without a cache: the images of the splits checked at every setup (each epoch decodes them anyway)."""
        check = self.format_check()
        if check is not None:
            rows = np.unique(np.concatenate([np.asarray(r, int) for r in splits.values()] or [np.zeros(0, int)]))
            check(index.meta["path"].iloc[rows].tolist())

    def check_mask_files(self, index: DatasetIndex) -> None:
        """Mask files against their images (sizes from the headers), at every setup: masks are read per
        sample, never cached, so a mismatch would otherwise surface mid-epoch or be resized silently."""
        if index.masks is None:
            return
        rows = [r for r, m in enumerate(index.masks) if m is not None and m[0] == "files"]
        if rows:
            images = index.meta["path"].iloc[rows].tolist()
            check_mask_sizes(images, [tuple(index.masks[r][1]) for r in rows], self.name)

    def dataloader(self, split: str, shuffle: bool | None = None) -> DataLoader:
        if not self.datasets:
            self.setup()
        if split not in self.datasets:
            raise DataError(f"{self.name}: no split {split!r}; this protocol has {sorted(self.datasets)}")
        shuffle = (split == "train") if shuffle is None else shuffle
        sampler = self.balanced_sampler() if split == "train" and shuffle and self.sampler == "weighted" else None
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def balanced_sampler(self) -> WeightedRandomSampler:
        """Each class (rarest-label stratum for multi-label tasks) of the training split drawn equally often."""
        rows = self.splits["train"]
        keys = stratum_keys(self.index.labels).iloc[rows].to_numpy()
        _, inverse, counts = np.unique(keys.astype(str), return_inverse=True, return_counts=True)
        weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.double)
        return WeightedRandomSampler(weights, num_samples=len(rows), replacement=True)

    def train_dataloader(self):
        return self.dataloader("train")

    def val_dataloader(self):
        return self.dataloader("val")

    def _base_test_splits(self) -> list[str]:
        return ["test"] + [s for s in ("shift", "loc") if s in self.splits and len(self.splits[s])]

    @property
    def test_splits(self) -> list[str]:
        """Splits a test run evaluates, in dataloader order: test, then shift / loc where they exist,
        then the splits the method asked for (``hand_contract``)."""
        if not self.splits:
            self.setup()
        return self._base_test_splits() + list(self._extra_test_splits)

    def test_dataloader(self):
        loaders = [self.dataloader(s, shuffle=False) for s in self.test_splits]
        return loaders[0] if len(loaders) == 1 else loaders

    def predict_dataloader(self):
        return self.dataloader("test")

    def summary(self) -> str:
        if not self.splits:
            self.setup()
        index = self.index
        lines = [f"{self.name} at {self.root}: {len(index.meta)} images, task {index.task}, classes {index.classes}"]
        for name, rows in self.splits.items():
            lab = index.labels.iloc[rows]
            pos = ", ".join(f"{c}={int((lab[c] == 1).sum())} ({100 * float((lab[c] == 1).mean()):.1f}%)"
                            for c in index.classes)
            lines.append(f"  {name}: {len(rows)} images, {index.meta['patient_id'].iloc[rows].nunique()} patients; {pos}")
        return "\n".join(lines)
