"""Two CPU processes (gloo) with uneven shards and sampler padding give the single-process numbers."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cxrbench.metrics import SampleStore, SegmentationMetric, auc

N = 101


def _data():
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(N, 3, generator=g) < 0.3).float()
    target[torch.rand(N, 3, generator=g) < 0.1] = float("nan")
    preds = (target.nan_to_num(0) * 0.3 + torch.rand(N, 3, generator=g) * 0.7).clamp(0, 1)
    gt = torch.rand(N, 1, 16, 16, generator=g) < 0.2
    gt[::7] = False  # some empty truths
    pred = gt ^ (torch.rand(N, 1, 16, 16, generator=g) < 0.05)
    pred[::11] = False
    return preds, target, pred, gt


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    preds, target, pred, gt = _data()
    # Uneven shards, as a sampler without padding would give; rank 1 also gets two padded repeats.
    idx = torch.arange(0, 60) if rank == 0 else torch.cat([torch.arange(60, N), torch.tensor([0, 1])])
    store, seg = SampleStore(("preds", "target")), SegmentationMetric()
    for chunk in idx.split(16):
        store.update(chunk, preds=preds[chunk], target=target[chunk])
        seg.update(chunk, pred[chunk], gt[chunk])
    got = store.compute()
    result = {"auc": auc(got["preds"], got["target"]), "seg": seg.compute(), "n": len(got["index"])}
    if rank == 0:
        with open(out, "w") as fh:
            json.dump(result, fh)
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gloo_metrics_equal_single_process(tmp_path):
    out = str(tmp_path / "ddp.json")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    ddp = json.loads(open(out).read())
    preds, target, pred, gt = _data()
    single_seg = SegmentationMetric()
    single_seg.update(torch.arange(N), pred, gt)
    expected = {"auc": auc(preds, target), "seg": single_seg.compute(), "n": N}
    assert ddp["n"] == N
    assert ddp["auc"]["per_class"] == expected["auc"]["per_class"]  # exactly
    assert ddp["auc"]["mean"] == expected["auc"]["mean"]
    assert ddp["seg"] == expected["seg"]
    assert os.path.exists(out)
    assert not np.isnan(ddp["auc"]["mean"])


def _empty_rank(rank: int, world: int) -> dict:
    """IoU-accuracy's store when one process saw no box of the task's classes: it updates with empty
    typed tensors (what ``ClassificationMethod._localize`` does), and the gather works."""
    store = SampleStore(("iou", "n_boxes"))
    keys = torch.arange(10, dtype=torch.long) if rank == 0 else torch.zeros(0, dtype=torch.long)
    store.update(keys, iou=torch.linspace(0, 1, len(keys), dtype=torch.float64),
                 n_boxes=torch.ones(len(keys), dtype=torch.float64))
    got = store.compute()
    return {"index": got["index"].tolist(), "iou": got["iou"].tolist()}


def test_a_process_without_boxes_does_not_break_the_iou_gather(tmp_path):
    from gloo import on_two_processes

    got = on_two_processes(_empty_rank, tmp_path)
    assert got["index"] == list(range(10)) and got["iou"] == torch.linspace(0, 1, 10, dtype=torch.float64).tolist()
