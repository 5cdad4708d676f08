"""The contrastive losses on two CPU processes (gloo, DDP) with half the global batch each give the loss
and the gradients of one process with the whole batch: the negatives are the global batch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cxrbench.losses import nt_xent, supcon

N, D, TAU = 12, 8, 0.1


def _data():
    g = torch.Generator().manual_seed(0)
    views = torch.randn(N, 2, D, generator=g)
    labels = torch.tensor([0, 1, 1, 0, 2, 2, 0, 1, 0, 0, 1, 2])
    return views, labels


def _projector() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, 4))


def _loss(kind: str, net: nn.Module, views: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    z = net(views)
    return nt_xent(z[:, 0], z[:, 1], TAU) if kind == "nt_xent" else supcon(z, labels, TAU)


def _one_step(kind: str) -> dict:
    views, labels = _data()
    net = _projector()
    loss = _loss(kind, net, views, labels)
    loss.backward()
    return {"loss": float(loss), "grads": [p.grad.flatten().tolist() for p in net.parameters()]}


def _half_batch_each(rank: int, world: int, kind: str) -> dict:
    views, labels = _data()
    rows = torch.arange(N).chunk(world)[rank]  # half the global batch each, as the global-batch rule splits it
    ddp = nn.parallel.DistributedDataParallel(_projector())
    loss = _loss(kind, ddp, views[rows], labels[rows])
    loss.backward()  # DDP averages the gradients over the processes
    return {"loss": float(loss), "grads": [p.grad.flatten().tolist() for p in ddp.module.parameters()]}


@pytest.mark.parametrize("kind", ["nt_xent", "supcon"])
def test_two_processes_with_half_the_batch_each_equal_one_process_with_all_of_it(kind, tmp_path):
    from gloo import on_two_processes

    ddp = on_two_processes(_half_batch_each, tmp_path, kind)
    one = _one_step(kind)
    assert ddp["loss"] == pytest.approx(one["loss"], rel=1e-6)
    for got, want in zip(ddp["grads"], one["grads"]):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-7)
    # without the gather, each process contrasts its own half: another loss (what issue 27 found)
    views, labels = _data()
    half = _loss(kind, _projector(), views[: N // 2], labels[: N // 2])
    assert abs(float(half) - one["loss"]) > 1e-3
