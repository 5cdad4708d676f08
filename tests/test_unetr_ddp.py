"""UNETR under DDP (2 CPU processes, gloo, Lightning's default find_unused_parameters=False) trains steps:
MONAI's unused cross-attention norms are frozen, so DDP does not wait for their gradients."""

from __future__ import annotations

import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

UNETR_VIT = {"img_size": 64, "patch_size": 16, "embed_dim": 48, "depth": 12, "num_heads": 3}


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    from cxrbench.methods import UNETRSegmenter

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    seg = UNETRSegmenter(encoder="vit_small_patch16", encoder_kwargs=UNETR_VIT)
    ddp = nn.parallel.DistributedDataParallel(seg.net)
    opt = torch.optim.AdamW([p for p in ddp.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(rank)
    losses = []
    for _ in range(3):
        x = torch.rand(2, 1, 64, 64, generator=g)
        y = (torch.rand(2, 1, 64, 64, generator=g) > 0.5).float()
        loss = nn.functional.binary_cross_entropy_with_logits(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    if rank == 0:
        with open(out, "w") as fh:
            json.dump(losses, fh)
    dist.barrier()
    dist.destroy_process_group()


def test_unetr_trains_three_steps_under_ddp(tmp_path):
    out = str(tmp_path / "losses.json")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    losses = json.loads(open(out).read())
    assert len(losses) == 3 and all(l == l for l in losses)  # three finite steps
