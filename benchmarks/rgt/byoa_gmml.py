"""Beyond the paper: does a GMML-pretrained ViT make RGT's BYOA boxes beat random boxes?

    python benchmarks/rgt/byoa_gmml.py                   # NIH twin (900 images, 128 px), 64 px model, CPU
    python benchmarks/rgt/byoa_gmml.py --twin-n 20000 --twin-size 256 --size 224 --patch 16 --dim 192 --depth 6 \\
        --heads 3 --pretrain-epochs 100 --epochs 30 --device cuda

GMML (cxrbench.methods.gmml) pretrains a ViT on the NIH split's training images without labels (RGT
protocol: the box images are held out for localization and never seen), then RGT is trained twice
with the same seed and budget — image branch initialised from that ViT (``load_into_multitoken_vit``)
and from scratch — and each one's BYOA boxes on the ``loc`` split are tallied against same-size random
boxes and the mean-box fallback (``benchmarks/rgt/byoa_localization.byoa_against_chance``). RGT's image
branch uses the patch stem here (the GMML ViT is a plain patchify ViT). Prints one JSON line per arm.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Run as a file: the repository root on the path (for ``benchmarks.rgt.byoa_localization``), this folder off it.
sys.path[:] = [str(Path(__file__).resolve().parents[2])] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import lightning as L  # noqa: E402
import torch  # noqa: E402

from benchmarks.rgt.byoa_localization import byoa_against_chance  # noqa: E402
from cxrbench.methods import GMML, RGT  # noqa: E402
from cxrbench.methods.gmml import load_into_multitoken_vit  # noqa: E402
from cxrbench.provenance import commit, data_provenance  # noqa: E402
from data_modules import NIH  # noqa: E402
from data_modules.nih import NIH8  # noqa: E402


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", help="an NIH release (real or twin); default: generate a twin")
    ap.add_argument("--twin-n", type=int, default=900)
    ap.add_argument("--twin-size", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--decoder", default="public", choices=["paper", "public"])
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--lam", type=float, default=1.0, help="tests/test_rgt.py: 1.0 learns at twin scale, 0.7 does not")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    root = a.root
    if root is None:
        from data_modules.twin import generate

        root = str(generate("nih", Path(".cache/twin") / f"nih_n{a.twin_n}_s{a.twin_size}", n=a.twin_n, seed=2,
                            size=a.twin_size))
    accel = "gpu" if a.device.startswith("cuda") else "cpu"

    def trainer(epochs):
        return L.Trainer(max_epochs=epochs, accelerator=accel, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)

    dm = NIH(root, protocol="rgt", label_set="nih8", transforms="plain", image_size=a.size, batch_size=a.batch,
             val_share=0.15)
    L.seed_everything(a.seed)
    enc = {"img_size": a.size, "patch_size": a.patch, "embed_dim": a.dim, "depth": a.depth, "num_heads": a.heads}
    gmml = GMML(encoder_kwargs=enc, decoder=a.decoder, decoder_dims=(256, 256, 64), lr=a.lr, warmup_epochs=1)
    t0 = time.perf_counter()
    trainer(a.pretrain_epochs).fit(gmml, dm)
    pre_s = time.perf_counter() - t0
    out = []
    for arm in ("gmml", "scratch"):
        L.seed_everything(a.seed)
        model = RGT(img_size=a.size, patch_size=a.patch, dim=a.dim, depth=a.depth, heads=a.heads, stem="patch",
                    lam=a.lam, lr=a.lr, warmup_epochs=1, num_classes=len(NIH8), class_names=list(NIH8),
                    threshold="val_youden")
        if arm == "gmml":
            load_into_multitoken_vit(model.vit, gmml.encoder)
        t0 = time.perf_counter()
        trainer(a.epochs).fit(model, dm)
        fit_s = time.perf_counter() - t0
        trainer(a.epochs).test(model, dm, verbose=False)
        result = {"arm": arm, "args": vars(a), "pretrain_seconds": round(pre_s, 1), "fit_seconds": round(fit_s, 1),
                  "gmml_val_loss": round(float(gmml.trainer.callback_metrics.get("val/loss", float("nan"))), 4),
                  "auc": {k: round(float(v), 4) for k, v in model.test_metrics.items() if k.startswith("auc/")},
                  "byoa": byoa_against_chance(model, dm.dataloader("loc", shuffle=False), a.seed),
                  "provenance": {**data_provenance(root), "commit": commit(), "seed": a.seed}}
        print(json.dumps(result), flush=True)
        out.append(result)
    return out


if __name__ == "__main__":
    main()
