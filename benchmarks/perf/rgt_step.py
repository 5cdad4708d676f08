"""One RGT training step split by stage, with the radiomics engine and with the PyRadiomics backend.

    python benchmarks/perf/rgt_step.py [--batch 32] [--size 224] [--classes 8] [--device cpu|cuda]

Stages: image branch (ViT forward), BYOA (boxes from the class-token attention), radiomics (107
features per image and class), fusion (radiomics Transformer, cross-attention, heads, losses),
backward + optimizer. Prints milliseconds per stage and the radiomics share of the step, measured in
one run. Target (issue 7): the engine's share under 30% on CPU (and on GPU when one is available).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from cxrbench.methods import RGT  # noqa: E402
from cxrbench.radiomics import extract  # noqa: E402


def step(model: RGT, images: torch.Tensor, labels: torch.Tensor, opt, backend: str, sync) -> dict[str, float]:
    t, times = time.perf_counter(), {}

    def lap(name):
        nonlocal t
        sync()
        now = time.perf_counter()
        times[name] = (now - t) * 1000
        t = now

    b, k, d = images.shape[0], model.num_classes, model.hparams.dim
    img_cls, patches, att = model.encode(images)
    lap("image branch")
    _, boxes, _ = model.byoa(att, images.shape[-2:])
    lap("BYOA")
    gray = (images[:, 0].detach().float() * 255).round()
    gray = gray[:, None].expand(b, k, *gray.shape[1:]).reshape(b * k, *gray.shape[1:])
    feats = extract(gray, boxes=boxes.reshape(b * k, 4), backend=backend).float().to(images.device)
    lap("radiomics")
    feats = model.rad_norm((torch.sign(feats) * torch.log1p(feats.abs())).nan_to_num(0.0)).clamp(-10, 10)
    rad = model.rad(feats)
    img_f = model.cross_img(img_cls.reshape(b * k, 1, d), rad[:, 1:]).reshape(b, k, d)
    rad_f = model.cross_rad(rad[:, :1], patches.repeat_interleave(k, 0)).reshape(b, k, d)
    logits = (model.img_head(img_f) + model.rad_head(rad_f)) / 2
    loss = (1 - model.hparams.lam) * model.nt_xent(img_f, rad_f) + model.hparams.lam * model.loss(logits, labels)
    lap("fusion + losses")
    opt.zero_grad()
    loss.backward()
    opt.step()
    lap("backward + step")
    return times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pyradiomics-batch", type=int, default=4, help="batch for the (slow) PyRadiomics step")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    k = args.classes
    model = RGT(num_classes=k, class_names=[f"c{i}" for i in range(k)], task="multilabel", img_size=args.size).to(dev)
    model.prior_center.copy_(torch.rand(k, 2) * 0.5 + 0.25)
    model.prior_size.copy_(torch.rand(k, 2) * 0.35 + 0.15)  # 15–50% of the side, as NIH's mean boxes
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    print(f"RGT step on {dev}, {k} classes, {args.size}² images (default RGT sizes: ViT 6x192, radiomics 2 layers)")
    for backend, batch in (("torch", args.batch), ("pyradiomics", args.pyradiomics_batch)):
        images = torch.rand(batch, 1, args.size, args.size, device=dev)
        labels = (torch.rand(batch, k, device=dev) < 0.3).float()
        step(model, images, labels, opt, backend, sync)  # warm-up
        times = step(model, images, labels, opt, backend, sync)
        total = sum(times.values())
        parts = "  ".join(f"{n} {v:8.1f}" for n, v in times.items())
        print(f"{backend:12s} batch {batch:3d}: {parts}  | step {total:8.1f} ms, "
              f"radiomics {100 * times['radiomics'] / total:5.1f}% of the step "
              f"({times['radiomics'] / (batch * k):.2f} ms per ROI)")


if __name__ == "__main__":
    main()
