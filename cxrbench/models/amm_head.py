"""The Attention Mapping Mechanism of Cardio-XAttentionNet (paper 003, Table 3, Eq. 8–9).

    F (backbone) -> BN -> 1x1 conv 128 ELU -> 1x1 conv 32 ELU -> 1x1 conv 16 ELU
      -> 2x2 average pool, stride 1, 'same' -> 1x1 conv -> sigmoid = W      (one map per class)
    W -> fixed, non-trainable 1x1 conv of ones: W broadcast to the C channels of F
    A = BN(F) ⊙ W;  GWAP = ΣA / ΣW  (per channel)
    -> dropout -> dense 128 ELU -> dropout -> dense 1 (the logit; sigmoid in the loss)

With ``num_classes > 1`` (our nih8 variant, not in the paper) the attention model ends in one W per
class; each class pools its own GWAP vector through the shared 128-unit dense layer and has its own
output unit. The paper does not give dropout rates; 0.5 and 0.25 are the rates of the Keras GAP-
attention head this design comes from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import nn


class SameAvgPool2x2(nn.Module):
    """Keras AveragePooling2D(2, strides=1, padding='same'): pads right/bottom, averages valid cells only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = Fn.pad(x, (0, 1, 0, 1))
        ones = Fn.pad(torch.ones_like(x[:, :1]), (0, 1, 0, 1))
        return Fn.avg_pool2d(padded, 2, stride=1) / Fn.avg_pool2d(ones, 2, stride=1)


class AMMHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int = 1, hidden: int = 128,
                 dropout: tuple[float, float] = (0.5, 0.25)):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(in_channels)
        self.attention = nn.Sequential(
            nn.Conv2d(in_channels, 128, 1), nn.ELU(),
            nn.Conv2d(128, 32, 1), nn.ELU(),
            nn.Conv2d(32, 16, 1), nn.ELU(),
            SameAvgPool2x2(),
            nn.Conv2d(16, num_classes, 1), nn.Sigmoid(),
        )
        # Conv5 of Table 3: a hard-coded 1x1 convolution of ones that copies W onto every channel.
        self.broadcast = nn.Conv2d(1, in_channels, 1, bias=False)
        nn.init.ones_(self.broadcast.weight)
        self.broadcast.weight.requires_grad_(False)
        self.classifier = nn.Sequential(nn.Dropout(dropout[0]), nn.Linear(in_channels, hidden), nn.ELU(),
                                        nn.Dropout(dropout[1]))
        self.out = nn.Parameter(torch.empty(num_classes, hidden))
        self.out_bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.xavier_uniform_(self.out)

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """W: [B, K, h, w] in (0, 1)."""
        return self.attention(self.bn(features))

    def gwap(self, features: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[B, K, C]: ΣA/ΣW per class and channel, with A = BN(F) ⊙ broadcast(W_k)."""
        f = self.bn(features)
        b, k, h, wd = w.shape
        wc = self.broadcast(w.reshape(b * k, 1, h, wd)).reshape(b, k, -1, h, wd)  # [B, K, C, h, w]
        a = f[:, None] * wc
        return a.sum((-1, -2)) / wc.sum((-1, -2)).clamp_min(1e-6)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, K], W [B, K, h, w])."""
        w = self.weights(features)
        pooled = self.gwap(features, w)
        hidden = self.classifier(pooled)  # [B, K, hidden]
        return (hidden * self.out).sum(-1) + self.out_bias, w


class GAPHead(nn.Module):
    """The paper's baseline: the same classifier on global average pooled features."""

    def __init__(self, in_channels: int, num_classes: int = 1, hidden: int = 128,
                 dropout: tuple[float, float] = (0.5, 0.25)):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout[0]),
                                 nn.Linear(in_channels, hidden), nn.ELU(), nn.Dropout(dropout[1]),
                                 nn.Linear(hidden, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
