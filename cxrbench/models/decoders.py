"""Decoders that turn an encoder's multi-scale features into a mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import Encoder, double_conv


class UNetDecoder(nn.Module):
    """The U-Net expanding path over any CNN encoder of the registry.

    From the deepest map up: a transposed convolution (kernel = stride = the stride ratio) to the
    skip's channels, concatenation with the skip, a double convolution. On the 5-level U-Net encoder
    this is Ronneberger et al.'s U-Net (CAMContrast's SIIM network); on a timm CNN whose finest map
    has stride > 1, the last map is upsampled bilinearly to the input before the 1×1 output conv.
    """

    def __init__(self, channels: tuple[int, ...], strides: tuple[int, ...], out_channels: int = 1):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"a U-Net decoder needs at least two feature levels, got channels {channels}")
        self.ups, self.convs = nn.ModuleList(), nn.ModuleList()
        c_in = channels[-1]
        for i in range(len(channels) - 1, 0, -1):
            ratio = strides[i] // strides[i - 1]
            c_skip = channels[i - 1]
            self.ups.append(nn.ConvTranspose2d(c_in, c_skip, ratio, stride=ratio) if ratio > 1 else nn.Conv2d(c_in, c_skip, 1))
            self.convs.append(double_conv(2 * c_skip, c_skip))
            c_in = c_skip
        self.head = nn.Conv2d(c_in, out_channels, 1)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = feats[-1]
        for up, conv, skip in zip(self.ups, self.convs, reversed(feats[:-1])):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: pooling floored, the transposed conv cannot undo it
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = conv(torch.cat([skip, x], 1))
        if x.shape[-2:] != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return self.head(x)


class UNet(nn.Module):
    """A registry encoder + the U-Net decoder: mask logits [B, out_channels, H, W] at the input size."""

    def __init__(self, encoder: Encoder, out_channels: int = 1):
        super().__init__()
        if encoder.kind != "cnn":
            raise ValueError(f"a U-Net decoder needs a CNN encoder with maps at several strides; "
                             f"{encoder.encoder_name!r} is a {encoder.kind} encoder (use UNETR for a ViT)")
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder.feature_channels, encoder.feature_strides, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.features(x), x.shape[-2:])
