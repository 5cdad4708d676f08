"""The batch losses on two CPU processes (gloo, DDP) with half the global batch each give the loss and the
gradients of one process with the whole batch: the contrastive losses' negatives are the global batch's, and
the masked means (known labels, corrupted pixels) are over the global batch's entries."""

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


# ---- losses that average over a variable number of entries (known labels, corrupted pixels)
def _masked_data():
    """12 images, 3 labels: the first half of the batch has most labels unknown, the second none, so the two
    processes hold 5 and 18 known entries; the masks likewise (few corrupted pixels in the first half)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, D, generator=g)
    label = (torch.rand(N, 3, generator=g) > 0.5).float()
    label[: N // 2][torch.rand(N // 2, 3, generator=g) > 0.3] = float("nan")
    target = torch.randn(N, 4, generator=g)
    mask = torch.rand(N, 4, generator=g) > 0.2
    mask[: N // 2] &= torch.rand(N // 2, 4, generator=g) > 0.8
    return x, label, target, mask


def _masked_loss(kind: str, net: nn.Module, x, label, target, mask) -> torch.Tensor:
    from cxrbench.losses import masked_bce, masked_focal, masked_l1

    out = net(x)
    if kind == "masked_l1":
        return masked_l1(out[:, :4], target, mask)
    return (masked_bce if kind == "masked_bce" else masked_focal)(out[:, :3], label)


def _masked_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, 4))


def _masked_half_each(rank: int, world: int, kind: str) -> dict:
    import torch.distributed as dist

    x, label, target, mask = _masked_data()
    rows = torch.arange(N).chunk(world)[rank]
    ddp = nn.parallel.DistributedDataParallel(_masked_net())
    loss = _masked_loss(kind, ddp, x[rows], label[rows], target[rows], mask[rows])
    loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)  # each process holds its share: their mean is the global loss (sync_dist's value)
    return {"loss": float(mean) / world, "grads": [p.grad.flatten().tolist() for p in ddp.module.parameters()]}


@pytest.mark.parametrize("kind", ["masked_bce", "masked_focal", "masked_l1"])
def test_masked_means_on_two_processes_are_over_the_global_batchs_entries(kind, tmp_path):
    from gloo import on_two_processes

    ddp = on_two_processes(_masked_half_each, tmp_path, kind)
    x, label, target, mask = _masked_data()
    net = _masked_net()
    one = _masked_loss(kind, net, x, label, target, mask)
    one.backward()
    assert ddp["loss"] == pytest.approx(float(one), rel=1e-6)
    for got, p in zip(ddp["grads"], net.parameters()):
        assert torch.allclose(torch.tensor(got), p.grad.flatten(), rtol=1e-5, atol=1e-7)
    # dividing by each process's own count (before issue 27's fix) gives another loss: the data make it differ
    halves = [_masked_loss(kind, _masked_net(), x[r], label[r], target[r], mask[r]) for r in torch.arange(N).chunk(2)]
    assert abs(float(sum(halves)) / 2 - float(one)) > 1e-3
