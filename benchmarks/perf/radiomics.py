"""Radiomics throughput: PyRadiomics 3.0.1 vs the batched torch engine, measured in one run.

    python benchmarks/perf/radiomics.py [--sizes 128 1024] [--pyradiomics-rois 48] [--repeats 5]

Boxes of 40–120 px on 224² twin radiographs (as RGT's BYOA boxes). PyRadiomics runs one ROI per call,
so its rate is measured on the first ``--pyradiomics-rois`` ROIs (rate per ROI does not depend on the
batch). Targets (issue 20): ≥ 300× PyRadiomics on this 2-core CPU; 1,024 ROIs in < 50 ms on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# This file is named like the PyRadiomics package; keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cxrbench.radiomics import extract  # noqa: E402


def rois(n: int, seed: int = 0, size: int = 224):
    """n twin radiographs (16 distinct, 0–255 gray values) and one 40–120 px box on each."""
    from data_modules.twin.render import ImageJob, render

    rng = np.random.default_rng(seed)
    base = [render(ImageJob("", size, size, ["Nodule", "Effusion"], anatomy_seed=(k,), image_seed=(k,)))[0]
            for k in range(16)]
    images = np.stack([base[k % 16] for k in range(n)]).astype(np.float64)
    wh = rng.integers(40, 121, (n, 2))
    xy = rng.integers(0, size - wh + 1)
    boxes = np.concatenate([xy, xy + wh], 1)
    return torch.from_numpy(images), torch.from_numpy(boxes)


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (shared machines are noisy: the best is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def engine_time(images: torch.Tensor, boxes: torch.Tensor, repeat: int) -> float:
    """Seconds per call of the engine on these ROIs (on their device), best of ``repeat`` after a warm-up."""
    cuda = images.device.type == "cuda"

    def run():
        extract(images, boxes=boxes)
        if cuda:
            torch.cuda.synchronize()

    run()  # warm-up
    return timed(run, repeat)


def measure(sizes=(128, 1024), pyradiomics_rois: int = 48, repeats: int = 5, devices=None,
            log=print) -> dict:
    """PyRadiomics' rate and the engine's per batch size and device, in one run."""
    images, boxes = rois(max(sizes))
    k = pyradiomics_rois
    t_ref = timed(lambda: extract(images[:k], boxes=boxes[:k], backend="pyradiomics"), repeat=2)
    out = {"threads": torch.get_num_threads(), "pyradiomics_rois": k, "pyradiomics_rois_per_s": k / t_ref,
           "engine": []}
    log(f"threads: {out['threads']}  PyRadiomics: {k / t_ref:.1f} ROIs/s ({1000 * t_ref / k:.0f} ms/ROI, {k} ROIs)")
    devices = devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for dev in devices:
        for n in sizes:
            t = engine_time(images[:n].to(dev), boxes[:n].to(dev), repeats)
            row = {"device": dev, "rois": n, "ms": 1000 * t, "rois_per_s": n / t, "ratio": n / t / out["pyradiomics_rois_per_s"]}
            out["engine"].append(row)
            log(f"engine {dev:4s} {n:5d} ROIs: {row['rois_per_s']:9.1f} ROIs/s  {row['ms']:8.1f} ms  "
                f"ratio vs PyRadiomics {row['ratio']:7.1f}x")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--pyradiomics-rois", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5, help="engine calls per size (best taken)")
    args = ap.parse_args(argv)
    return measure(args.sizes, args.pyradiomics_rois, args.repeats)


if __name__ == "__main__":
    main()
