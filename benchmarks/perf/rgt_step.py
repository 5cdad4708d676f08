"""One RGT training step split by stage, with the radiomics engine and with the PyRadiomics backend.

    python benchmarks/perf/rgt_step.py [--batch 32] [--size 224] [--classes 8] [--device cpu|cuda] [--autocast bf16]

Stages: image branch (ViT forward), BYOA (boxes from the class-token attention), radiomics (107
features per image and class), fusion (radiomics Transformer, cross-attention, heads, losses),
backward + optimizer. Prints milliseconds per stage (best of ``--repeats`` steps after a warm-up) and
the radiomics share of the step, measured in one run. ``--autocast bf16`` runs the model's forward in
bfloat16 autocast (the radiomics engine stays float64). Targets: the engine's share under 30% on CPU
(issue 7); radiomics + BYOA under 10% of a batch-128 step on a GPU (GPU checklist).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from cxrbench.methods import RGT  # noqa: E402
from cxrbench.radiomics import extract  # noqa: E402


def step(model: RGT, images: torch.Tensor, labels: torch.Tensor, opt, backend: str, sync,
         amp=contextlib.nullcontext) -> dict[str, float]:
    t, times = time.perf_counter(), {}

    def lap(name):
        nonlocal t
        sync()
        now = time.perf_counter()
        times[name] = (now - t) * 1000
        t = now

    b, k, d = images.shape[0], model.num_classes, model.hparams.dim
    with amp():
        img_cls, patches, att = model.encode(images)
    lap("image branch")
    with amp():
        _, boxes, _ = model.byoa(att, images.shape[-2:])
    lap("BYOA")
    gray = (images[:, 0].detach().float() * 255).round()
    gray = gray[:, None].expand(b, k, *gray.shape[1:]).reshape(b * k, *gray.shape[1:])
    feats = extract(gray, boxes=boxes.float().reshape(b * k, 4), backend=backend).float().to(images.device)
    lap("radiomics")
    with amp():
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


def measure(batch: int = 32, size: int = 224, classes: int = 8, device: str = "cpu", pyradiomics_batch: int = 4,
            autocast: str = "none", repeats: int = 2, log=print) -> dict:
    """Per backend (the engine at ``batch``, PyRadiomics at ``pyradiomics_batch``): ms per stage of one step."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if autocast == "bf16":
        def amp():
            return torch.autocast(dev.type, dtype=torch.bfloat16)
    else:
        amp = contextlib.nullcontext
    k = classes
    model = RGT(num_classes=k, class_names=[f"c{i}" for i in range(k)], task="multilabel", img_size=size).to(dev)
    model.prior_center.copy_(torch.rand(k, 2) * 0.5 + 0.25)
    model.prior_size.copy_(torch.rand(k, 2) * 0.35 + 0.15)  # 15–50% of the side, as NIH's mean boxes
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    log(f"RGT step on {dev}, {k} classes, {size}² images, autocast {autocast} (default RGT sizes: ViT 6x192, "
        "radiomics 2 layers)")
    out = {"device": str(dev), "size": size, "classes": k, "autocast": autocast, "backends": {}}
    for backend, b in (("torch", batch), ("pyradiomics", pyradiomics_batch)):
        if b <= 0:
            continue
        images = torch.rand(b, 1, size, size, device=dev)
        labels = (torch.rand(b, k, device=dev) < 0.3).float()
        step(model, images, labels, opt, backend, sync, amp)  # warm-up
        runs = [step(model, images, labels, opt, backend, sync, amp) for _ in range(repeats if backend == "torch" else 1)]
        times = min(runs, key=lambda t: sum(t.values()))  # the least disturbed step
        total = sum(times.values())
        out["backends"][backend] = {"batch": b, "stages_ms": times, "step_ms": total,
                                    "ms_per_image": total / b, "radiomics_share": times["radiomics"] / total,
                                    "radiomics_byoa_share": (times["radiomics"] + times["BYOA"]) / total}
        parts = "  ".join(f"{n} {v:8.1f}" for n, v in times.items())
        log(f"{backend:12s} batch {b:3d}: {parts}  | step {total:8.1f} ms, "
            f"radiomics {100 * times['radiomics'] / total:5.1f}% of the step "
            f"({times['radiomics'] / (b * k):.2f} ms per ROI)")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pyradiomics-batch", type=int, default=4, help="batch for the (slow) PyRadiomics step; 0: skip it")
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"])
    ap.add_argument("--repeats", type=int, default=2, help="engine steps after the warm-up (the fastest is kept)")
    args = ap.parse_args(argv)
    return measure(args.batch, args.size, args.classes, args.device, args.pyradiomics_batch, args.autocast, args.repeats)


if __name__ == "__main__":
    main()
