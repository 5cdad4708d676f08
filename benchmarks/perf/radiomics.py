"""Radiomics throughput: PyRadiomics 3.0.1 vs the batched torch engine, measured in one run.

    python benchmarks/perf/radiomics.py [--sizes 128 1024] [--pyradiomics-rois 48]

Boxes of 40–120 px on 224² twin radiographs (as RGT's BYOA boxes). PyRadiomics runs one ROI per call,
so its rate is measured on the first ``--pyradiomics-rois`` ROIs (rate per ROI does not depend on the
batch). Targets (issue 5): ≥ 100× PyRadiomics on this 2-core CPU; 1,024 ROIs in < 50 ms on a GPU.
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


def rois(n: int, seed: int = 0):
    from data_modules.twin.render import ImageJob, render

    rng = np.random.default_rng(seed)
    base = [render(ImageJob("", 224, 224, ["Nodule", "Effusion"], anatomy_seed=(k,), image_seed=(k,)))[0]
            for k in range(16)]
    images = np.stack([base[k % 16] for k in range(n)]).astype(np.float64)
    wh = rng.integers(40, 121, (n, 2))
    xy = rng.integers(0, 224 - wh + 1)
    boxes = np.concatenate([xy, xy + wh], 1)
    return torch.from_numpy(images), torch.from_numpy(boxes)


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 1024])
    ap.add_argument("--pyradiomics-rois", type=int, default=48)
    args = ap.parse_args(argv)
    images, boxes = rois(max(args.sizes))
    k = args.pyradiomics_rois
    # Shared machines are noisy: every rate is the best of repeated runs, PyRadiomics' included.
    t_ref = timed(lambda: extract(images[:k], boxes=boxes[:k], backend="pyradiomics"), repeat=2)
    ref_rate = k / t_ref
    print(f"threads: {torch.get_num_threads()}  PyRadiomics: {ref_rate:.1f} ROIs/s ({1000 / ref_rate:.0f} ms/ROI, {k} ROIs)")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for n in args.sizes:
            im, bx = images[:n].to(dev), boxes[:n].to(dev)

            def run():
                extract(im, boxes=bx)
                if dev == "cuda":
                    torch.cuda.synchronize()

            run()  # warm-up
            t = timed(run, repeat=5 if n <= 128 or dev == "cuda" else 2)
            print(f"engine {dev:4s} {n:5d} ROIs: {n / t:9.1f} ROIs/s  {t * 1000:8.1f} ms  "
                  f"ratio vs PyRadiomics {n / t / ref_rate:7.1f}x")


if __name__ == "__main__":
    main()
