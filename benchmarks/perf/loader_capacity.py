"""Loader capacity per paper config: can the CPU cores of a GPU node feed each GPU (issue 33)?

    python benchmarks/perf/loader_capacity.py [--n 96] [--batches 6] [--gpu h100] [--mfu 0.4] [--json FILE]

For each paper config below, on a twin of its dataset at the release's image size:

- **loader**: images/s on one core (one process, no workers, torch on one thread) through the config's
  own DataModule, training split, real transforms, at the paper's input size, from the uint8 memmap
  cache the suite builds once per dataset (the steady state of a sweep, timed after as many warm-up
  batches; decoding the release's files is the cache build's cost, paid once). GMML's corruption and
  the crops' heatmaps are drawn in the training step, not in the loader, and are not in this figure;
- **GPU**: the images/s one GPU would consume training that config's model at ``--mfu`` of its dense
  bf16 peak: peak × MFU ÷ training FLOPs per image, the FLOPs counted by ``torch.utils.flop_counter`` on
  one CPU forward at the input size (× 3 for forward + backward of a trained network, × 1 for a frozen
  encoder's forward plus its head, × the views per image);
- **cores per GPU** = GPU images/s ÷ loader images/s per core, beside the ~12–16 cores a GPU node gives
  each GPU.

A figure for planning, not a promise: the FLOP counts leave out what ``forward`` does not run (a
pretraining's projector and loss, GMML's decoder are small beside the encoder), and MFU is an assumption.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]

#: peak dense bf16 tensor-core FLOP/s (vendor datasheets, without sparsity)
GPUS = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "l40s": 362e12, "v100": 125e12}
#: (label, config, twin dataset, twin options): the configs whose loaders a sweep runs longest
CONFIGS = (
    ("STN 512² (CheXpert, affine)", "benchmarks/stn/configs/stn_chexpert.yaml", "chexpert", {"release": "full"}),  # view any
    ("CAMContrast stage 1 448² (NIH)", "benchmarks/camcontrast/configs/camcontrast_cam_nih.yaml", "nih", {}),
    ("SimCLR-crop 224² crops of 448², 2 views (NIH)", "benchmarks/camcontrast/configs/simclr_crop_nih.yaml", "nih", {}),
    ("linear probe 224² (NIH, nih14-linear)", "benchmarks/pretraining_baselines/configs/linear_nih14.yaml", "nih", {}),
    ("U-Net fine-tune 224² (SIIM-ACR)", "benchmarks/pretraining_baselines/configs/unet_siim.yaml", "siim", {"release": "stage2"}),
    ("AMM Inception-ResNet-v2 224² (NIH)", "benchmarks/amm/configs/amm_nih8.yaml", "nih", {}),  # its cardiomegaly config: same model and loader
    ("RGT 224² (NIH)", "benchmarks/rgt/configs/rgt_nih8.yaml", "nih", {}),
    ("GMML ViT-S 224² (COVIDx)", "benchmarks/sscxr/configs/gmml_covidx.yaml", "covidx", {}),
    ("ViT-S fine-tune 256² (COVIDx)", "benchmarks/sscxr/configs/finetune_covidx.yaml", "covidx", {}),
    ("UNETR 256² (lungs)", "benchmarks/sscxr/configs/unetr_lungs.yaml", "lungs", {}),
)
#: the twins' image sides: the releases' (NIH, SIIM 1024²; CheXpert's full release ~2,000 px, here 1024)
TWIN_SIZE = {"nih": 1024, "siim": 1024, "chexpert": 1024, "covidx": 512, "lungs": 512}


def _config(path: str, root: str, cache_dir: str) -> dict:
    cfg = yaml.safe_load((REPO / path).read_text())
    init = cfg["data"]["init_args"]
    init.update(root=root, cache_dir=cache_dir, num_workers=0)
    if "view" in init:  # a small twin draws real rows, ~13% PA: every view, the same transforms
        init["view"] = "any"
    for key in ("encoder_artifact", "boxes", "heatmaps"):  # producers' artifacts: the model starts at random
        (cfg.get("model", {}).get("init_args") or {}).pop(key, None)
        init.pop(key, None)
    cfg["trainer"] = {"accelerator": "cpu", "devices": 1, "logger": False, "max_epochs": 1}
    return cfg


def _build(cfg: dict):
    from cxrbench.lightning_cli import build_cli

    scratch = tempfile.mkdtemp(prefix="cxrbench-capacity-")
    cfg = copy.deepcopy(cfg)
    cfg["trainer"]["default_root_dir"] = scratch
    cli = build_cli(["--config", yaml.safe_dump(cfg)], run=False)
    return cli.model, cli.datamodule


def loader_rate(dm, batches: int) -> tuple[float, int]:
    """Training images/s of ``dm`` on this core (after one warm-up batch), and the views per image."""
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)

    def draw():
        nonlocal it
        try:
            return next(it)
        except StopIteration:  # a small twin's epoch: the next one
            it = iter(loader)
            return next(it)

    first = draw()
    views = first["image"].shape[1] if first["image"].ndim == 5 else 1
    for _ in range(batches):  # warm-up: the cache's pages in memory, as in a sweep's second epoch
        draw()
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += len(draw()["image"])
    return n / max(time.perf_counter() - t0, 1e-9), views


def train_flops_per_image(model, size: int, views: int) -> float:
    """Training FLOPs per image: the forward's (FlopCounterMode, one CPU forward at ``size``) × 3, or × 1
    for a frozen encoder (a probe runs it forward only), × the views each image gives."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.rand(2, 1, size, size)
    run = model.reconstruct if hasattr(model, "reconstruct") else model  # GMML: encoder and decoder
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        try:
            run(x)
        except NotImplementedError:  # a pretraining without forward: its encoder (projector and loss are small)
            model.encoder(x)
    forward = counter.get_total_flops() / 2
    frozen = getattr(model, "freeze", "none") in ("strict", "bn_train")
    return forward * (1 if frozen else 3) * views


def measure(n: int = 96, batches: int = 6, gpu: str = "h100", mfu: float = 0.4) -> list[dict]:
    from data_modules.transforms import DEFAULT_SIZE
    from data_modules.twin import generate

    if gpu not in GPUS:
        raise SystemExit(f"--gpu {gpu!r} is not known; known: {', '.join(f'{k} ({v / 1e12:.0f} TFLOP/s bf16)' for k, v in GPUS.items())}")
    if not 0 < mfu <= 1:
        raise SystemExit(f"--mfu must be in (0, 1], got {mfu}")
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxrbench-capacity-") as tmp:
        twins: dict = {}
        for label, path, dataset, options in CONFIGS:
            key = (dataset, tuple(sorted(options.items())))
            if key not in twins:
                twins[key] = str(generate(dataset, Path(tmp) / f"{dataset}-{len(twins)}", n=n, seed=0,
                                          size=TWIN_SIZE[dataset], **options))
            cfg = _config(path, twins[key], str(Path(tmp) / "cache"))
            model, dm = _build(cfg)
            rate, views = loader_rate(dm, batches)
            model.bind_data(dm.contract())  # what a fit hands the method (RGT's class box prior)
            model.setup("fit")
            size = int(dm.image_size or DEFAULT_SIZE[dm.preset])  # the preset's side where the config sets none
            flops = train_flops_per_image(model, size, views)
            gpu_rate = GPUS[gpu] * mfu / flops
            rows.append({"config": label, "path": path, "input": size, "views": views, "batch": int(dm.batch_size),
                         "loader_img_s_per_core": rate, "train_gflop_per_image": flops / 1e9,
                         "gpu_img_s": gpu_rate, "cores_per_gpu": gpu_rate / rate})
            print(f"{label}: loader {rate:.0f} img/s/core, {flops / 1e9:.1f} GFLOP/img, {gpu} at {mfu:.0%} MFU "
                  f"{gpu_rate:.0f} img/s -> {gpu_rate / rate:.1f} cores", flush=True)
    return rows


def table(rows: list[dict], gpu: str, mfu: float) -> str:
    lines = [f"| config | input | loader img/s per core | training GFLOP/img | {gpu.upper()} img/s at {mfu:.0%} MFU | cores per GPU |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['input']}²{' ×' + str(r['views']) if r['views'] > 1 else ''} | "
                     f"{r['loader_img_s_per_core']:,.0f} | {r['train_gflop_per_image']:,.1f} | {r['gpu_img_s']:,.0f} | "
                     f"{r['cores_per_gpu']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--mfu", type=float, default=0.4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = measure(args.n, args.batches, args.gpu, args.mfu)
    print(table(rows, args.gpu, args.mfu))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
