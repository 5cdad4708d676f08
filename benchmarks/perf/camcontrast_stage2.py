"""CAMContrast stage-2 throughput: heatmap crops read from the artifact vs the loader alone vs the model alone.

    python benchmarks/perf/camcontrast_stage2.py [--n 200] [--full-size 448] [--width 8] [--workers 0 2]
                                                 [--batch 120] [--steps 6] [--device auto]

A twin's images are cached at ``full_size``²; an (untrained) stage 1 exports their heatmaps once
(timed: images/s of the export); then, in crops/s (five crops per image, each 224² at 448):

- ``loader, images only``: NIHCrops without heatmaps (the "-crop" baselines' loader);
- ``loader + heatmaps``: NIHCrops reading each heatmap crop from the artifact's memmap, resizing it to
  14×14 and zeroing normal ones — the stage-2 loader;
- ``model step``: stage 2's forward + backward + SGD step on one batch already in memory;
- ``training``: loader + heatmaps feeding the model step, what a stage-2 run sees.

The loader does not starve the model when ``training`` ≈ ``model step`` (ratio printed; target ≥ 0.9)
— on a GPU node with the paper's width 64 and a few workers. On a 2-core CPU the loader's workers and
the model share the same cores, so there ``training`` is bounded by both together; the heatmap's cost
is the difference between the two loader lines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cxrbench.methods import CAMContrast, CAMContrastCAM
from data_modules import NIH, NIHCrops
from data_modules.twin import generate


def crops_per_s(loader, limit: int) -> float:
    it = iter(loader)
    next(it)  # workers started outside the timed loop
    n, t = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += len(b["index"])
        if i + 1 >= limit:
            break
    return n / (time.perf_counter() - t)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="twin images")
    ap.add_argument("--full-size", type=int, default=448)
    ap.add_argument("--width", type=int, default=8, help="U-Net width (the paper's: 64)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch", type=int, default=120)
    ap.add_argument("--steps", type=int, default=6, help="batches per timed loop")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    tmp = Path(tempfile.mkdtemp(prefix="cxrbench-cam-"))
    full, crop = args.full_size, args.full_size // 2
    root = generate("nih", tmp / "nih", n=args.n, seed=0, size=full)
    common = dict(protocol="official", cache_size=full, cache_dir=str(tmp / "cache"))
    dm1 = NIH(root, label_set="abnormal", transforms="camcontrast", image_size=full, eval_size=full, batch_size=16, **common)
    dm1.setup("fit")
    stage1 = CAMContrastCAM(encoder_kwargs={"width": args.width}, num_classes=1, class_names=["Abnormal"])
    hm = tmp / "runs" / "stage1" / "artifacts" / "heatmaps"
    t = time.perf_counter()
    stage1.bind_data(dm1.contract())
    stage1.export_artifact("heatmaps", hm, {"run_id": "stage1"})
    n_maps = len(dm1.splits["train"]) + len(dm1.splits["val"])
    print(f"NIH twin: {args.n} images cached at {full}²; crops {crop}² (5 per image); U-Net width {args.width}; "
          f"device {device}; batch {args.batch}")
    print(f"heatmap export: {n_maps / (time.perf_counter() - t):.0f} images/s ({n_maps} maps of {full}², uint8)")

    def crops_dm(workers: int, heatmaps: bool) -> NIHCrops:
        dm = NIHCrops(root, heatmaps=str(hm) if heatmaps else None, full_size=full, image_size=crop,
                      batch_size=args.batch, num_workers=workers, **common)
        dm.setup("fit")
        return dm

    print(f"{'what':<26}{'workers':>8}{'crops/s':>10}")
    loader_rates = {}
    for workers in args.workers:
        for heat in (False, True):
            rate = crops_per_s(crops_dm(workers, heat).train_dataloader(), args.steps)
            loader_rates[workers, heat] = rate
            print(f"{'loader + heatmaps' if heat else 'loader, images only':<26}{workers:>8}{rate:>10.0f}", flush=True)

    model = CAMContrast(encoder_kwargs={"width": args.width}, lr=1e-3, momentum=0.95).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.95, weight_decay=1e-4)
    batch = next(iter(crops_dm(0, True).train_dataloader()))

    def step(b) -> None:
        loss, _ = model.objective({k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(batch)  # warm-up (cudnn, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    model_rate = args.steps * len(batch["index"]) / (time.perf_counter() - t)
    print(f"{'model step (in memory)':<26}{'-':>8}{model_rate:>10.0f}")
    for workers in args.workers:
        loader = crops_dm(workers, True).train_dataloader()
        it = iter(loader)
        step(next(it))
        n, t = 0, time.perf_counter()
        for i, b in enumerate(it):
            step(b)
            n += len(b["index"])
            if i + 1 >= args.steps:
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = n / (time.perf_counter() - t)
        print(f"{'training (loader+model)':<26}{workers:>8}{rate:>10.0f}   "
              f"{rate / model_rate:.2f} of the model step; heatmaps cost the loader "
              f"{1 - loader_rates[workers, True] / loader_rates[workers, False]:.0%}")


if __name__ == "__main__":
    main()
