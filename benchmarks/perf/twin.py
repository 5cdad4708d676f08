"""Twin generation speed: images/s per core for each dataset at 512² and 1024², measured in one run.

    python benchmarks/perf/twin.py [--n 24] [--sizes 512 1024]

Target (issue 2): a 3,000-image NIH twin at 512² in under 2 minutes on a 2-core machine, i.e.
≥ 12.5 images/s/core. The last line prints the projected time for that twin on all cores.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from data_modules.twin import WRITERS, generate
from data_modules.twin.io import default_workers
from data_modules.twin.sources import lung_bank


def measure(n: int = 24, sizes=(512, 1024), log=print) -> dict:
    """images/s on one core per dataset and size, and the projected 3,000-image NIH twin at 512²."""
    lung_bank()  # built once and cached; not part of the per-image cost
    tmp = Path(tempfile.mkdtemp(prefix="cxrbench-perf-"))
    rates = {}
    out = {"n": n, "img_per_s_per_core": {}}
    try:
        log(f"{'dataset':<10}{'size':>6}{'img/s/core':>12}")
        for size in sizes:
            for ds in WRITERS:
                t = time.perf_counter()
                generate(ds, tmp / f"{ds}{size}", n=n, seed=0, size=size, workers=1)
                rates[ds, size] = n / (time.perf_counter() - t)
                out["img_per_s_per_core"][f"{ds}_{size}"] = rates[ds, size]
                log(f"{ds:<10}{size:>6}{rates[ds, size]:>12.1f}")
        if ("nih", 512) in rates:
            cores = default_workers()
            out["cores"] = cores
            out["projected_nih_3000_512_s"] = 3000 / (rates["nih", 512] * cores)
            log(f"projected NIH twin, 3,000 images at 512² on {cores} cores: "
                f"{out['projected_nih_3000_512_s']:.0f} s (target < 120 s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    args = ap.parse_args(argv)
    return measure(args.n, args.sizes)


if __name__ == "__main__":
    main()
