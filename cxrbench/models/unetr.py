"""UNETR (Hatamizadeh et al., MONAI's implementation) whose encoder is a registry ViT (SS-CXR §4.3).

MONAI's ``UNETR`` builds its own ViT (``monai.networks.nets.ViT``). ``build_unetr`` builds one of the
same shape as the registry ``ViTEncoder`` (timm) and copies every encoder tensor into it:

| timm (``ViTEncoder.vit``) | MONAI (``UNETR.vit``) |
|---|---|
| ``patch_embed.proj`` | ``patch_embedding.patch_embeddings`` |
| ``pos_embed[:, 1:]`` | ``patch_embedding.position_embeddings`` |
| ``cls_token``, ``pos_embed[:, :1]`` | ``cls_token``, ``cls_pos`` (``ClassTokenViT``, below) |
| ``blocks.i.norm1`` / ``norm2`` / ``attn.qkv`` | same names (identical qkv layout) |
| ``blocks.i.attn.proj`` | ``blocks.i.attn.out_proj`` |
| ``blocks.i.mlp.fc1`` / ``fc2`` | ``blocks.i.mlp.linear1`` / ``linear2`` |
| ``norm`` | ``norm`` |

Every LayerNorm is set to timm's eps 1e-6 (MONAI's default is 1e-5: with it the hidden states differ
by ~5e-5). The class token: MONAI's UNETR runs its ViT without one. We keep it (``ClassTokenViT``
prepends ``cls_token + cls_pos`` and strips it from the hidden states the decoder reads), because
then the network UNETR fine-tunes *is* the pretrained one: all 150 tensors of a ViT-S land, and the
hidden states agree with timm's to ~1e-6 (tested). Dropping it instead (149 tensors, the class token
and its position left behind) changes every patch token by ~0.35% even at random weights, since the
pretrained attention always had that token to attend to. The only MONAI tensors not filled are the
unused ``blocks.i.norm_cross_attn`` (no cross-attention in UNETR's blocks), listed in ``UNUSED``.

MONAI's UNETR is fixed at 12 blocks (it reads blocks 4, 7, 10 — 1-based — and the final normed
output; the UNETR paper says z3/z6/z9/z12) and at patch size 16: a ViT of another depth or patch
size is refused with its numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from .encoders import Encoder

UNETR_DEPTH, UNETR_PATCH = 12, 16
UNUSED = ("norm_cross_attn",)


class ClassTokenViT(nn.Module):
    """MONAI's ViT with timm's class token: ``forward`` → (final normed patch tokens, hidden states of
    every block without the class token), the interface UNETR expects from ``UNETR.vit``."""

    def __init__(self, vit: nn.Module, dim: int):
        super().__init__()
        self.patch_embedding, self.blocks, self.norm = vit.patch_embedding, vit.blocks, vit.norm
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.patch_embedding(x)  # patch tokens + their position embedding
        x = torch.cat([(self.cls_token + self.cls_pos).expand(len(x), -1, -1), x], 1)
        hidden = []
        for blk in self.blocks:
            x = blk(x)
            hidden.append(x[:, 1:])
        return self.norm(x)[:, 1:], hidden


def timm_to_monai(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ``VisionTransformer`` state dict (keys as in ``ViTEncoder.vit``) renamed for ``ClassTokenViT``."""
    out = {}
    for key, value in state.items():
        if key == "cls_token":
            out["cls_token"] = value
        elif key == "pos_embed":
            out["cls_pos"], out["patch_embedding.position_embeddings"] = value[:, :1], value[:, 1:]
        elif key.startswith("patch_embed.proj."):
            out[key.replace("patch_embed.proj.", "patch_embedding.patch_embeddings.")] = value
        elif key.startswith("blocks."):
            out[key.replace(".attn.proj.", ".attn.out_proj.").replace(".mlp.fc1.", ".mlp.linear1.")
                .replace(".mlp.fc2.", ".mlp.linear2.")] = value
        elif key.startswith("norm."):
            out[key] = value
        else:
            raise KeyError(f"timm ViT tensor {key!r} has no place in MONAI's UNETR encoder")
    return out


def build_unetr(encoder: Encoder, out_channels: int = 1, feature_size: int = 16, norm_name: str = "instance",
                dropout_rate: float = 0.0) -> nn.Module:
    """MONAI ``UNETR`` (2D) with ``encoder``'s weights in its ViT (every tensor, checked)."""
    from monai.networks.nets import UNETR

    if encoder.kind != "vit":
        raise ValueError(f"UNETR needs a ViT encoder; {encoder.encoder_name!r} is a {encoder.kind} encoder "
                         "(use the U-Net segmenter, method 'unet', for a CNN)")
    vit = encoder.vit
    depth, patch = len(vit.blocks), encoder.patch_size
    if depth != UNETR_DEPTH or patch != UNETR_PATCH:
        raise ValueError(f"MONAI's UNETR reads blocks 4/7/10/12 of a ViT with patch size 16; this encoder has "
                         f"{depth} blocks and patch size {patch} (encoder_kwargs {encoder.encoder_kwargs})")
    if vit.patch_embed.proj.in_channels != 1:
        raise ValueError(f"UNETR here takes 1-channel radiographs; the encoder has {vit.patch_embed.proj.in_channels}")
    dim, heads = vit.embed_dim, vit.blocks[0].attn.num_heads
    size = encoder.img_size
    net = UNETR(in_channels=1, out_channels=out_channels, img_size=(size, size), feature_size=feature_size,
                hidden_size=dim, mlp_dim=vit.blocks[0].mlp.fc1.out_features, num_heads=heads,
                norm_name=norm_name, dropout_rate=dropout_rate, spatial_dims=2,
                qkv_bias=vit.blocks[0].attn.qkv.bias is not None)
    net.vit = ClassTokenViT(net.vit, dim)
    for m in net.vit.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = 1e-6  # timm's; MONAI's default 1e-5
    load_vit_weights(net, vit.state_dict())
    # MONAI builds a cross-attention norm in every block that UNETR never calls: frozen, DDP does not wait
    # for their gradients (without it, a multi-GPU UNETR stops at its second step), the state dict keeps them
    for name, module in net.vit.named_modules():
        if name.split(".")[-1] in UNUSED:
            module.requires_grad_(False)
    return net


def load_vit_weights(net: nn.Module, timm_state: dict[str, torch.Tensor]) -> list[str]:
    """Copy a timm ViT's state into ``net.vit``; every timm tensor must land, every MONAI tensor but the
    unused cross-attention norms must be filled. Returns the MONAI keys filled."""
    mapped = timm_to_monai(timm_state)
    target = net.vit.state_dict()
    bad = {k: (tuple(v.shape), tuple(target[k].shape)) for k, v in mapped.items() if k in target and v.shape != target[k].shape}
    missing = [k for k in target if k not in mapped and not any(u in k for u in UNUSED)]
    unexpected = [k for k in mapped if k not in target]
    if bad or missing or unexpected:
        raise ValueError(f"timm -> MONAI UNETR mapping failed: shape mismatches {bad}, MONAI tensors left at "
                         f"random init {missing[:5]}, timm tensors without a place {unexpected[:5]}")
    net.vit.load_state_dict(mapped, strict=False)
    return sorted(mapped)
