"""CNN backbones through timm, as feature extractors returning the last feature map."""

from __future__ import annotations

import timm
import torch
from torch import nn


class Backbone(nn.Module):
    """``timm.create_model(name, features_only=True)``'s last stage (or ``stage``): [B, C, h, w].

    ``stage`` picks an earlier feature stage (-2: stride 16 instead of 32, …) where a finer map matters
    more than depth, e.g. heatmaps on small CPU-sized images; the stages after it are not built.

    Trained from scratch by default (no weights can be downloaded here, and AMM trains from scratch).
    ``pretrained=True`` loads timm's ImageNet weights where the machine can reach them, or set
    ``checkpoint_path`` to a local timm checkpoint; with ``in_chans=1`` timm sums the RGB filters.
    """

    def __init__(self, name: str = "densenet121", in_chans: int = 1, pretrained: bool = False,
                 checkpoint_path: str | None = None, stage: int = -1):
        super().__init__()
        if stage >= 0:
            raise ValueError(f"stage counts from the last feature stage: -1, -2, …; got {stage}")
        kwargs = {"pretrained_cfg_overlay": {"file": checkpoint_path}} if checkpoint_path else {}
        self.net = timm.create_model(name, pretrained=pretrained or bool(checkpoint_path), features_only=True,
                                     out_indices=(stage,), in_chans=in_chans, **kwargs)
        self.out_channels = self.net.feature_info.channels()[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]
