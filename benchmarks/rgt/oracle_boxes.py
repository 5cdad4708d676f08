"""Does RGT's radiomics pathway carry signal when its boxes are good? (issue 32)

RGT's second branch reads boxes -> 107 radiomic features -> a radiomics Transformer -> cross-attention.
On the twin its boxes come from BYOA on a ViT trained from scratch, whose attention stays near flat, so
the pathway's worth was never separated from the attention's. Here the boxes are given: the NIH twin's
twin_boxes.csv holds, for every image and finding, the box it was drawn in or the box it would have
been drawn in (same distribution), and ``RGT(box_source=...)`` reads them from the batch:

- ``oracle``: the true box; ``oracle_center``: the class's mean box at the true centre (BYOA at best);
- ``shuffled``: the previous image's oracle boxes (in batch order) (the mechanism off: right sizes and places, wrong image);
- ``random``: the class's mean box at a uniform random place; ``byoa``: the paper's boxes.

``--branch radiomics`` trains the radiomics branch alone (no image branch), ``fused`` the whole model
(λ = 1, the focal loss alone, as the RGT learns test: tests/test_rgt.py says why). Per run: test mean AUC
over the 8 box diseases, and for BYOA how close its boxes come to the oracle on validation images
(``val/box_oracle_iou`` over the findings present). One JSON line per run is appended to ``--out``;
``--table`` writes the markdown table of a file.

    python -m benchmarks.rgt.oracle_boxes --branch radiomics --sources oracle shuffled random --seeds 0 1 2
    ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 python -m benchmarks.rgt.oracle_boxes ...
    python -m benchmarks.rgt.oracle_boxes --branch fused --sources byoa oracle shuffled --epochs 10 20 40
    python -m benchmarks.rgt.oracle_boxes --table results/rgt_oracle_boxes.jsonl   # -> results/rgt_oracle_boxes.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path, as the module form has it
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REPO = Path(__file__).resolve().parents[2]
#: the RGT learns test's tiny model (tests/test_rgt.py), conv stem
MODEL = dict(img_size=64, patch_size=8, dim=64, depth=2, heads=2, warmup_epochs=1, stem="conv")


def kernel_family() -> str:
    return "avx2" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else "default"


def oracle_datamodule(root, size: int, twin_size: int, cache_dir: str, batch_size: int = 32, label_set: str = "nih8"):
    from data_modules import NIH

    return NIH(str(root), protocol="rgt", label_set=label_set, oracle_boxes="twin_boxes.csv", transforms="plain",
               image_size=size, cache_size=twin_size, cache_dir=cache_dir, batch_size=batch_size)


def train_and_test(dm, branch: str, source: str, epochs: int, seed: int, lr: float = 1e-3,
                   accelerator: str = "cpu", callbacks=(), rad_tokens: str = "per_feature", keep_model: bool = False,
                   **model) -> dict:
    """Fit RGT with these boxes on ``dm``, test it: mean test AUC, per-class AUC, BYOA-to-oracle IoU
    (``keep_model``: also the model and its trainer, for a test that scores it again)."""
    import lightning as L

    from cxrbench.methods import RGT

    L.seed_everything(seed)
    dm.setup()
    model = RGT(num_classes=len(dm.classes), class_names=dm.classes, task="multilabel", lam=1.0, lr=lr,
                box_source=source, branch=branch, rad_tokens=rad_tokens, **{**MODEL, **model})
    trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(model, dm)
    iou = trainer.callback_metrics.get("val/box_oracle_iou")
    trainer.test(model, dm, verbose=False)
    m = model.test_metrics
    kept = {"model": model, "trainer": trainer} if keep_model else {}
    return {**kept, "auc": float(m["auc/mean"]),
            "auc_per_class": {c: round(float(m[f"auc/{c}"]), 4) for c in dm.classes if f"auc/{c}" in m},
            "box_oracle_iou": None if iou is None else round(float(iou), 4)}


def run(seed: int, branch: str, source: str, epochs: int, n: int, twin_size: int, size: int, work: Path,
        accelerator: str = "cpu", difficulty: float = 0.5, rad_tokens: str = "per_feature") -> dict:
    import torch

    from cxrbench.provenance import commit
    from data_modules.twin import generate

    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)) if accelerator == "cpu" else torch.get_num_threads())
    root = generate("nih", work / f"nih_n{n}_s{twin_size}_d{difficulty}", n=n, seed=2, size=twin_size,
                    difficulty=difficulty)
    start = time.time()
    dm = oracle_datamodule(root, size, twin_size, str(work / "cache"))
    out = train_and_test(dm, branch, source, epochs, seed, accelerator=accelerator, rad_tokens=rad_tokens)
    return {"branch": branch, "source": source, "rad_tokens": rad_tokens, "seed": seed, "epochs": epochs, "n": n, "twin_size": twin_size,
            "size": size, "difficulty": difficulty, "kernel": kernel_family(), "accelerator": accelerator, **out,
            "seconds": round(time.time() - start, 1), "commit": commit()}


def table(path: Path) -> str:
    import numpy as np

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["branch"], r.get("rad_tokens", "shared"), r["source"], r["epochs"], r["n"]), []).append(r)
    out = ["# RGT's radiomics pathway with oracle boxes (issue 32)", "",
           f"Provenance: data **twin** (nih, seed 2, difficulty {sorted({r['difficulty'] for r in rows})}) · commits "
           f"{', '.join(sorted({str(r['commit']).split()[0] for r in rows}))} · {len(rows)} runs · "
           "`python -m benchmarks.rgt.oracle_boxes` (RGT protocol, nih8, the learns test's tiny RGT, λ = 1).", "",
           "Test mean AUC over the 8 box diseases (classes the test split can score), min–max over seeds and "
           "kernel families. box IoU: the radiomics boxes against the oracle on validation images, over the "
           "findings present (last epoch).", "",
           "| branch | radiomics tokens | boxes | epochs | images | runs | test AUC mean | min–max | box IoU |",
           "|---|---|---|---|---|---|---|---|---|"]
    for (branch, tokens, source, epochs, n), g in sorted(groups.items()):
        a = np.array([r["auc"] for r in g])
        ious = [r["box_oracle_iou"] for r in g if r.get("box_oracle_iou") is not None]
        iou = f"{np.mean(ious):.3f}" if ious else "–"
        kernels = "/".join(sorted({r["kernel"] for r in g}))
        out.append(f"| {branch} | {tokens} | {source} | {epochs} | {n} | {len(g)} ({kernels}) | {a.mean():.3f} | "
                   f"{a.min():.3f}–{a.max():.3f} | {iou} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--branch", default="radiomics", choices=["radiomics", "fused"])
    ap.add_argument("--sources", nargs="+", default=["oracle", "shuffled", "random"],
                    choices=["byoa", "oracle", "oracle_center", "shuffled", "random"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, nargs="+", default=[10])
    ap.add_argument("--n", type=int, nargs="+", default=[1500], help="twin images")
    ap.add_argument("--twin-size", type=int, default=128)
    ap.add_argument("--size", type=int, default=64, help="model input side")
    ap.add_argument("--difficulty", type=float, default=0.5)
    ap.add_argument("--rad-tokens", default="per_feature", choices=["per_feature", "shared"],
                    help="how a radiomic feature becomes a token (RadiomicsEncoder)")
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "rgt_oracle")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "rgt_oracle_boxes.jsonl")
    ap.add_argument("--table", type=Path, help="write the markdown table of this JSON-lines file and stop")
    a = ap.parse_args(argv)
    from cxrbench.files import atomic_write_text

    if a.table:
        atomic_write_text(a.table.with_suffix(".md"), table(a.table))
        return
    if a.branch == "radiomics" and "byoa" in a.sources:
        ap.error("--branch radiomics has no image branch for BYOA to read; drop byoa from --sources")
    for n in a.n:
        for epochs in a.epochs:
            for source in a.sources:
                for seed in a.seeds:
                    r = run(seed, a.branch, source, epochs, n, a.twin_size, a.size, a.work, a.accelerator, a.difficulty,
                            a.rad_tokens)
                    print(json.dumps(r), flush=True)
                    a.out.parent.mkdir(parents=True, exist_ok=True)
                    with a.out.open("a") as f:  # one line per finished run: a killed sweep keeps what it did
                        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
