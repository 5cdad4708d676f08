"""Loader throughput: PNG decoding vs the uint8 memmap cache, at 224 with the RGT training transforms.

    python benchmarks/perf/loader.py [--n 300] [--png-size 1024]

Prints images/s for each path with 0 and 2 workers and their ratio (target: cache ≥ 20× PNG), counting
the uint8 → float conversion each batch gets on the device (here the CPU), and the
private (anonymous) memory of a worker after reading every image, for the cache path on a dataset and
on one 4× larger (target: it does not grow — the memmap is shared through the page cache, not copied).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from data_modules import NIH
from data_modules.base import collate
from data_modules.transforms import to_float
from data_modules.twin import generate


def _rss_anon_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return -1


class _WithMemory(Dataset):
    """Adds the worker's private memory to each sample."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        out = self.ds[i]
        out["rss_anon_kib"] = _rss_anon_kib()
        return out


def throughput(root: Path, cache: bool, workers: int, cache_dir: str, epochs: int = 1,
               memory: bool = False) -> tuple[float, int]:
    """images/s, and with ``memory`` the peak private memory (KiB) of a worker; -1 without. Reading
    /proc for every sample costs ~60 µs, 11% of the cache path's time: only the memory runs pay it."""
    dm = NIH(root, protocol="official", transforms="rgt", image_size=224, cache=cache, cache_size=256,
             cache_dir=cache_dir, batch_size=32, num_workers=workers)
    dm.setup()
    ds = _WithMemory(dm.datasets["train"]) if memory else dm.datasets["train"]
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    if workers:
        next(iter(loader))  # start the workers outside the timed loop, as a long training run would
    n, peak = 0, 0
    t = time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            to_float(b["image"])  # what Method.on_after_batch_transfer does to each batch (on the CPU here)
            n += len(b["index"])
            if memory:
                peak = max(peak, int(b["rss_anon_kib"].max()))
    return n / (time.perf_counter() - t), peak if memory else -1


def measure(n: int = 300, png_size: int = 1024, log=print) -> dict:
    """images/s of the PNG and cache paths with 0 and 2 workers, and a worker's memory on 1× and 4× data."""
    tmp = Path(tempfile.mkdtemp(prefix="cxrbench-loader-"))
    try:
        small = generate("nih", tmp / "nih", n=n, seed=0, size=png_size)
        cache_dir = str(tmp / "cache")
        NIH(small, cache_size=256, cache_dir=cache_dir, image_size=224).image_cache().ensure()  # built once, not timed
        log(f"NIH twin: {n} PNGs at {png_size}², RGT train transforms to 224")
        log(f"{'path':<8}{'workers':>8}{'img/s':>10}")
        rates = {}
        for workers in (0, 2):
            for cache in (False, True):
                rate, _ = throughput(small, cache, workers, cache_dir, epochs=10 if cache else 1)
                rates["cache" if cache else "png", workers] = rate
                log(f"{'cache' if cache else 'png':<8}{workers:>8}{rate:>10.0f}")
        for workers in (0, 2):
            log(f"ratio cache/png, {workers} workers: {rates['cache', workers] / rates['png', workers]:.1f}x (target >= 20x)")
        big = generate("nih", tmp / "nih4x", n=4 * n, seed=0, size=128)
        mem = {}
        for name, root in (("1x", small), ("4x", big)):
            NIH(root, cache_size=256, cache_dir=cache_dir, image_size=224).image_cache().ensure()
            mem[name] = throughput(root, True, 2, cache_dir, memory=True)[1]
        log(f"worker private memory after a full epoch: {mem['1x'] / 1024:.0f} MiB ({n} images) vs "
            f"{mem['4x'] / 1024:.0f} MiB ({4 * n} images): growth {mem['4x'] / max(mem['1x'], 1):.2f}x (target ~1x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"n": n, "png_size": png_size,
            "img_per_s": {f"{path}_{w}_workers": r for (path, w), r in rates.items()},
            "ratio": {f"{w}_workers": rates["cache", w] / rates["png", w] for w in (0, 2)},
            "worker_anon_mib": {k: v / 1024 for k, v in mem.items()}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--png-size", type=int, default=1024, help="side of the twin PNGs (the release: 1024)")
    args = ap.parse_args(argv)
    return measure(args.n, args.png_size)


if __name__ == "__main__":
    main()
