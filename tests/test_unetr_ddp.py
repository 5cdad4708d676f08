"""UNETR under DDP (2 CPU processes, gloo, Lightning's default find_unused_parameters=False) trains steps:
MONAI's unused cross-attention norms are frozen, so DDP does not wait for their gradients."""

from __future__ import annotations

import torch
from torch import nn

UNETR_VIT = {"img_size": 64, "patch_size": 16, "embed_dim": 48, "depth": 12, "num_heads": 3}


def _three_steps(rank: int, world: int) -> list[float]:
    from cxrbench.methods import UNETRSegmenter

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
    return losses


def test_unetr_trains_three_steps_under_ddp(tmp_path):
    from gloo import on_two_processes

    losses = on_two_processes(_three_steps, tmp_path)
    assert len(losses) == 3 and all(l == l for l in losses)  # three finite steps
