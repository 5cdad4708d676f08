"""Why CAMContrast stage 2 ends at log(2B − 1) on the twin, with numbers, and how it trends with the batch
and the steps (issue 32).

Stage 1 as the CAMContrast learns test trains it (the 900-image cardiomegaly twin, RGT protocol, abnormal vs
normal, 128 px, U-Net width 8, depth 4, 12 epochs, lr 0.01) exports its heatmaps; then stage 2 (tests'
recipe: 32 px crops, SGD lr 0.01, momentum 0.9, 10% warm-up, τ 0.05) for each batch size and number of
steps. Per run, on a fixed probe batch: the share k/B of crops whose heatmap is all zero (normal images'
heatmaps are zeroed, §3.2: their heatmap views are one vector), the floor those identical views impose,
(k/B)·log k (``cxrbench.losses.nt_xent_floor_with_identical_views``), the collapse value log(2B − 1), the
mean of the last 10 steps' loss, and the mean pairwise cosine of the image projections, of the heatmap
projections and between them, at initialisation and at the end.

    python -m benchmarks.camcontrast.stage2_trend                     # -> results/camcontrast_stage2_trend.md
    python -m benchmarks.camcontrast.stage2_trend --batches 64 256 --steps 300 3000 --accelerator gpu   # GPU
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path, as the module form has it
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _trainer(accelerator: str, **kw):
    import lightning as L

    warnings.filterwarnings("ignore")
    return L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


def stage1_heatmaps(work: Path, accelerator: str) -> tuple[Path, Path]:
    import lightning as L

    from cxrbench.methods import CAMContrastCAM
    from data_modules import NIH
    from data_modules.twin import generate

    root = generate("nih", work / "twin", n=900, seed=2, size=128, workers=1)
    path = work / "runs" / "stage1" / "artifacts" / "heatmaps"
    if path.is_dir():
        return root, path
    L.seed_everything(0)
    dm = NIH(root, protocol="rgt", label_set="abnormal", transforms="plain", image_size=128, eval_size=128,
             cache_size=128, cache_dir=str(work / "c"), batch_size=32)
    model = CAMContrastCAM(encoder_kwargs={"width": 8, "depth": 4}, lr=0.01, warmup_epochs=1, loc_threshold=0.7,
                           num_classes=1, class_names=["Abnormal"])
    _trainer(accelerator, max_epochs=12).fit(model, dm)
    model.bind_data(dm.contract())
    model.export_artifact("heatmaps", path, {"run_id": "stage1"})
    return root, path


def _cosines(z):
    import torch.nn.functional as F

    z = F.normalize(z, dim=-1)
    sim = z @ z.T
    n = len(z)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def diagnose(model, batch, mode: str) -> dict:
    """The projections of ``batch`` as the loss sees them (``train``: BatchNorm on the batch's own statistics)
    or as an evaluation would (``eval``: the running statistics), on a copy (no buffer of ``model`` moves)."""
    import copy

    import torch
    import torch.nn.functional as F

    probe = copy.deepcopy(model).train(mode == "train")
    with torch.no_grad():
        z_img, z_heat, _ = probe.project(probe.image_views(batch)[:, 0], batch["heatmap"])
    return {"cos_image": _cosines(z_img), "cos_heatmap": _cosines(z_heat),
            "cos_between": float((F.normalize(z_img, dim=-1) * F.normalize(z_heat, dim=-1)).sum(-1).mean())}


def run(root: Path, heatmaps: Path, batch: int, steps: int, work: Path, accelerator: str, seed: int = 0) -> dict:
    import lightning as L
    import numpy as np

    from cxrbench.losses import nt_xent_floor_with_identical_views
    from cxrbench.methods import CAMContrast
    from data_modules import NIHCrops

    L.seed_everything(seed)
    dm = NIHCrops(root, protocol="rgt", heatmaps=str(heatmaps), full_size=128, image_size=32, cache_size=128,
                  cache_dir=str(work / "c"), batch_size=batch)
    model = CAMContrast(encoder_kwargs={"width": 8, "depth": 4}, lr=0.01, momentum=0.9, warmup_fraction=0.1)
    dm.setup("fit")
    probe = model.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)  # uint8 images -> float, as in training
    before = {**diagnose(model, probe, "train"), **{f"eval_{k}": v for k, v in diagnose(model, probe, "eval").items()}}
    losses, normal = [], []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx):
            losses.append(float(outputs["loss"]))
            normal.append(int((b["heatmap"].flatten(1).abs().sum(1) == 0).sum()))

    _trainer(accelerator, max_steps=steps, max_epochs=-1, limit_val_batches=0, callbacks=[Record()]).fit(model, dm)
    model.cpu()
    after = {**diagnose(model, probe, "train"), **{f"eval_{k}": v for k, v in diagnose(model, probe, "eval").items()}}
    floors = [nt_xent_floor_with_identical_views(batch, k) for k in normal]
    return {"batch": batch, "steps": steps, "seed": seed, "normal_share": float(np.mean(normal)) / batch,
            "floor": float(np.mean(floors)), "collapse": math.log(2 * batch - 1), "first_loss": losses[0],
            "last_loss": float(np.mean(losses[-10:])), **{f"{k}_init": v for k, v in before.items()},
            **{f"{k}_end": v for k, v in after.items()}}


def table(rows: list[dict], commit: str) -> str:
    lines = ["# CAMContrast stage 2 on the twin: the loss against its floor and the collapse, by batch and steps (issue 32)",
             "", f"Provenance: data **twin** (nih, n=900, seed 2, 128 px; stage 1 as its learns test) · commit {commit[:10]} · "
             f"{len(rows)} runs · `python -m benchmarks.camcontrast.stage2_trend`.", "",
             "k/B: the share of a batch's crops whose heatmap is all zero (one shared view). Floor: (k/B)·log k, "
             "the least NT-Xent those identical views allow. Collapse: log(2B − 1), every view one vector. "
             "cos: mean pairwise cosine of the image projections, of the heatmap projections, and of each image "
             "crop with its heatmap crop, on one fixed batch, at initialisation → at the end, as the loss sees them "
             "(BatchNorm on the batch's statistics); cos image (eval): the image projections with BatchNorm's "
             "running statistics, as a probe or an evaluation sees them.", "",
             "| B | steps | k/B | floor | collapse log(2B−1) | first loss | last 10 steps | cos image | cos heatmap | cos pair | cos image (eval) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['steps']} | {r['normal_share']:.2f} | {r['floor']:.2f} | {r['collapse']:.2f} | "
                     f"{r['first_loss']:.2f} | {r['last_loss']:.2f} | {r['cos_image_init']:.2f} → {r['cos_image_end']:.2f} | "
                     f"{r['cos_heatmap_init']:.2f} → {r['cos_heatmap_end']:.2f} | "
                     f"{r['cos_between_init']:.2f} → {r['cos_between_end']:.2f} | "
                     f"{r['eval_cos_image_init']:.2f} → {r['eval_cos_image_end']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--work", default=".cache/camcontrast_stage2_trend")
    ap.add_argument("--out", default="results/camcontrast_stage2_trend.md")
    args = ap.parse_args(argv)
    import torch

    from cxrbench.files import atomic_write_text
    from cxrbench.provenance import commit

    if args.accelerator == "cpu":
        torch.set_num_threads(1)
    work = Path(args.work)
    root, heatmaps = stage1_heatmaps(work, args.accelerator)
    rows = []
    for b in args.batches:
        for s in args.steps:
            rows.append(run(root, heatmaps, b, s, work, args.accelerator))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    atomic_write_text(out, table(rows, commit()))
    atomic_write_text(out.with_suffix(".jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
