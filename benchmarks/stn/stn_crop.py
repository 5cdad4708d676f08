"""What the STN (or the thorax crop) samples, on the CheXpert test fold: gallery, parameters, markers.

    python -m benchmarks.stn.stn_crop --ckpt RUN/checkpoints/best.ckpt --root .cache/twin/chexpert-smoke \
        [--method stn|thorax-crop] [--fold 0] [--view PA] [--out results] [--wandb]

Writes ``OUT/<method>_gallery.png`` (test images with the window the transform samples drawn in red and
the twin's burned-in text markers in yellow, beside the transformed image), ``OUT/<method>_params.png``
(histograms of s_x, s_y, t_x, t_y over the test fold) and ``OUT/<method>_crop.json`` (the numbers,
with their provenance), and prints:

- the share of marker ink in what the classifier sees, through the learned transform and through the
  identity (the whole image), averaged over the test images;
- the share of all marker ink that lies inside the sampled window (identity: 100%);
- the mean window area, and a plain statement when the learned transform does not crop.

The marker pixels are recomputed from the twin's seeds (``data_modules.twin.chexpert.marker_mask``),
so the measurement needs a twin; on real data only the gallery and the parameters are written.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data_modules.transforms import to_float


def marker_coverage(dm, rows: np.ndarray, size: int) -> torch.Tensor | None:
    """[N, 1, size, size] share of each model-input pixel covered by marker ink (None: not a twin)."""
    from data_modules.twin.chexpert import marker_mask
    from data_modules.twin.io import TwinSpec, read_manifest

    manifest = read_manifest(dm.root)
    if not manifest or manifest.get("dataset") != "chexpert":
        return None
    spec = TwinSpec(**manifest)
    meta = dm.index.meta
    out = []
    for r in rows:
        m = marker_mask(meta["rel_path"].iloc[r], meta["Frontal/Lateral"].iloc[r] == "Lateral", spec)
        t = torch.from_numpy(m.astype(np.float32))[None, None]
        out.append(F.interpolate(t, size=(size, size), mode="area"))  # the DataModule resizes H×W -> size²
    return torch.cat(out)


def window_mask(params: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 1, size, size]: 1 where a pixel centre lies inside the window the affine samples."""
    from cxrbench.models.stn import sampled_window

    w = sampled_window(params.float())
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    inx = (c[None, :] >= w[:, 0:1]) & (c[None, :] <= w[:, 2:3])  # [N, size]
    iny = (c[None, :] >= w[:, 1:2]) & (c[None, :] <= w[:, 3:4])
    return (iny[:, :, None] & inx[:, None, :]).float()[:, None]


def measure(model, dm, n_gallery: int = 8) -> dict:
    """Runs the model's transform over the test split; returns params, gallery tensors and marker numbers."""
    from cxrbench.models.stn import affine_sample, theta_matrix

    params, rows, inputs, outputs = [], [], [], []
    model.eval()
    with torch.no_grad():
        for batch in dm.dataloader("test", shuffle=False):
            batch["image"] = to_float(batch["image"])  # uint8 from the loader; Lightning's hook is not in this loop
            x, p = model.warp(batch["image"])
            params.append(p.float())
            rows.append(batch["index"])
            if sum(len(i) for i in inputs) < n_gallery:
                inputs.append(batch["image"])
                outputs.append(x)
    params, rows = torch.cat(params), torch.cat(rows).numpy()
    res = {"params": params, "rows": rows, "inputs": torch.cat(inputs)[:n_gallery],
           "outputs": torch.cat(outputs)[:n_gallery].clamp(0, 1)}
    size = int(res["inputs"].shape[-1])
    cover = marker_coverage(dm, rows, size)
    res["coverage"] = None if cover is None else cover[:n_gallery]
    if cover is not None:
        seen = affine_sample(cover, theta_matrix(params))  # what the classifier sees of the markers
        inside = (cover * window_mask(params, size)).sum()
        res["markers"] = {
            "share_identity": float(cover.mean()),
            "share_transformed": float(seen.mean()),
            "ink_inside_window": float(inside / cover.sum()) if cover.sum() > 0 else math.nan,
            "images_with_ink_in_view": float((seen.flatten(1).sum(1) > 0).float().mean()),
        }
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="checkpoint of an stn (or thorax-crop) run")
    ap.add_argument("--method", default="stn", choices=["stn", "thorax-crop"])
    ap.add_argument("--root", required=True, help="CheXpert folder (a twin for the marker measurement)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--n-folds", type=int, default=5)
    ap.add_argument("--view", default="PA", help="PA (the paper), or any (small twins)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="results")
    ap.add_argument("--n-gallery", type=int, default=8)
    ap.add_argument("--note", default="", help="how the checkpoint was made (stored with the numbers)")
    ap.add_argument("--wandb", action="store_true", help="also log the pictures and numbers to W&B (offline unless a key is set)")
    args = ap.parse_args(argv)

    from cxrbench.methods import METHODS
    from cxrbench.plots import gallery_figure, params_figure
    from cxrbench.provenance import commit, data_provenance
    from data_modules import CheXpert

    torch.set_num_threads(min(4, torch.get_num_threads()))
    model = METHODS[args.method].load_from_checkpoint(args.ckpt, map_location="cpu")
    size = model.image_size
    dm = CheXpert(args.root, task="abnormal", view=args.view, fold=args.fold, n_folds=args.n_folds,
                  transforms="stn", image_size=size, eval_size=size, cache_size=size,
                  split_seed=args.split_seed, cache_dir=args.cache_dir, batch_size=32)
    dm.setup()
    res = measure(model, dm, args.n_gallery)
    p = res["params"]
    win = window_mask(p, size)[:, 0].mean((1, 2))
    summary = {"method": args.method, "ckpt": str(args.ckpt), "fold": args.fold, "view": args.view,
               "n_test_images": len(p), "image_size": size,
               "params_mean": dict(zip(("s_x", "s_y", "t_x", "t_y"), p.mean(0).tolist())),
               "params_std": dict(zip(("s_x", "s_y", "t_x", "t_y"), p.std(0).tolist())),
               "window_area_mean": float(win.mean()), "markers": res.get("markers"), "note": args.note,
               "input_dependent": bool(float(p.std(0).max()) > 1e-3),
               "provenance": {**data_provenance(args.root), "commit": commit()}}
    crops = summary["window_area_mean"] < 0.95
    print(f"{args.method} on {len(p)} test images of fold {args.fold} ({summary['provenance'].get('data', '?')}), {size}²")
    print("  params mean ± std: " + ", ".join(f"{k} {summary['params_mean'][k]:.3f} ± {summary['params_std'][k]:.3f}"
                                            for k in summary["params_mean"]))
    print(f"  sampled window: {100 * summary['window_area_mean']:.1f}% of the image on average"
          + ("" if crops else "  -> this learned transform does NOT crop (window >= 95% of the image)"))
    if not summary["input_dependent"]:
        print("  the transform is the same for every test image (parameter std < 1e-3): a fixed crop, not a per-image one")
    m = res.get("markers")
    if m:
        print(f"  marker ink in what the classifier sees: {100 * m['share_transformed']:.3f}% through the {args.method} "
              f"vs {100 * m['share_identity']:.3f}% through the identity (whole image)")
        print(f"  marker ink inside the sampled window: {100 * m['ink_inside_window']:.1f}% (identity: 100%); "
              f"test images with any marker ink in view: {100 * m['images_with_ink_in_view']:.0f}%")
    else:
        print("  (not a CheXpert twin: no marker measurement)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.method.replace("-", "_")
    fig = gallery_figure(res["inputs"], res["outputs"], p[: len(res["inputs"])], markers=res["coverage"],
                         title=f"{args.method}: input (red: sampled window, yellow: text markers) | transformed")
    fig.savefig(out / f"{stem}_gallery.png", dpi=90)
    fig2 = params_figure(p, args.method)
    fig2.savefig(out / f"{stem}_params.png", dpi=90)
    (out / f"{stem}_crop.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out / f'{stem}_gallery.png'}, {out / f'{stem}_params.png'}, {out / f'{stem}_crop.json'}")
    if args.wandb:
        from lightning.pytorch.loggers import WandbLogger

        from cxrbench.plots import figure_array

        import os

        lg = WandbLogger(project="cxrbench", job_type=f"{args.method}-crop", offline=not os.environ.get("WANDB_API_KEY"))
        lg.log_image(key=f"{args.method}/gallery", images=[figure_array(fig)])
        lg.log_image(key=f"{args.method}/params", images=[figure_array(fig2)])
        flat = {f"{args.method}/window_area_mean": summary["window_area_mean"]}
        if m:
            flat.update({f"{args.method}/markers/{k}": v for k, v in m.items()})
        lg.log_metrics(flat)
        lg.experiment.finish()
    import matplotlib.pyplot as plt

    plt.close("all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
