"""The networks of RGT (paper 000): a ViT with one class token per disease, the radiomics Transformer,
and the CrossViT-style fusion of the two branches' class tokens. Blocks come from timm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer_hybrid import ConvStem
from timm.models.vision_transformer import Block
from torch import nn


class MultiTokenViT(nn.Module):
    """ViT whose first K tokens are class tokens, one per disease (as the public RGT weights).

    ``forward`` returns all tokens and the last layer's attention of the class tokens to the patches,
    averaged over heads: [B, K, grid_h, grid_w] (what BYOA and the heatmaps use).
    ``stem``: "patch" (ViT's one-shot patchify) or "conv" (timm's ConvStem, same token grid).
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=1, num_classes_tokens=8, dim=192, depth=6, heads=3,
                 mlp_ratio=4.0, drop_path=0.0, stem="patch"):
        super().__init__()
        self.k = num_classes_tokens
        if stem == "patch":
            self.patch = PatchEmbed(img_size, patch_size, in_chans, dim, flatten=False, output_fmt="NHWC",
                                    strict_img_size=False)
        elif stem == "conv":
            n = int(round(math.log2(patch_size)))
            if 2 ** n != patch_size:
                raise ValueError(f"stem='conv' needs a power-of-two patch_size, got {patch_size}")
            self.patch = nn.Sequential(ConvStem(in_chans, n, dim, 3, (2,) * n), _ToNHWC())
        else:
            raise ValueError(f"stem must be 'patch' or 'conv', got {stem!r}")
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.cls = nn.Parameter(torch.zeros(1, self.k, dim))
        self.pos = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias=True,
                                           drop_path=drop_path * i / max(depth - 1, 1)) for i in range(depth)])
        self.norm = nn.LayerNorm(dim)
        trunc_normal_(self.cls, std=0.02)
        trunc_normal_(self.pos, std=0.02)

    def _pos(self, h: int, w: int) -> torch.Tensor:
        if (h, w) == tuple(self.grid):
            return self.pos
        pos = self.pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        return F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(1, 2)

    @staticmethod
    def _cls_attention(block: Block, x: torch.Tensor, k: int) -> torch.Tensor:
        """Softmax attention of the first k tokens over the patch tokens in ``block``, head-averaged."""
        attn = block.attn
        b, n, c = x.shape
        qkv = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, kk = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        a = (q[:, :, :k] * attn.scale) @ kk.transpose(-2, -1)  # [B, heads, k, n]
        return a.softmax(-1)[..., k:].mean(1)  # [B, k, patches]

    def forward(self, images: torch.Tensor):
        x = self.patch(images)  # [B, gh, gw, D] (dynamic size)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d) + self._pos(gh, gw)
        x = torch.cat([self.cls.expand(b, -1, -1), x], 1)
        for blk in self.blocks[:-1]:
            x = blk(x)
        att = self._cls_attention(self.blocks[-1], x, self.k).reshape(b, self.k, gh, gw)
        x = self.norm(self.blocks[-1](x))
        return x, att


class _ToNHWC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class RadiomicsEncoder(nn.Module):
    """The 107 radiomic features as tokens, a class token in front, no positional encoding (RGT §III-A:
    "there does not exist any positional relationship between individual radiomic features"), a
    2-layer Transformer.

    How a feature becomes a token the paper does not say. ``tokens='per_feature'`` (the default):
    feature i's token is x_i·w_i + b_i with its own w_i, b_i ∈ R^d (FT-Transformer's numerical
    tokenizer, Gorishniy et al. 2021), so a token says which feature it is without any order among
    them. ``tokens='shared'``: one Linear(1, d) for every feature, as cxrbench had it: every token is
    then a function of its value alone and, with no positional encoding, the Transformer sees the
    multiset of the 107 standardised values, not which feature took which (measured in
    ``results/rgt_oracle_boxes.md``: with the true boxes it learns nothing)."""

    TOKENS = ("per_feature", "shared")

    def __init__(self, dim=192, depth=2, heads=3, n_features=107, tokens: str = "per_feature"):
        super().__init__()
        if tokens not in self.TOKENS:
            raise ValueError(f"radiomics tokens must be one of {self.TOKENS}, got {tokens!r}")
        self.tokens = tokens
        if tokens == "shared":
            self.embed = nn.Linear(1, dim)
        else:  # nn.Linear(1, d)'s initialisation (fan-in 1: U(-1, 1)), one per feature
            self.weight = nn.Parameter(torch.empty(n_features, dim).uniform_(-1, 1))
            self.bias = nn.Parameter(torch.empty(n_features, dim).uniform_(-1, 1))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, 4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.n_features = n_features
        trunc_normal_(self.cls, std=0.02)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[N, 107] standardised features -> tokens [N, 1 + 107, d] (class token first)."""
        x = features[..., None]
        tok = self.embed(x) if self.tokens == "shared" else x * self.weight + self.bias
        return self.norm(self.blocks(torch.cat([self.cls.expand(len(tok), -1, -1), tok], 1)))


class CrossAttention(nn.Module):
    """CrossViT's fusion: a class token queries [itself; the other branch's tokens]; residual."""

    def __init__(self, dim=192, heads=3):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, cls: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """cls [N, 1, d], other [N, M, d] -> [N, 1, d]."""
        kv = self.norm_kv(torch.cat([cls, other], 1))
        return cls + self.attn(self.norm_q(cls), kv, kv, need_weights=False)[0]


class ClassHeads(nn.Module):
    """One linear unit per class on that class's token: [B, K, d] -> [B, K]."""

    def __init__(self, k: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, dim))
        self.bias = nn.Parameter(torch.zeros(k))
        trunc_normal_(self.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens * self.weight).sum(-1) + self.bias


def projection(dim: int, out: int = 128) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out))
