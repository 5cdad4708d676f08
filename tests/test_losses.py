"""The shared losses against an independent reference (pytorch-metric-learning, MONAI's maths by hand)."""

from __future__ import annotations

import math

import pytest
import torch

from cxrbench.losses import dice_loss, masked_bce, nt_xent, supcon


def test_nt_xent_matches_pytorch_metric_learning_with_both_views_as_negatives():
    from pytorch_metric_learning.losses import NTXentLoss

    torch.manual_seed(0)
    a, b = torch.randn(6, 16), torch.randn(6, 16)
    labels = torch.arange(6).repeat(2)  # row i of each view is the same image
    ref = NTXentLoss(temperature=0.1)(torch.cat([a, b]), labels)
    assert nt_xent(a, b, 0.1).item() == pytest.approx(ref.item(), rel=1e-5)
    # aligned views (b = a) and well-separated images give a lower loss than random pairs
    assert nt_xent(a, a + 0.01 * torch.randn_like(a), 0.1) < ref


def test_supcon_matches_pytorch_metric_learning_and_reduces_to_nt_xent():
    from pytorch_metric_learning.losses import SupConLoss

    torch.manual_seed(1)
    views = torch.randn(8, 2, 16)
    labels = torch.tensor([0, 1, 0, 1, 1, 2, 0, 2])
    ref = SupConLoss(temperature=0.07)(views.reshape(16, 16), labels.repeat_interleave(2))
    assert supcon(views, labels, 0.07).item() == pytest.approx(ref.item(), rel=1e-5)
    # every image its own class: the positives are the other view only -> NT-Xent
    distinct = torch.arange(8)
    assert supcon(views, distinct, 0.1).item() == pytest.approx(nt_xent(views[:, 0], views[:, 1], 0.1).item(), rel=1e-5)


def test_masked_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, -1.0, 5.0]])
    label = torch.tensor([[1.0, float("nan"), 0.0]])
    by_hand = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(5.0))) / 2
    assert masked_bce(logits, label).item() == pytest.approx(by_hand, rel=1e-6)


def test_dice_loss_is_pooled_over_the_batch_with_smooth_one():
    logits = torch.tensor([[[[10.0, -10.0], [-10.0, -10.0]]], [[[-10.0, -10.0], [-10.0, -10.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    p = logits.sigmoid()
    by_hand = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert dice_loss(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-5)
