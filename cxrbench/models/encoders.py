"""Encoders shared across methods, by name in one registry: what a pretraining produces and a probe,
a fine-tune or a segmenter consumes.

Every encoder gives ``forward(x) -> [B, out_dim]`` pooled features (what a linear probe reads) and
``features(x) -> [maps…]`` multi-scale features, finest first, with ``feature_channels`` and
``feature_strides`` (what a U-Net decoder or UNETR reads). ``build_encoder(name, **kwargs)`` records
its name and arguments on the module, so an encoder artifact (``cxrbench.artifacts``) rebuilds it
in a fresh process without the class of the method that trained it.

| name | what | pooled | features (stride) |
|---|---|---|---|
| ``unet`` | the 5-level U-Net encoder of CAMContrast (and of the U-Net of SIIM fine-tuning) | GAP of level 5 | levels 1–5 (1, 2, 4, 8, 16) |
| ``vit_small_patch16`` | timm ViT-S/16 (SS-CXR / GMML) | class token after the final norm | hidden states (16) |
| any timm CNN (``resnet18``, ``densenet121``, …) | ``timm.create_model(features_only=True)`` | GAP of the last stage | every stage |
"""

from __future__ import annotations

import logging
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

ENCODERS: dict[str, Callable[..., "Encoder"]] = {}
log = logging.getLogger("cxrbench.encoders")


def register_encoder(name: str):
    def add(factory):
        ENCODERS[name] = factory
        return factory
    return add


class Encoder(nn.Module):
    """Base: ``out_dim``, ``feature_channels``, ``feature_strides``; ``forward`` pools, ``features`` maps."""

    out_dim: int
    feature_channels: tuple[int, ...]
    feature_strides: tuple[int, ...]
    kind = "cnn"  # "cnn" (maps at several strides) or "vit" (token grids at one stride)
    #: constructor arguments a consumer may change when it loads an artifact (``adapt_state_dict``
    #: makes the stored weights fit); any other difference is another architecture and is refused.
    adaptable_kwargs: tuple[str, ...] = ()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1].mean((2, 3))

    def adapt_state_dict(self, state: dict, source_kwargs: dict) -> dict:
        """The stored ``state`` of an encoder built with ``source_kwargs``, made to fit this one."""
        return state

    def spec(self) -> dict:
        """What rebuilds this encoder: {'name', 'kwargs'} (set by ``build_encoder``)."""
        return {"name": self.encoder_name, "kwargs": dict(self.encoder_kwargs)}


def build_encoder(name: str, **kwargs) -> Encoder:
    """An encoder by registry name (or any timm CNN name), trained from scratch (no downloads here)."""
    if name in ENCODERS:
        enc = ENCODERS[name](**kwargs)
    elif timm.is_model(name):
        enc = TimmCNN(name, **kwargs)
    else:
        raise ValueError(f"unknown encoder {name!r}: registered {sorted(ENCODERS)}, or a timm CNN name "
                         "(e.g. resnet18, densenet121)")
    enc.encoder_name, enc.encoder_kwargs = name, dict(kwargs)
    return enc


# ---------------------------------------------------------------------------------------- U-Net
def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """[conv3×3 → BN → ReLU] × 2 (U-Net, Ronneberger et al.; padding keeps the size). The convolutions
    keep their bias, as CAMContrast's U-Net and MONAI's BasicUNet do (18.85 M parameters at width 64)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@register_encoder("unet")
class UNetEncoder(Encoder):
    """The U-Net contracting path: 5 levels of double convolutions, 2×2 max-pool between them.

    ``width=64`` (64, 128, 256, 512, 1024) is CAMContrast's (18.85 M parameters, as MONAI's BasicUNet encoder);
    smaller widths (``width=8`` → 8 … 128) keep CPU tests and smoke runs small. Written by hand: timm
    has no U-Net, and MONAI's BasicUNet has the same encoder but not as a separable module.
    """

    def __init__(self, in_chans: int = 1, width: int = 64, depth: int = 5):
        super().__init__()
        widths = [width * 2 ** i for i in range(depth)]
        self.levels = nn.ModuleList([double_conv(in_chans, widths[0])] +
                                    [double_conv(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.out_dim = widths[-1]
        self.feature_channels = tuple(widths)
        self.feature_strides = tuple(2 ** i for i in range(depth))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, level in enumerate(self.levels):
            x = level(x if i == 0 else F.max_pool2d(x, 2))
            out.append(x)
        return out


# ---------------------------------------------------------------------------------------- timm CNNs
class TimmCNN(Encoder):
    """A timm CNN's feature stages (``features_only``): every registry-less CNN of cxrbench (AMM's and
    GAP's backbones, the thorax-box regressor, the probes' timm encoders).

    ``stage`` < -1 stops at an earlier stage (-2: stride 16 instead of 32, …) where a finer map matters
    more than depth, e.g. heatmaps on small CPU-sized images; the stages after it are not built.
    Trained from scratch by default (no weights can be downloaded here, and AMM trains from scratch).
    ``pretrained=True`` loads timm's ImageNet weights where the machine can reach them, or set
    ``checkpoint_path`` to a local timm checkpoint; with ``in_chans=1`` timm sums the RGB filters.
    """

    def __init__(self, name: str, in_chans: int = 1, stage: int = -1, pretrained: bool = False,
                 checkpoint_path: str | None = None):
        super().__init__()
        with torch.device("meta"):  # the stage count only: no memory, and no draw from the RNG the weights use
            info = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans).feature_info
        n = len(info.channels())
        if not -n <= stage <= -1:
            raise ValueError(f"stage counts from the last of {n} feature stages of {name}: -1 … -{n}; got {stage}")
        keep = tuple(range(n + stage + 1))
        kwargs = {"pretrained_cfg_overlay": {"file": checkpoint_path}} if checkpoint_path else {}
        self.net = timm.create_model(name, pretrained=pretrained or bool(checkpoint_path), features_only=True,
                                     in_chans=in_chans, out_indices=keep, **kwargs)
        self.feature_channels = tuple(self.net.feature_info.channels())
        self.feature_strides = tuple(self.net.feature_info.reduction())
        self.out_dim = self.feature_channels[-1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last kept stage's map [B, C, h, w] (AMM's F, a CAM's features)."""
        return self.net(x)[-1]


# ---------------------------------------------------------------------------------------- ViT
@register_encoder("vit_small_patch16")
class ViTEncoder(Encoder):
    """timm's ViT-S/16 (384-d, 12 blocks, 6 heads) with a class token, 1 input channel.

    ``forward``: the class token after the final LayerNorm (SS-CXR's fine-tuning reads it).
    ``features``: the patch tokens of every block as maps [B, D, H/16, W/16] (the last one after the
    final norm), for a UNETR-style decoder. ``tokens``: every block's output, class token included.
    """

    kind = "vit"
    adaptable_kwargs = ("img_size", "drop_path_rate")  # neither changes a weight's shape

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 1, embed_dim: int = 384,
                 depth: int = 12, num_heads: int = 6, drop_path_rate: float = 0.0):
        super().__init__()
        self.vit = timm.models.vision_transformer.VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, num_classes=0, drop_path_rate=drop_path_rate, dynamic_img_size=True)
        self.img_size, self.patch_size, self.out_dim = img_size, patch_size, embed_dim
        self.feature_channels = (embed_dim,) * depth
        self.feature_strides = (patch_size,) * depth

    def adapt_state_dict(self, state: dict, source_kwargs: dict) -> dict:
        """Weights of a ViT trained at another input size: the position embedding (class position
        kept) resampled to this grid with timm's ``resample_abs_pos_embed`` (bicubic), and logged."""
        key = "vit.pos_embed"
        target = self.vit.pos_embed.shape
        if key not in state or state[key].shape == target:
            return state
        from timm.layers import resample_abs_pos_embed

        old = int(source_kwargs.get("img_size", 224)) // self.patch_size
        new = self.img_size // self.patch_size
        state = dict(state)
        state[key] = resample_abs_pos_embed(state[key], new_size=[new, new], old_size=[old, old], num_prefix_tokens=1)
        log.warning("position embedding resampled from a %dx%d to a %dx%d patch grid (input %s -> %d px, bicubic)",
                    old, old, new, new, source_kwargs.get("img_size", 224), self.img_size)
        return state

    def tokens(self, x: torch.Tensor, norm_last: bool = True) -> list[torch.Tensor]:
        """Hidden states [B, 1 + N, D] after each block; the last one after the final norm (unless
        ``norm_last`` is False: GMML's public decoder averages raw block outputs, then norms)."""
        v = self.vit
        t = v.norm_pre(v._pos_embed(v.patch_embed(x)))
        out = []
        for blk in v.blocks:
            t = blk(t)
            out.append(t)
        if norm_last:
            out[-1] = v.norm(out[-1])
        return out

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return [t[:, 1:].transpose(1, 2).reshape(len(x), -1, h, w) for t in self.tokens(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)
