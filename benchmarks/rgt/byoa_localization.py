"""Does BYOA localize? Train RGT (or its ViT baseline) and compare its boxes with chance.

    python benchmarks/rgt/byoa_localization.py --twin-n 20000 --twin-size 256 --size 224 --epochs 30 --device cuda
    python benchmarks/rgt/byoa_localization.py --root DATA/nih --label-set nih8 --size 224 --epochs 50 --device cuda

Issue 7's claim, "BYOA's boxes overlap the true boxes better than random boxes do", cannot be shown
at CPU test scale (tests/test_rgt.py says what was measured); this script measures it where there is
data and a GPU. Per class with boxes in the ``loc`` split: the mean IoU of BYOA's box with the true
box, of the same box at uniformly random places, the share of boxes that are the class's mean box
(BYOA's fallback, which beats random by itself), and the pointing game of the class-token attention
(its maximum inside the box, against the chance of a random point). Without ``--root`` a twin is
generated (or reused) under ``.cache/twin``. Prints one JSON line; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import lightning as L  # noqa: E402
import torch  # noqa: E402

from cxrbench.localization.chance import VersusChance  # noqa: E402
from cxrbench.methods import RGT  # noqa: E402
from cxrbench.provenance import commit, data_provenance  # noqa: E402
from data_modules import NIH  # noqa: E402
from cxrbench.files import atomic_write_text  # noqa: E402
from data_modules.transforms import to_float  # noqa: E402


def byoa_against_chance(model: RGT, loader, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per class: BYOA IoU vs random boxes, mean-box fallback share, attention pointing vs chance."""
    tally = VersusChance(model.class_names, seed)
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x = to_float(batch["image"].to(model.device))  # uint8 batches, as Method.on_after_batch_transfer does
            maps, boxes, fallback = model.byoa(model.vit(x)[1], x.shape[-2:])
            tally.update(maps, boxes, batch["boxes"], batch["box_labels"], fallback)
    return {c: {m: round(v, 4) for m, v in row.items()} for c, row in tally.summary().items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", help="an NIH release (real or twin); default: generate a twin")
    ap.add_argument("--twin-n", type=int, default=900)
    ap.add_argument("--twin-size", type=int, default=128)
    ap.add_argument("--label-set", default="cardiomegaly", choices=["cardiomegaly", "nih8"])
    ap.add_argument("--size", type=int, default=64, help="model input side")
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--stem", default="conv", choices=["patch", "conv"])
    ap.add_argument("--lam", type=float, default=0.7)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed on a GPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON result here (atomically)")
    a = ap.parse_args(argv)

    root = a.root
    if root is None:
        from data_modules.twin import generate

        root = str(generate("nih", Path(".cache/twin") / f"nih_n{a.twin_n}_s{a.twin_size}", n=a.twin_n, seed=2,
                            size=a.twin_size))
    L.seed_everything(a.seed)
    # cardiomegaly-vs-normal uses the AMM protocol (box images may be trained on, unlabelled boxes);
    # nih8 the RGT protocol (box images held out).
    protocol = "amm" if a.label_set == "cardiomegaly" else "rgt"
    dm = NIH(root, protocol=protocol, label_set=a.label_set, transforms="plain", image_size=a.size,
             batch_size=a.batch, num_workers=a.workers, val_share=0.15)
    classes = ["Cardiomegaly"] if a.label_set == "cardiomegaly" else None
    if classes is None:
        from data_modules.nih import NIH8 as classes
    model = RGT(img_size=a.size, patch_size=a.patch, dim=a.dim, depth=a.depth, heads=a.heads, stem=a.stem,
                lam=a.lam, lr=a.lr, warmup_epochs=1, num_classes=len(classes), class_names=list(classes),
                threshold="val_youden")
    trainer = L.Trainer(max_epochs=a.epochs, accelerator="gpu" if a.device.startswith("cuda") else "cpu",
                        devices=1, precision=a.precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - t0
    trainer.test(model, dm, verbose=False)
    result = {
        "args": vars(a), "fit_seconds": round(fit_s, 1),
        "auc": {k: round(float(v), 4) for k, v in model.test_metrics.items() if k.startswith("auc/")},
        "byoa": byoa_against_chance(model, dm.dataloader("loc", shuffle=False), a.seed),
        "provenance": {**data_provenance(root), "commit": commit(), "seed": a.seed},
    }
    line = json.dumps(result)
    print(line)
    if a.out:
        atomic_write_text(a.out, line + "\n")
    return result


if __name__ == "__main__":
    main()
