"""Region labelling on the device path (``cxrbench.components.propagate_regions``: BYOA's components and
the radiomics engine's GLSZM zones on a GPU): propagation passes (each ends in one host sync, its
convergence check) and time for BYOA's maps, against the one-pixel-per-pass propagation it replaced,
kept below as the reference. Both run on the same maps in the same run; labels must be equal.

    python benchmarks/perf/labelling.py [--device cuda] [--images 16] [--size 224]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path, as the module form has it
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cxrbench import components  # noqa: E402
from cxrbench.models.byoa import _cross_dilate  # noqa: E402


def one_pixel_per_pass(values: torch.Tensor, mask: torch.Tensor, connectivity: int = 8) -> tuple[torch.Tensor, int]:
    """The reference: min-label propagation over the neighbours with pointer jumping, as it was until
    2026-12-02 (labels move one pixel per pass). Returns (labels, passes)."""
    n, h, w = mask.shape
    N, big = n * h * w, n * h * w
    pv = F.pad(values, (1, 1, 1, 1), value=0)
    pm = F.pad(mask.to(torch.uint8), (1, 1, 1, 1)).bool()

    def at(t, dy, dx):
        return t[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    links = [(dy, dx, mask & at(pm, dy, dx) & (at(pv, dy, dx) == values)) for dy, dx in components._OFFSETS[connectivity]]
    label = torch.where(mask, torch.arange(N, device=mask.device).view(n, h, w), big)
    passes = 0
    while True:
        passes += 1
        pl = F.pad(label, (1, 1, 1, 1), value=big)
        new = label
        for dy, dx, same in links:
            new = torch.where(same, torch.minimum(new, at(pl, dy, dx)), new)
        flat = new.reshape(-1)
        jumped = torch.minimum(torch.where(flat < big, flat[flat.clamp(max=N - 1)], flat), flat).view(n, h, w)
        if torch.equal(jumped, label):
            return torch.where(mask, label, -1), passes
        label = jumped


def byoa_masks(images: int, classes: int, size: int, device: str) -> torch.Tensor:
    """BYOA's grown regions on maps like a ViT's: 14×14 attention upsampled, top 10%, 3×3 max filter, 5 dilations."""
    g = torch.Generator().manual_seed(0)
    att = F.interpolate(torch.rand(images, classes, 14, 14, generator=g), size=size, mode="bilinear")
    att = att.reshape(images * classes, size, size).to(device)
    kept = att >= torch.quantile(att.reshape(len(att), -1), 0.9, dim=1)[:, None, None]
    grown = F.max_pool2d(kept[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
    for _ in range(5):
        grown = _cross_dilate(grown)  # BYOA's own dilation
    return grown


def _timed(fn, device: str) -> tuple[object, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def measure(images: int = 16, classes: int = 8, size: int = 224, device: str = "cpu") -> dict:
    mask = byoa_masks(images, classes, size, device)
    zeros = torch.zeros(mask.shape, dtype=torch.uint8, device=device)
    checks = []
    real_equal = torch.equal

    def counting(a, b):
        checks.append(1)
        return real_equal(a, b)

    components.torch.equal = counting
    try:
        ours, t_ours = _timed(lambda: components.propagate_regions(zeros, mask, 4), device)
    finally:
        components.torch.equal = real_equal
    (ref, ref_passes), t_ref = _timed(lambda: one_pixel_per_pass(zeros, mask, 4), device)
    if not torch.equal(ours, ref):
        raise SystemExit("labelling: the two propagations disagree")
    return {"maps": images * classes, "size": size, "device": device, "passes": len(checks), "seconds": t_ours,
            "reference_passes": ref_passes, "reference_seconds": t_ref, "ratio": t_ref / t_ours}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    r = measure(args.images, 8, args.size, args.device)
    print(f"{r['maps']} maps of {r['size']}² on {r['device']}: {r['passes']} passes in {r['seconds']:.2f} s; "
          f"one pixel per pass: {r['reference_passes']} passes in {r['reference_seconds']:.2f} s ({r['ratio']:.1f}×)")


if __name__ == "__main__":
    main()
