"""The GPU checklist (shared/gpu-checklist.md) as commands: each item measures on the GPU and writes its
numbers, the device's name, the commit and the date into ``results/gpu/<item>.json`` and one line of
``results/gpu/README.md``.

    python benchmarks/gpu_checklist.py radiomics    # 1. engine, 128 and 1,024 ROIs, float64; GPU vs CPU parity
    python benchmarks/gpu_checklist.py rgt_step     # 2. RGT step by stage, batch 128, 224², 8 classes, bf16
    python benchmarks/gpu_checklist.py throughput   # 3. training images/s, memory, MFU per method (AMM, RGT so far)
    python benchmarks/gpu_checklist.py byoa         # 4. BYOA vs random boxes on a 20,000-image twin, ViT-Ti
    python benchmarks/gpu_checklist.py all          # 1-4 in the checklist's order

Each refuses to run without CUDA (the figures are GPU figures); ``--device cpu --smoke`` runs an item
on tiny inputs on the CPU and writes its JSON to ``--out-dir`` (default ``.cache/gpu-smoke``), to
check the command itself. ``byoa`` takes ``--stems`` and ``--label-sets`` so its four runs can be
spread over several lends (results of earlier runs in its JSON are kept).

Item 3 measures each entry of ``THROUGHPUT``: add a method there with one line (its factory, input
side, batch, transforms preset, label set) and ``throughput`` measures it too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a file, this folder would come first on the path; the benchmarks import as a package instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

ITEMS = ("radiomics", "rgt_step", "throughput", "byoa")
RTOL, ATOL = 1e-6, 1e-9  # the engine's parity tolerance against PyRadiomics (tests/test_radiomics.py)

# Item 3, one line per method: name -> (factory(num_classes, class_names), input side, batch, preset, label set).
# Batches are the configs' (benchmarks/<paper>/configs/); methods still to come (STN VGG16 512², GMML ViT-S/16 256²,
# CAMContrast U-Net encoder 448², UNETR 256²) are added here as they land.
THROUGHPUT = {
    "amm-densenet121": (lambda k, names: _method("AMM", backbone="densenet121", num_classes=k, class_names=names),
                        224, 16, "amm", "cardiomegaly"),
    "rgt": (lambda k, names: _method("RGT", num_classes=k, class_names=names, task="multilabel", img_size=224),
            224, 128, "rgt", "nih8"),
}

# Dense bf16 tensor-core peak (FLOP/s) for the MFU estimate, by device-name fragment (vendor datasheets).
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def _method(name: str, **kwargs):
    from cxrbench import methods

    return getattr(methods, name)(**kwargs)


# ----------------------------------------------------------------------------------------- recording


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def record(item: str, results: dict, summary: str, args) -> Path:
    """results/gpu/<item>.json and its line in results/gpu/README.md (replacing the item's earlier line)."""
    from cxrbench.provenance import commit
    from cxrbench.files import atomic_write_text

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"item": item, "device": device_name(args.device), "commit": commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": bool(args.smoke),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv[0] else "", "summary": summary}
    path = atomic_write_text(out / f"{item}.json", json.dumps({**meta, "results": results}, indent=2, default=float) + "\n")
    readme = out / "README.md"
    head = ["# GPU figures (benchmarks/gpu_checklist.py)", "",
            "One line per checklist item: the latest run; its numbers are in `<item>.json`.", "",
            "| item | device | commit | date | summary |", "|---|---|---|---|---|"]
    lines = readme.read_text().splitlines() if readme.exists() else head
    lines = [ln for ln in lines if not ln.startswith(f"| {item} |")]
    lines.append(f"| {item} | {meta['device']} | {meta['commit'][:12]} | {meta['date'][:10]} | {summary} |")
    atomic_write_text(readme, "\n".join(lines) + "\n")
    print(f"{item}: {summary}\nwrote {path} and a line in {readme}")
    return path


# ----------------------------------------------------------------------------------------- items


def item_radiomics(args) -> tuple[dict, str]:
    """1. Engine time per batch (best of repeats after a warm-up, float64) and parity with the CPU engine."""
    from benchmarks.perf.radiomics import engine_time, rois
    from cxrbench.radiomics import FEATURE_NAMES, extract

    sizes = (16, 32) if args.smoke else (128, 1024)
    images, boxes = rois(max(sizes))
    res = {"dtype": "float64", "box_px": [40, 120], "image_px": 224, "per_batch": []}
    for n in sizes:
        t = engine_time(images[:n].to(args.device), boxes[:n].to(args.device), repeat=3 if args.smoke else 20)
        res["per_batch"].append({"rois": n, "ms": 1000 * t, "rois_per_s": n / t})
    # Parity: the device's features (its zone labelling included) against the CPU engine on the same ROIs.
    dev_f = extract(images.to(args.device), boxes=boxes.to(args.device)).cpu()
    cpu_f = extract(images, boxes=boxes)
    off = {}
    for j, name in enumerate(FEATURE_NAMES):
        a, b = dev_f[:, j], cpu_f[:, j]
        nan_mismatch = int((a.isnan() != b.isnan()).sum())
        both = ~a.isnan() & ~b.isnan()
        err = (a[both] - b[both]).abs()
        bad = int((err > ATOL + RTOL * b[both].abs()).sum())
        if nan_mismatch or bad:
            off[name] = {"nan_mismatch": nan_mismatch, "n_off": bad,
                         "worst_rel": float((err / (b[both].abs() + 1e-300)).max()) if both.any() else None}
    res["parity"] = {"rois": len(images), "rtol": RTOL, "atol": ATOL, "features_off": off, "all_within": not off}
    big = res["per_batch"][-1]
    summary = (f"{big['rois']:,} ROIs {big['ms']:.1f} ms (target < 50 ms), {res['per_batch'][0]['rois']} ROIs "
               f"{res['per_batch'][0]['ms']:.1f} ms; parity with the CPU engine: "
               + ("all 107 features within rtol 1e-6" if not off else f"{len(off)} features off"))
    return res, summary


def item_rgt_step(args) -> tuple[dict, str]:
    """2. One RGT step by stage, bf16 autocast where the model allows (the engine stays float64)."""
    from benchmarks.perf import rgt_step

    kw = dict(batch=2, size=64, repeats=1) if args.smoke else dict(batch=128, size=224, repeats=5)
    try:
        res = rgt_step.measure(classes=8, device=args.device, pyradiomics_batch=0, autocast="bf16", **kw)
    except RuntimeError as err:  # an op without a bf16 kernel: measure in float32 and say so
        print(f"bf16 autocast failed ({err}); measuring in float32")
        res = rgt_step.measure(classes=8, device=args.device, pyradiomics_batch=0, autocast="none", **kw)
        res["bf16_error"] = str(err)
    eng = res["backends"]["torch"]
    st = eng["stages_ms"]
    summary = (f"batch {eng['batch']}, {res['size']}², autocast {res['autocast']}: step {eng['step_ms']:.1f} ms; "
               + ", ".join(f"{k} {v:.1f}" for k, v in st.items())
               + f"; radiomics + BYOA {100 * eng['radiomics_byoa_share']:.1f}% of the step (target < 10%)")
    return res, summary


def _twin(n: int, size: int) -> Path:
    from data_modules.twin import generate

    return Path(generate("nih", ROOT / ".cache" / "twin" / f"nih_n{n}_s{size}", n=n, seed=2, size=size))


class _Timer:
    """A Lightning callback: wall time of the training steps after ``warmup`` steps."""

    def __new__(cls, warmup: int, device: str):
        import lightning as L

        class Timer(L.Callback):
            def __init__(self):
                self.steps, self.t0, self.t1 = 0, None, None

            def _sync(self):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if self.steps == warmup:
                    self._sync()
                    self.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.steps += 1
                self._sync()
                self.t1 = time.perf_counter()

        return Timer()


class _Repeat:
    """One batch, ``n`` times (an iterable: Lightning would take a list for several dataloaders)."""

    def __init__(self, batch, n: int):
        self.batch, self.n = batch, n

    def __iter__(self):
        return iter([self.batch] * self.n)

    def __len__(self):
        return self.n


def _fit_rate(model, datamodule, steps: int, warmup: int, args) -> float:
    import lightning as L

    if not getattr(model, "_optimizer_only", False):
        # The method's optimizer without its schedulers: a plateau schedule needs validation, which a
        # throughput run skips, and no schedule changes the cost of a step.
        configure = model.configure_optimizers

        def optimizer_only():
            conf = configure()
            return conf["optimizer"] if isinstance(conf, dict) else conf

        model.configure_optimizers, model._optimizer_only = optimizer_only, True
    timer = _Timer(warmup, args.device)
    cuda = args.device.startswith("cuda")
    trainer = L.Trainer(max_epochs=1, limit_train_batches=steps, limit_val_batches=0, num_sanity_val_steps=0,
                        accelerator="gpu" if cuda else "cpu", devices=1, precision="bf16-mixed" if cuda else "32-true",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, datamodule)
    return (timer.steps - warmup) / (timer.t1 - timer.t0)


def item_throughput(args) -> tuple[dict, str]:
    """3. Per method of THROUGHPUT: training images/s with the loader (cache, every core) and with one
    synthetic batch kept on the device (the ceiling), peak GPU memory, and MFU from the model's FLOPs."""
    import lightning as L
    from torch.utils.flop_counter import FlopCounterMode

    from data_modules import NIH

    cores = os.cpu_count() or 1
    steps, warmup = (3, 1) if args.smoke else (60, 10)
    res = {}
    for name, (factory, side, batch, preset, label_set) in THROUGHPUT.items():
        if args.methods and name not in args.methods:
            continue
        if args.smoke:
            side, batch = 64, 2
        root = _twin(400 if args.smoke else 3000, 64 if args.smoke else max(256, side))  # nih8 needs boxes of every class
        dm = NIH(str(root), protocol="rgt" if label_set == "nih8" else "amm", label_set=label_set, transforms=preset,
                 image_size=side, cache_size=max(256, side) if not args.smoke else 64, batch_size=batch,
                 num_workers=0 if args.smoke else cores, pin_memory=args.device.startswith("cuda"))
        L.seed_everything(0)
        model = factory(len(dm.classes), list(dm.classes))
        loader_rate = _fit_rate(model, dm, steps, warmup, args) * batch
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        # The ceiling: the same steps on one batch already on the device (no loader at all).
        dm.setup("fit")
        one = model.transfer_batch_to_device(next(iter(dm.train_dataloader())), torch.device(args.device), 0)

        dm.train_dataloader = lambda: _Repeat(one, steps)  # the same DataModule (index, splits, boxes), no loader
        synthetic_rate = _fit_rate(model, dm, steps, warmup, args) * batch
        mem = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
        # FLOPs of one forward + backward of the model on this batch (matmuls and convolutions).
        x = model.on_after_batch_transfer(dict(one), 0)["image"].to(args.device)
        model.to(args.device).train()
        with FlopCounterMode(display=False) as fc:
            out = model(x)
            (out[0] if isinstance(out, tuple) else out).float().sum().backward()
        flops_per_image = fc.get_total_flops() / batch
        dev_name = device_name(args.device)
        peak = next((v for k, v in PEAK_BF16.items() if k in dev_name), None)
        res[name] = {"input": side, "batch": batch, "loader_img_per_s": loader_rate,
                     "ceiling_img_per_s": synthetic_rate, "loader_keeps_up": loader_rate >= 0.9 * synthetic_rate,
                     "gpu_mem_gib": mem, "flops_per_image": flops_per_image,
                     "mfu": synthetic_rate * flops_per_image / peak if peak else None, "workers": dm.num_workers}
    summary = "; ".join(f"{k} {v['ceiling_img_per_s']:.0f} img/s (loader {v['loader_img_per_s']:.0f}"
                        + (f", MFU {100 * v['mfu']:.0f}%" if v["mfu"] else "") + ")" for k, v in res.items())
    return res, summary


def item_byoa(args) -> tuple[dict, str]:
    """4. benchmarks/rgt/byoa_localization.py at scale: ViT-Ti at 224² on a 20,000-image twin at 256², 30 epochs."""
    from benchmarks.rgt import byoa_localization

    prev = Path(args.out_dir) / "byoa.json"
    runs = json.loads(prev.read_text())["results"]["runs"] if prev.exists() and not args.smoke else {}
    cores = os.cpu_count() or 1
    if args.smoke:
        scale = ["--twin-n", "90", "--twin-size", "64", "--size", "32", "--patch", "8", "--dim", "32", "--depth", "1",
                 "--heads", "2", "--epochs", "1", "--batch", "16", "--workers", "0"]
    else:
        scale = ["--twin-n", str(args.twin_n), "--twin-size", "256", "--size", "224", "--patch", "16", "--dim", "192",
                 "--depth", "12", "--heads", "3", "--epochs", str(args.epochs), "--batch", "128",
                 "--workers", str(cores), "--lr", "5e-4"]
    precision = "bf16-mixed" if args.device.startswith("cuda") else "32-true"
    for label_set in args.label_sets:
        for stem in args.stems:
            r = byoa_localization.main([*scale, "--stem", stem, "--label-set", label_set, "--device", args.device,
                                        "--precision", precision])
            runs[f"{stem}/{label_set}"] = r
    res = {"runs": runs}
    parts = []
    for key, r in runs.items():
        beat = [c for c, row in r["byoa"].items() if row.get("iou", 0) > row.get("random_iou", 1)]
        fallback = sum(row.get("fallback", 0) for row in r["byoa"].values()) / max(len(r["byoa"]), 1)
        parts.append(f"{key}: BYOA beats same-size random boxes for {len(beat)}/{len(r['byoa'])} classes "
                     f"({fallback:.0%} mean-box fallbacks)")
    return res, "; ".join(parts)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("item", choices=[*ITEMS, "all"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny inputs: checks the command and its JSON, not figures")
    ap.add_argument("--out-dir", help="default results/gpu (with --smoke: .cache/gpu-smoke)")
    ap.add_argument("--methods", nargs="*", help=f"throughput: only these of {list(THROUGHPUT)}")
    ap.add_argument("--stems", nargs="+", default=["conv", "patch"], choices=["conv", "patch"])
    ap.add_argument("--label-sets", nargs="+", default=["cardiomegaly", "nih8"], choices=["cardiomegaly", "nih8"])
    ap.add_argument("--twin-n", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_checklist: no CUDA device here (torch.cuda.is_available() is False). These are GPU figures: "
                 "run this on a machine with a GPU; to check the command itself, add --device cpu --smoke.")
    if not args.device.startswith("cuda") and not args.smoke:
        sys.exit(f"gpu_checklist: --device {args.device} only with --smoke (the checklist's figures are GPU figures).")
    args.out_dir = args.out_dir or str(ROOT / (".cache/gpu-smoke" if args.smoke else "results/gpu"))
    items = ITEMS if args.item == "all" else (args.item,)
    fns = {"radiomics": item_radiomics, "rgt_step": item_rgt_step, "throughput": item_throughput, "byoa": item_byoa}
    for item in items:
        results, summary = fns[item](args)
        record(item, results, summary, args)


if __name__ == "__main__":
    main()
