"""Where AMM's W points, over seeds, CPU kernel families and W's resolution (issue 32).

The AMM learns test's recipe (tests/test_amm.py: resnet10t, 128 px, 24 epochs, SGD lr 0.01, batch 32, the
900-image cardiomegaly twin of seed 2), with the backbone cut at ``--stage`` (-2: stride 16, W 8×8; -3:
stride 8, W 16×16). Per run: test AUC, pointing game (W's maximum in the heart box) against its chance, W's
box IoU against the same box at random places, W's mass in the box. One line per run is appended to
``--out`` (JSON lines, with the kernel family and commit); ``--table`` writes the markdown table of a file.

    python -m benchmarks.amm.w_localization --stage -3 --seeds 0 1 2                   # default kernels
    ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 python -m benchmarks.amm.w_localization --stage -3 --seeds 0 1 2
    python -m benchmarks.amm.w_localization --table results/amm_w_localization.jsonl   # -> results/amm_w_localization.md
    # GPU: the paper's backbone and input on a larger twin (../shared/gpu-checklist.md)
    python -m benchmarks.amm.w_localization --backbone densenet121 --stage -1 --size 224 --n 8000 --epochs 40 \
        --accelerator gpu --seeds 0 1 2 --out results/gpu/amm_w_localization.jsonl
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


def run(seed: int, stage: int, epochs: int, size: int, work: Path, backbone: str = "resnet10t", n: int = 900,
        accelerator: str = "cpu") -> dict:
    import lightning as L
    import torch

    from cxrbench.localization import heatmap_to_boxes
    from cxrbench.localization.chance import VersusChance
    from cxrbench.methods import AMM
    from cxrbench.provenance import commit
    from data_modules import NIH
    from data_modules.transforms import to_float
    from data_modules.twin import generate

    warnings.filterwarnings("ignore")
    if accelerator == "cpu":
        torch.set_num_threads(1)  # as the learns test runs (two xdist workers on two cores)
    twin_size = max(128, size)
    root = generate("nih", work / f"twin{n}_{twin_size}", n=n, seed=2, size=twin_size, workers=None if n > 900 else 1)
    L.seed_everything(seed)
    start = time.time()
    dm = NIH(root, protocol="amm", label_set="cardiomegaly", transforms="plain", image_size=size, eval_size=size,
             cache_size=size, cache_dir=str(work / f"cache{size}"), batch_size=32, val_share=0.15)
    model = AMM(backbone=backbone, backbone_stage=stage, lr=0.01, num_classes=1, class_names=["Cardiomegaly"],
                threshold="val_youden")
    trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    model.eval()
    tally = VersusChance(model.class_names)
    with torch.no_grad():
        for batch in dm.dataloader("loc", shuffle=False):
            maps = model.heatmaps(to_float(batch["image"]).to(model.device)).cpu()
            top = torch.stack([torch.as_tensor(heatmap_to_boxes(hm.numpy(), model.loc_threshold)[0, :4])
                               for hm in maps[:, 0]])[:, None]
            tally.update(maps, top, batch["boxes"], batch["box_labels"])
    r = tally.summary()["Cardiomegaly"]
    with torch.no_grad():
        w_side = model.head.weights(model.backbone.feature_map(torch.zeros(1, 1, size, size, device=model.device))).shape[-1]
    kernels = os.environ.get("ATEN_CPU_CAPABILITY", "default") if accelerator == "cpu" else accelerator
    return {"seed": seed, "kernels": kernels, "backbone": backbone, "n": n, "stage": stage,
            "w_side": int(w_side), "epochs": epochs, "size": size, "auc": model.test_metrics["auc/mean"],
            **{k: float(v) for k, v in r.items() if k != "n"}, "box_images": float(r["n"]), "seconds": round(time.time() - start, 1), "commit": commit()}


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (-r["stage"], r["kernels"], r["seed"]))
    lines = ["# AMM's W: where it points, over seeds, kernel families and W's resolution (issue 32)", "",
             f"Provenance: data **twin** (nih, seed 2; n per run below when not 900) · commits "
             f"{', '.join(sorted({str(r['commit'])[:10] for r in rows}))} · {len(rows)} runs · "
             f"`python -m benchmarks.amm.w_localization` (the AMM learns test's recipe, 24 epochs).", "",
             "Pointing: share of the 50 box images whose W maximum lies in the heart box (chance: the box's share "
             "of the image). IoU: W's box (the shared scorer's top box) against the truth, beside the same box at "
             "random places. Energy: W's mass inside the box (chance as pointing).", "",
             "| backbone cut | W | kernels | seed | test AUC | pointing (chance) | W box IoU | random-box IoU | energy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.get('backbone', 'resnet10t')}{'' if r.get('n', 900) == 900 else ' n=' + str(r['n'])} stage {r['stage']} | {r['w_side']}×{r['w_side']} | {r['kernels']} | {r['seed']} | {r['auc']:.3f} | "
                     f"{r['pointing']:.2f} ({r['pointing_chance']:.2f}) | {r['iou']:.3f} | {r['random_iou']:.3f} | "
                     f"{r['energy']:.2f} |")
    for stage in sorted({r["stage"] for r in rows}, reverse=True):
        sub = [r for r in rows if r["stage"] == stage]
        above = sum(r["iou"] > r["random_iou"] for r in sub)
        lines.append("")
        lines.append(f"Stage {stage}: pointing {min(r['pointing'] for r in sub):.2f}–{max(r['pointing'] for r in sub):.2f} "
                     f"(mean {sum(r['pointing'] for r in sub) / len(sub):.2f}); W's box beats random boxes in {above} of "
                     f"{len(sub)} runs.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", type=int, default=-2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--backbone", default="resnet10t", help="timm backbone (the paper: densenet121, stage -1)")
    ap.add_argument("--n", type=int, default=900, help="twin rows (the box images are about 1 in 7 of them, at most 880)")
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--work", default=".cache/amm_w")
    ap.add_argument("--out", default="results/amm_w_localization.jsonl")
    ap.add_argument("--table", metavar="JSONL", help="write the markdown table of JSONL beside it and stop")
    args = ap.parse_args(argv)
    if args.table:
        src = Path(args.table)
        if not src.is_file():
            raise SystemExit(f"{src}: no such file (run the measurement first)")
        from cxrbench.files import atomic_write_text

        atomic_write_text(src.with_suffix(".md"), table(src))
        print(f"wrote {src.with_suffix('.md')}")
        return
    for seed in args.seeds:
        row = run(seed, args.stage, args.epochs, args.size, Path(args.work), args.backbone, args.n, args.accelerator)
        print(json.dumps(row))
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
