"""``cxrbench bench SPEC --budget``: what a sweep costs, known on any machine before a GPU is booked.

Per cell and in total: training and evaluation FLOPs, image passes, and the GPU-hours they take on a
named GPU at a stated model-FLOP utilisation (MFU). No GPU and no real image is needed:

1. **FLOPs per image** are the models' own: one run of each cell (its first seed, largest fraction,
   first fold and grid point) goes through the sweep on a small twin of its dataset, as the sweep
   would run it (producers first, their artifacts handed on), with one training batch, one validation
   batch and one batch of each test split, at the config's own input size and model; ``CountFlops``
   counts every matmul and convolution of those steps (``torch.utils.flop_counter``: forward and
   backward, FLOP = 2 × multiply-add) and divides by the batch's samples. A producer's export (the
   heatmaps of CAMContrast's stage 1) is counted per image too.
2. **Image passes** come from the data's split sizes at full scale, as the DataModules make them
   (``split_sizes``: label fraction, folds and protocols applied, no image read) × the trainer's
   epochs or steps: training = epochs × training samples (or max_steps × batch), validation = one pass
   per validation epoch, test = one pass of each split the method tests, export = train + val.
   Where the releases are absent (``$CXR_DATA`` unset), split sizes come from a full-scale twin at
   32 px: its label files are the real ones torchxrayvision ships (NIH's Data_Entry and boxes,
   CheXpert's train.csv, SIIM's RLE file); the lists the wheel does not ship (NIH's official lists,
   CheXpert's valid set, COVIDx's lists at CXR-4's 84,818 images, the lung sites) are the twin's.
3. **GPU-hours** = FLOPs / (peak × MFU), the peak of the precision each cell trains in (its
   ``trainer.precision``; fp32 without TF32 unless a config says otherwise) and, beside it, bf16.

An upper bound where early stopping applies (every epoch is counted). Not counted: work outside
matmuls and convolutions (normalisation, augmentation on the GPU, optimizer updates: a few per cent of
a CNN step) and RGT's radiomics engine, whose cost is not FLOPs (its GPU time is the GPU checklist's).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from ..files import atomic_write_text
from .spec import Cell, Spec, SpecError

#: Dense peak FLOP/s per precision (NVIDIA datasheets; no sparsity). fp32: CUDA cores, no TF32.
GPUS = {
    "h100": {"name": "NVIDIA H100 SXM", "fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12},
    "h200": {"name": "NVIDIA H200 SXM", "fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12},
    "a100": {"name": "NVIDIA A100 SXM", "fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},
    "l40s": {"name": "NVIDIA L40S", "fp32": 91.6e12, "tf32": 183e12, "bf16": 362e12},
    "v100": {"name": "NVIDIA V100 SXM2", "fp32": 15.7e12, "tf32": 15.7e12, "bf16": 125e12},  # fp16 for bf16
}
#: The small twin each dataset's FLOPs are counted on (native pixels do not matter: the transforms
#: resize to the config's input size; big enough for every split, fold and check a config asks for).
PROBE_TWINS = {"nih": {"n": 400}, "chexpert": {"n": 500}, "covidx": {"n": 300},
               "siim": {"n": 160, "release": "stage2"}, "lungs": {"n": 80}}
PROBE_SIZE = 64
PROBE_TWINS_DIR = Path(".cache/twin/budget-probe")
#: The DataModule class -> the twin dataset it reads.
TWIN_OF = {"NIH": "nih", "NIHCrops": "nih", "CheXpert": "chexpert", "COVIDx": "covidx", "SIIM": "siim",
           "Lungs": "lungs", "LungMasks": "lungs"}
COVIDX_CXR4_IMAGES = 84_818  # COVIDx CXR-4: 67,863 train + 8,473 val + 8,482 test (its README)
LUNG_MASK_IMAGES = 138 + 566  # Montgomery's 138 and the 566 Shenzhen masks


class BudgetError(SpecError):
    """A budget option or data that cannot give a budget; one line naming it."""


def check_gpu(gpu: str, mfu: float) -> dict:
    if gpu not in GPUS:
        raise BudgetError(f"--gpu {gpu!r} is not known; known GPUs: "
                          + ", ".join(f"{k} ({v['name']})" for k, v in GPUS.items()))
    if not (0.0 < float(mfu) <= 1.0):
        raise BudgetError(f"--mfu must be in (0, 1] (a share of the GPU's peak), got {mfu}")
    return GPUS[gpu]


# ---- 1. FLOPs per image -----------------------------------------------------------------------------------
class CountFlops(Callback):
    """FLOPs of each training, validation, test and predict batch (forward, and backward where there is
    one), divided by the batch's samples; written to ``out`` (JSON) after every counted batch, so that
    a cell failing later (a 2-image test set) keeps what it counted. ``limit`` batches per stage."""

    STAGES = ("train", "validation", "test", "predict")

    def __init__(self, out: str, limit: int = 1):
        self.out, self.limit = out, int(limit)
        self.counts: dict = {}
        self._mode = None

    def setup(self, trainer, pl_module, stage):
        # here, not in the config: LightningCLI parses a config's ``limit_val_batches: 1`` as 1.0 (all batches)
        trainer.limit_train_batches = trainer.limit_val_batches = trainer.limit_test_batches = self.limit

    def _start(self, trainer, key: str) -> None:
        if trainer.sanity_checking or self.counts.get(key, {}).get("batches", 0) >= self.limit:
            return
        from torch.utils.flop_counter import FlopCounterMode

        self._mode = FlopCounterMode(display=False)
        self._mode.__enter__()

    def _end(self, key: str, batch) -> None:
        if self._mode is None:
            return
        self._mode.__exit__(None, None, None)
        flops, self._mode = int(self._mode.get_total_flops()), None
        c = self.counts.setdefault(key, {"flops": 0, "samples": 0, "batches": 0})
        c["flops"] += flops
        c["samples"] += batch_samples(batch)
        c["batches"] += 1
        atomic_write_text(self.out, json.dumps(self.counts, indent=1, sort_keys=True))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start(trainer, "train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._end("train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._start(trainer, "validation")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._end("validation", batch)

    def _test_key(self, pl_module, dataloader_idx: int) -> str:
        splits = pl_module.data.test_splits
        return f"test:{splits[dataloader_idx] if dataloader_idx < len(splits) else dataloader_idx}"

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._start(trainer, self._test_key(pl_module, dataloader_idx))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._end(self._test_key(pl_module, dataloader_idx), batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._start(trainer, "predict")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._end("predict", batch)


def batch_samples(batch) -> int:
    """Samples in a batch: one per dataset item (two views of one image are one sample)."""
    if isinstance(batch, dict):
        for key in ("index", "image"):
            if key in batch:
                return len(batch[key])
    if isinstance(batch, (list, tuple)) and batch:
        return batch_samples(batch[0])
    return len(batch)


def per_sample(counts: dict) -> dict[str, float]:
    return {k: v["flops"] / max(1, v["samples"]) for k, v in counts.items()}


def _one_run_per_cell(spec: Spec) -> list[Cell]:
    """Each cell's first seed, largest fraction, first fold and grid point, and the producer runs they
    need (FLOPs per image depend on none of these)."""
    def rank(c: Cell):
        return (c.seed, -c.fraction, -1 if c.fold is None else c.fold, 0 if c.lr_search is None else c.lr_search["lr"])

    chosen: dict[str, Cell] = {}
    for c in spec.cells:
        if c.name not in chosen or rank(c) < rank(chosen[c.name]):
            chosen[c.name] = c
    keep = spec.with_producers({c.run_id for c in chosen.values()})
    return [c for c in spec.cells if c.run_id in keep]


def twin_dataset(config: dict) -> str:
    name = str((config.get("data") or {}).get("class_path") or "").rpartition(".")[2]
    if name not in TWIN_OF:
        raise BudgetError(f"the budget has no twin for DataModule {name!r}; known: {sorted(TWIN_OF)}")
    return TWIN_OF[name]


def _set(cfg: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for p in path:
        cfg = cfg.setdefault(p, {})
    cfg[last] = value


def probe_config(config: dict, twin_root: Path, flops_out: Path) -> dict:
    """``config`` as the FLOP probe runs it: the small twin, 2 samples a batch (contrastive losses need
    two), one epoch on the CPU in fp32 (``CountFlops`` limits it to one batch per stage), no caches or
    workers; model and input size unchanged."""
    cfg = copy.deepcopy(config)
    for key, value in {"data.init_args.root": str(twin_root), "data.init_args.batch_size": 2,
                       "data.init_args.num_workers": 0, "data.init_args.cache": False,
                       "trainer.max_epochs": 1, "trainer.max_steps": -1, "trainer.num_sanity_val_steps": 0, "trainer.check_val_every_n_epoch": 1,
                       "trainer.val_check_interval": None, "trainer.accelerator": "cpu", "trainer.devices": 1,
                       "trainer.num_nodes": 1, "trainer.precision": "32-true", "trainer.accumulate_grad_batches": 1,
                       }.items():
        _set(cfg, key, value)
    cfg["trainer"].pop("strategy", None)
    callbacks = [c for c in (cfg["trainer"].get("callbacks") or [])
                 if "EarlyStopping" not in str(c.get("class_path", "") if isinstance(c, dict) else c)]
    callbacks.append({"class_path": "cxrbench.runner.budget.CountFlops", "init_args": {"out": str(flops_out)}})
    cfg["trainer"]["callbacks"] = callbacks
    return cfg


def probe_spec(spec: Spec, work: Path, twins: dict[str, Path]) -> tuple[Spec, dict[str, Path]]:
    """The spec's FLOP probe: one run per cell on the small twins, needs re-pointed at the probe's
    producers (a config change is a new run id); returns it and each cell's counts file."""
    runs, outs, renamed = [], {}, {}
    for cell in _one_run_per_cell(spec):
        out = work / "flops" / f"{cell.name}.json"
        config = probe_config(cell.config, twins[twin_dataset(cell.config)], out)
        needs = {r: dataclasses.replace(n, run_id=renamed[n.run_id]) for r, n in cell.needs.items()}
        probe = dataclasses.replace(cell, config=config, needs=needs, lr_search=None)
        renamed[cell.run_id] = probe.run_id
        runs.append(probe)
        outs[cell.name] = out
    return dataclasses.replace(spec, cells=runs, runs_dir=work / "runs"), outs


def count_flops(spec: Spec, work: Path, log=print) -> dict[str, dict]:
    """Each cell's FLOPs per sample by stage (``CountFlops``'s counts), from the probe sweep."""
    from data_modules.twin import generate

    from .launch import run_local

    datasets = {twin_dataset(c.config) for c in spec.cells}
    twins = {}
    for d in sorted(datasets):
        opts = dict(PROBE_TWINS[d])
        twins[d] = generate(d, PROBE_TWINS_DIR / d, n=opts.pop("n"), size=PROBE_SIZE, **opts)
    probe, outs = probe_spec(spec, work, twins)
    (work / "flops").mkdir(parents=True, exist_ok=True)
    log(f"budget: counting FLOPs on small twins, {len(probe.cells)} probe runs (one step per stage each) in {work}")
    old = os.environ.get("CXRBENCH_WANDB")
    os.environ["CXRBENCH_WANDB"] = "0"
    try:
        run_local(probe, log=lambda line: log(f"  {line}"))
    finally:
        if old is None:
            os.environ.pop("CXRBENCH_WANDB", None)
        else:
            os.environ["CXRBENCH_WANDB"] = old
    return {name: json.loads(f.read_text()) if f.is_file() else {} for name, f in outs.items()}


# ---- 2. image passes at full scale ------------------------------------------------------------------------
#: where the full-scale twins stand in for ``$CXR_DATA`` when it is unset
FULL_TWINS = Path(".cache/twin/budget-full")


def use_full_scale_twins_unless_data_is_set(log=print) -> None:
    """``$CXR_DATA`` unset: the paper specs' roots (``${CXR_DATA}/nih`` …) point at full-scale twins."""
    if "CXR_DATA" not in os.environ:
        os.environ["CXR_DATA"] = str(FULL_TWINS.resolve())
        log(f"budget: CXR_DATA is not set; split sizes from full-scale twins in {FULL_TWINS} (made where absent)")


def full_scale_twin(dataset: str, root: Path, log=print) -> Path:
    """A twin of ``dataset`` with every row of its real label files (32 px images), made once."""
    from data_modules.twin import generate
    from data_modules.twin.sources import read_csv_lines

    def rows(key: str, first_field: bool = False) -> int:
        _, lines = read_csv_lines(key)
        return len({ln.split(",", 1)[0] for ln in lines}) if first_field else len(lines)

    sizes = {"nih": lambda: {"n": rows("nih_entries")}, "chexpert": lambda: {"n": rows("chexpert")},
             "siim": lambda: {"n": rows("siim", first_field=True), "release": "stage2"},
             "covidx": lambda: {"n": COVIDX_CXR4_IMAGES}, "lungs": lambda: {"n": LUNG_MASK_IMAGES}}
    opts = sizes[dataset]()
    t0 = time.time()
    log(f"budget: full-scale {dataset} twin ({opts['n']:,} images at 32 px) in {root}")
    generate(dataset, root, n=opts.pop("n"), size=32, **opts)
    log(f"budget:   ready in {time.time() - t0:.0f} s")
    return root


def prepare_roots(spec: Spec, log=print) -> str:
    """Every dataset the cells use, on disk: a declared twin generated, a root under ``FULL_TWINS``
    made as a full-scale twin; any other missing root is an error naming it. Returns where the split
    sizes come from, in words."""
    from data_modules.twin import generate

    used = {c.data_name: c for c in spec.cells}
    full, own = [], []
    for name, entry in spec.data.items():
        if name not in used:
            continue
        root = Path(entry["root"])
        if "twin" in entry:  # the spec's own twin is its data, as the sweep would make it
            t = dict(entry["twin"])
            generate(t.pop("dataset", name), root, n=t.pop("n"), seed=t.pop("seed", 0), size=t.pop("size", None), **t)
            own.append(name)
        elif root.resolve().parent == FULL_TWINS.resolve():
            if not root.is_dir():
                full_scale_twin(twin_dataset(used[name].config), root, log)
            full.append(name)
        elif not root.is_dir():
            raise BudgetError(f"data.{name}: root {root} does not exist; the budget reads its label files and lists "
                              "(unset CXR_DATA to count on full-scale twins instead)")
    parts = []
    if full:
        parts.append(f"{', '.join(full)}: full-scale twins at 32 px (every row of the real label files torchxrayvision "
                     "ships; the lists it does not ship are the twin's)")
    if own:
        parts.append(f"{', '.join(own)}: the spec's own twins")
    rest = sorted(set(used) - set(full) - set(own))
    if rest:
        parts.append(f"{', '.join(rest)}: the data on disk")
    return "; ".join(parts)


def _data_key(config: dict) -> str:
    """What a dataset's index depends on (not the fraction, fold or split seeds, nor loader options)."""
    data = copy.deepcopy(config.get("data") or {})
    args = data.get("init_args") or {}
    for k in ("fraction", "fold", "subset_seed", "split_seed", "batch_size", "num_workers", "cache", "cache_size",
              "heatmaps", "heatmaps_run", "image_size", "eval_size", "transforms", "views", "sampler", "pin_memory"):
        args.pop(k, None)
    return json.dumps(data, sort_keys=True, default=str)


class SplitSizes:
    """Split sizes per run config, one index per dataset options (``CXRDataModule.split_sizes``)."""

    def __init__(self):
        self.indices: dict[str, object] = {}
        self.sizes: dict[str, dict[str, int]] = {}

    def __call__(self, config: dict) -> dict[str, int]:
        from lightning.pytorch.cli import instantiate_class

        data = copy.deepcopy(config["data"])
        args = data.setdefault("init_args", {})
        if "heatmaps" in args:  # sizes need no heatmap (and the producer's may not exist yet)
            args["heatmaps"] = None
        args.pop("heatmaps_run", None)
        args["cache"] = False
        key = json.dumps(data, sort_keys=True, default=str)
        if key not in self.sizes:
            dm = instantiate_class((), data)
            index_key = _data_key(config)
            self.sizes[key] = dm.split_sizes(self.indices.get(index_key))
            self.indices[index_key] = dm.index
        return self.sizes[key]


def encodes_validation_once(config: dict) -> bool:
    """Whether the config's method encodes its validation split once per fit (a strict linear probe
    keeps its frozen features: ``methods.evaluation``), read from the method class itself."""
    import importlib

    model = config.get("model") or {}
    module, _, name = str(model.get("class_path") or "").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return False
    rule = getattr(cls, "encodes_validation_once", None)
    return bool(rule(model.get("init_args") or {})) if rule is not None else False


def run_passes(cell: Cell, sizes: dict[str, int], tested: list[str], reuse: bool = True) -> dict[str, float]:
    """Samples through the model per stage for one run at full scale (see the module docstring);
    ``reuse=False``: as if no validation features were kept (the budget before issue 33 removed it)."""
    trainer = cell.config.get("trainer") or {}
    data = (cell.config.get("data") or {}).get("init_args") or {}
    batch = max(1, int(data.get("batch_size") or 32))
    n_train = sizes.get("train", 0)
    steps_per_epoch = max(1, math.ceil(n_train / batch))
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, float) and 0 < limit < 1:
        steps_per_epoch = max(1, int(steps_per_epoch * limit))
    elif isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        steps_per_epoch = min(steps_per_epoch, limit)
    max_steps = int(trainer.get("max_steps") or -1)
    if max_steps > 0:
        steps = max_steps
        epochs = steps / steps_per_epoch
    else:
        epochs = int(trainer.get("max_epochs") or 1000)  # Lightning's default when unset
        steps = epochs * steps_per_epoch
    train = min(steps * batch, epochs * n_train) if max_steps <= 0 else steps * batch
    every = max(1, int(trainer.get("check_val_every_n_epoch") or 1))
    val_runs = 0 if trainer.get("limit_val_batches") == 0 else math.floor(epochs / every + 1e-9)
    if reuse and val_runs and encodes_validation_once(cell.config):
        val_runs = 1  # the later validations run the head only (not counted)
    passes = {"train": float(train), "validation": float(val_runs * sizes.get("val", 0))}
    if cell.lr_search is not None:  # the kept checkpoint's validation score (runner/cell.py)
        passes["validation"] += sizes.get("val", 0)
    for split in tested if cell.task else []:
        passes[f"test:{split}"] = float(sizes.get(split, 0))
    if "heatmaps" in cell.produces:  # the export: every train and val image (the full_images door)
        passes["predict"] = float(sizes.get("train", 0) + sizes.get("val", 0))
    return passes


def precision_of(cell: Cell) -> str:
    p = str((cell.config.get("trainer") or {}).get("precision") or "32-true")
    return "bf16" if p.startswith(("bf16", "16")) else "fp32"


# ---- 3. the budget -----------------------------------------------------------------------------------------
def budget(spec: Spec, gpu: str = "h100", mfu: float = 0.4, out: str | None = None, work: str | None = None,
           log=print) -> dict:
    """Count, project and (``out``) write the budget of ``spec``; returns {"cells": rows, "total": {...}}."""
    peak = check_gpu(gpu, mfu)
    source = prepare_roots(spec, log)
    work_dir = Path(work) if work else Path(tempfile.mkdtemp(prefix="cxrbench-budget-"))
    try:
        counts = count_flops(spec, work_dir, log)
    finally:
        if not work:
            shutil.rmtree(work_dir, ignore_errors=True)
    sizes_of = SplitSizes()
    rows: dict[str, dict] = {}
    for cell in spec.cells:
        sizes = sizes_of(cell.config)
        fps = per_sample(counts.get(cell.name, {}))
        tested = [k.split(":", 1)[1] for k in fps if k.startswith("test:")]
        passes = run_passes(cell, sizes, tested)
        recomputed = run_passes(cell, sizes, tested, reuse=False)["validation"] - passes["validation"]
        missing = [k for k, n in passes.items() if n and k not in fps]
        flops = {k: n * fps.get(k, 0.0) for k, n in passes.items()}
        r = rows.setdefault(cell.name, {"cell": cell.name, "task": cell.task or "-", "method": cell.method,
                                        "dataset": twin_dataset(cell.config), "runs": 0,
                                        "precision": precision_of(cell), "train_passes": 0.0, "eval_passes": 0.0,
                                        "train_flops": 0.0, "eval_flops": 0.0, "saved_flops": 0.0,
                                        "gflops_per_sample": {},
                                        "not_counted": set()})
        r["runs"] += 1
        r["train_passes"] += passes["train"]
        r["eval_passes"] += sum(n for k, n in passes.items() if k != "train")
        r["train_flops"] += flops["train"]
        r["eval_flops"] += sum(f for k, f in flops.items() if k != "train")
        r["saved_flops"] += recomputed * fps.get("validation", 0.0)
        r["gflops_per_sample"] = {k: v / 1e9 for k, v in fps.items()}
        r["not_counted"].update(missing)
    for r in rows.values():
        total = r["train_flops"] + r["eval_flops"]
        r["flops"] = total
        r["gpu_hours"] = total / (peak[r["precision"]] * mfu) / 3600
        r["gpu_hours_bf16"] = total / (peak["bf16"] * mfu) / 3600
        r["not_counted"] = sorted(r["not_counted"])
    total = {k: sum(r[k] for r in rows.values()) for k in
             ("runs", "train_passes", "eval_passes", "train_flops", "eval_flops", "saved_flops", "flops", "gpu_hours",
              "gpu_hours_bf16")}
    result = {"spec": str(spec.path), "gpu": gpu, "gpu_name": peak["name"], "mfu": mfu, "peaks": peak,
              "split_sizes": source, "cells": list(rows.values()), "total": total}
    for line in summary_lines(result):
        log(line)
    if out:
        atomic_write_text(out, markdown(result))
        log(f"wrote {out}")
    return result


def _e(x: float) -> str:
    return f"{x:.3g}"


def summary_lines(result: dict) -> list[str]:
    t = result["total"]
    return [f"{Path(result['spec']).name}: {len(result['cells'])} cells, {t['runs']} runs, "
            f"{t['flops'] / 1e18:.2f} EFLOP ({t['train_flops'] / 1e18:.2f} training, {t['eval_flops'] / 1e18:.2f} "
            f"evaluation): {t['gpu_hours']:.0f} {result['gpu']}-hours as configured, {t['gpu_hours_bf16']:.1f} in bf16, "
            f"at {result['mfu']:.0%} MFU"]


def markdown(result: dict) -> str:
    from ..provenance import commit

    t, peak = result["total"], result["peaks"]
    cells = sorted(result["cells"], key=lambda r: -r["flops"])
    lines = [
        f"# Budget of `{result['spec']}`",
        "",
        f"Made by `cxrbench bench {result['spec']} --budget --gpu {result['gpu']} --mfu {result['mfu']}` on a CPU at "
        f"commit {commit()}: FLOPs per sample counted on one step per stage of every cell (small twins, the "
        "configs' models and input sizes), image passes from the split sizes at full scale "
        f"({result['split_sizes']}). GPU: {result['gpu_name']} (dense peaks: fp32 {peak['fp32'] / 1e12:.1f}, "
        f"TF32 {peak['tf32'] / 1e12:.1f}, bf16 {peak['bf16'] / 1e12:.1f} TFLOP/s) at {result['mfu']:.0%} MFU. "
        "Every epoch counted (an upper bound where early stopping applies); not counted: non-matmul work and "
        "RGT's radiomics engine (see `cxrbench/runner/budget.py`).",
        "",
        f"**Total: {len(cells)} cells, {t['runs']} runs, {t['flops'] / 1e18:.2f} EFLOP** "
        f"({t['train_flops'] / 1e18:.2f} training, {t['eval_flops'] / 1e18:.2f} evaluation); "
        f"**{t['gpu_hours']:,.0f} GPU-hours as configured** (each cell's precision), "
        f"**{t['gpu_hours_bf16']:,.1f} GPU-hours if every cell trained in bf16**.",
        "",
        f"Avoidable compute removed: strict linear probes encode their validation split once per fit "
        f"(`methods/evaluation.py`): {t['saved_flops'] / 1e15:,.1f} PFLOP, "
        f"{t['saved_flops'] / max(t['flops'] + t['saved_flops'], 1):.1%} of the suite without it "
        f"({(t['flops'] + t['saved_flops']) / 1e18:.2f} EFLOP before, {t['flops'] / 1e18:.2f} after).",
        "",
        "| cell | task | precision | runs | train samples | eval samples | GFLOP/sample (train; eval) | "
        "train PFLOP | eval PFLOP | share | GPU-h as configured | GPU-h bf16 |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in cells:
        g = r["gflops_per_sample"]
        ev = "; ".join(f"{k}: {v:.3g}" for k, v in sorted(g.items()) if k != "train")
        note = f" (not counted: {', '.join(r['not_counted'])})" if r["not_counted"] else ""
        lines.append(
            f"| {r['cell']}{note} | {r['task']} | {r['precision']} | {r['runs']} | {r['train_passes']:,.0f} | "
            f"{r['eval_passes']:,.0f} | {g.get('train', float('nan')):.3g}; {ev or '-'} | {_e(r['train_flops'] / 1e15)} | "
            f"{_e(r['eval_flops'] / 1e15)} | {r['flops'] / max(t['flops'], 1):.1%} | {r['gpu_hours']:,.1f} | "
            f"{r['gpu_hours_bf16']:,.2f} |")
    return "\n".join(lines) + "\n"
