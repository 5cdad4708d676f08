"""SS-CXR: GMML pretraining of a ViT-S/16 on chest X-rays, and UNETR lung segmentation on it.

Paper: ../shared/papers/002_f3d923a169fdbc8e.txt (Anwar et al., "SS-CXR: Multitask Representation
Learning using Self Supervised Pre-training from Chest X-Rays"). Followed: §3.1 (GMML: corrupt a
large part of the image, reconstruct it through the ViT and a light decoder, Eq. 1–2: L1 on the
corrupted pixels only, Algorithm 1; the decoder is dropped after pretraining), §3.2 (downstream:
class token → Linear for classification — ``FineTune``; the pretrained ViT as UNETR's encoder for
segmentation — ``UNETRSegmenter`` here), §4.1 (COVIDx CXR-3 without labels; COHEN and ACTMED and
the test images never used for pretraining or fine-tuning), §4.2 (fine-tuning: 256², AdamW lr
5e-4, weight decay 0.05, 100 epochs — ``benchmarks/sscxr/configs/finetune_covidx.yaml``), §4.3 (UNETR,
256², AdamW lr 5e-4, weight decay 1e-5, 400 epochs, train Shenzhen (+ Belarus), test Montgomery —
``benchmarks/sscxr/configs/unetr_lungs.yaml``). Public code: Sara-Ahmed/GMML (``datasets_utils.py``:
``GMML_drop_rand_patches`` / ``GMML_replace_list``; ``vision_transformer.py``: ``RECHead``;
``main.py``); facts in ../shared/notes/method-facts.md.

Paper vs public code, and what we chose:
- Corruption budgets: the paper's "70%" (noise) and "35%" (another X-ray) are areas. Public code:
  noise until the union of rectangles reaches U[0.5, p]·H·W pixels, p = 0.7 in the function's
  default (``main.py``'s own default ``--drop_perc`` is 0.75 and ``--drop_replace`` 0.3 at the
  commit we read); replacement budget U[min(0.5, 0.35), 0.35] = exactly 0.35. Ours: U[0.5, 0.7] for
  the noise (the public function's default range, whose top is the paper's 70%: the paper gives one
  number, the range is the code's) and 0.35 for the replacement (the paper's 35%, which the code's rule
  also gives) (``noise_budget``, ``replace_budget``).
- Which images get the replacement: not in the paper; public code: each image with probability
  1 / (number of drop types + 1) = 0.5, and then its noise version is discarded and the *clean*
  image gets same-position blocks of a random image of the batch. Ours: the same, probability
  ``replace_prob`` = 0.5. Deviation: the public code draws the donor among all B images, itself
  included (probability 1/B: its pixels stay unchanged yet count as corrupted, a free reconstruction);
  we draw among the other B − 1 (a batch of one image gets noise).
- Rectangles as in the public code with ``align`` = 1 (its ``--drop_align`` default): top-left
  corner uniform, each side uniform in [1, ⌊0.3·side⌋] pixels, clipped at the border, added until the
  union covers the budget — so the union overshoots it by less than one rectangle. Mask = 1 on every
  replaced pixel.
- Noise: the public code fills N(0, 1) in its ImageNet-normalised input space. Our images stay in
  [0, 1] (the DataModules' contract, and what the fine-tuned ViT sees downstream), so the fill is
  μ + σ·N(0, 1) with μ, σ the batch's pixel mean and std — the same noise relative to the image
  statistics. The L1 in [0, 1] space is the normalised-space L1 divided by σ: a constant factor.
- Randomness: the public code reseeds numpy from the OS inside the corruption (not reproducible).
  Ours draws from a seeded ``torch.Generator`` (``seed``, default: the run's seed, + the rank),
  saved in checkpoints, each process's own (a resumed rank never repeats rank 0's corruptions); validation has its own generator, reseeded every validation epoch, so every
  epoch's ``val/loss`` is measured on the same corruptions (the kept checkpoint is chosen on it).
- Decoder (``decoder``): 'paper' (default) = Linear(D, 2048) → GELU → Linear(2048, 2048) → GELU →
  Linear(2048, 256) → ConvTranspose2d(256, 1, kernel = stride = patch), on the encoder's output
  (the last block after the final LayerNorm), class token dropped. The paper gives the GELU to "the
  first two" layers only: the 256 bottleneck has none. 'public' = [Linear(D, D) → GELU] × 3 →
  ConvTranspose2d(D, 1, kernel = stride = patch) on the final LayerNorm of the mean of the outputs of
  blocks 6, 8, 10, 12 (for another depth d: the same fractions of d, round(d·k/12)). ``decoder_dims``
  narrows the paper decoder for CPU smoke runs only (its 2048×2048 layer is ~90% of a small ViT's step);
  every paper-scale config keeps (2048, 2048, 256).
- Loss: Eq. 1 sums |x − x̄| over the corrupted pixels; the public code averages over them. We
  average (a scale; the loss no longer depends on batch or image size).
- Augmentation: Algorithm 1's ``augment(X)`` is not specified. The public code takes two
  RandomResizedCrops (scale 0.05–1 without local crops) with flips, light colour jitter and blur, the
  second crop "just to match the number of updates" (its comment). Ours: one view, the ``gmml``
  preset (resize + horizontal flip): a 5%-area crop of a radiograph is hardly a radiograph, and colour
  jitter means little on one channel. Deviation.
- Optimisation (not in the paper): the public code's AdamW, lr 5e-4·batch/256 with 10 warm-up epochs
  then cosine to 1e-6, weight decay cosine 0.04 → 0.4 with no decay on biases and 1-D parameters
  (implemented here: ``weight_decay``, ``weight_decay_end``, ``min_lr``), drop path 0.1 (encoder
  kwarg), batch 64. Deviations: gradient clipping is Lightning's global-norm clip at 3.0
  (``trainer.gradient_clip_val`` in the config) instead of the public per-parameter norm clip; no
  fp16 on CPU (``trainer.precision`` on a GPU); 200 epochs in the paper-scale config (the paper is
  silent; the public default of 800 epochs on its default Cars set, 8,144 images at batch 64, is
  ~100k updates, which 200 epochs of the ~28k COVIDx pretraining images at batch 64 match).
- Resolution: pretraining at 224 (the public ``--img_size``); fine-tuning and UNETR at 256 (paper).
  The consumer rebuilds the ViT at 256 and resamples the position embedding with timm's
  ``resample_abs_pos_embed`` (bicubic), logged (``cxrbench.models.encoders.ViTEncoder``).
- Data: "all the data without any ground-truth label", minus COHEN/ACTMED and the test images
  (§4.1). Ours: the COVIDx DataModule's train split; its val split (10% of train.txt, or val.txt)
  only measures the pretraining loss — 10% fewer pretraining images than the paper, for a checkpoint
  chosen on held-out images. ``check_pretraining_rows`` refuses, before the first step, a split whose
  train/val rows (or patients) are in test/shift/loc, or hold a source of ``exclude_sources``
  (the configs: cohen, actmed).
- Labels: never read by the objective; ``online_probe`` (off by default, on in the configs) trains a
  linear head on detached class-token features of the clean images as a running sign, never a result.

Fine-tuning (``FineTune`` with ``benchmarks/sscxr/configs/finetune_covidx.yaml``): class token after the final
norm → Linear, AdamW 5e-4, wd 0.05, 256², 100 epochs (§4.2). Not in the paper, and taken from DeiT's
schedule (which it says it follows): 5 warm-up epochs then cosine, drop path 0.1, batch 64; the
checkpoint with the best validation AUC; operating point 0.5. Not DeiT's augmentation: the preset is
resize + horizontal flip (``transforms: gmml``), without DeiT's RandAugment, mixup/cutmix, random
erasing or label smoothing — natural-image augmentations the paper does not name for X-rays; a
deviation from "DeiT's defaults", chosen so that the fine-tune's augmentation is the pretraining's. Binary tasks use one logit and BCE (a 2-way softmax head is the
same model up to a reparametrisation). The paper's binary "TPR" column is our TNR (``benchmarks/sscxr/references.yaml`` shows
why). From-scratch rows ("ViT-S") are the same config without an artifact.

Smoke scale only (``benchmarks/sscxr/twin.yaml``; ``smoke.yaml`` is a cut of it): two small encoders (patch 8 for the fine-tunes,
patch 16 × 12 blocks for UNETR) instead of one ViT-S, the fine-tunes' encoder pretrained with the
public decoder (at twin scale its encoders fine-tuned more reliably: 6/6 seeds beat scratch vs 5/6 with
the paper's decoder narrowed to 256/256/64, ``tests/test_gmml.py``), fewer epochs, higher GMML lr.

UNETR (``UNETRSegmenter``; MONAI's UNETR with the ViT's weights mapped in, class token kept:
``cxrbench/models/unetr.py`` says how and why): feature size 16 and instance norm (MONAI's defaults;
the paper is silent), Dice loss (silent; as the U-Net lung baseline), batch 8 (silent). The paper
trains on Shenzhen + Belarus (663 images); Belarus is not in our Lungs layout, so Shenzhen only.
MONAI's ViT blocks have no drop path, whatever the artifact's ``drop_path_rate``. An input of another
size than the UNETR's is resized to it and the logits back (evaluation at another ``eval_size``).
The "UNETR" baseline row is the same network from the same random timm initialisation.

Not reproducible here: the SS-IN rows (GMML on ImageNet-1K: no ImageNet, no downloads) and the
private pediatric test set (Tables 1–2, third column): ``benchmarks/sscxr/references.yaml``'s notes say so.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from data_modules.splits import check_pretraining_rows

from ..losses import masked_l1, own_rank_state, world_size
from ..models.unetr import build_unetr
from .registry import register
from ..optim import OPTIMIZERS, OptimizerRecipe, recipe_from_hparams
from ..artifacts import make_encoder
from .pretraining import PretrainingMethod
from .segmentation import SegmentationMethod

DECODERS = ("paper", "public")


# ---------------------------------------------------------------------------------------- corruption
def rectangle_union(h: int, w: int, budget: float, max_block: float, generator: torch.Generator,
                    chunk: int = 64) -> np.ndarray:
    """Bool mask [h, w]: random rectangles (sides 1 … ⌊max_block·side⌋, clipped at the border) added until
    their union covers ``budget`` pixels (so it overshoots by less than one rectangle)."""
    mask = np.zeros((h, w), bool)
    covered = 0
    mh, mw = max(1, int(h * max_block)), max(1, int(w * max_block))
    while covered < budget:
        r = torch.randint(0, h, (chunk,), generator=generator).numpy()
        c = torch.randint(0, w, (chunk,), generator=generator).numpy()
        rh = torch.randint(1, mh + 1, (chunk,), generator=generator).numpy()
        rw = torch.randint(1, mw + 1, (chunk,), generator=generator).numpy()
        for k in range(chunk):
            block = mask[r[k]:r[k] + rh[k], c[k]:c[k] + rw[k]]
            covered += block.size - int(block.sum())
            block[...] = True
            if covered >= budget:
                break
    return mask


@torch.no_grad()
def corrupt(images: torch.Tensor, generator: torch.Generator, noise_budget: tuple[float, float] = (0.5, 0.7),
            replace_prob: float = 0.5, replace_budget: float = 0.35, max_block: float = 0.3):
    """GMML's corruption of a batch [B, C, H, W] (C channels share the rectangles).

    Each image: with probability ``replace_prob`` (and B > 1), same-position rectangles of another image
    of the batch until they cover ``replace_budget``·H·W pixels; otherwise N(0, 1) noise in the batch's
    normalised space (μ + σ·ε) in rectangles until they cover U(``noise_budget``)·H·W pixels.
    Returns (corrupted, mask [B, 1, H, W] bool = replaced pixels, donor [B] long: the image that gave
    the blocks, −1 for noise). Every draw comes from ``generator`` (CPU): same generator state, same
    corruption.
    """
    b, c, h, w = images.shape
    lo, hi = noise_budget
    if not 0 < lo <= hi < 1 or not 0 < replace_budget < 1 or not 0 <= replace_prob <= 1:
        raise ValueError(f"budgets must be in (0, 1) and lo <= hi; got noise {noise_budget}, replace {replace_budget}, "
                         f"replace_prob {replace_prob}")
    # Every draw on the CPU, in the order it always had (the rectangles are a data-dependent loop:
    # numpy on the host is where they are cheap); the device then sees one mask, one donor index and
    # one noise tensor per batch: two host-to-device copies a batch instead of two or three per image.
    clean = images.detach()
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool)
    noise = torch.zeros(b, c, h, w)
    donor = torch.full((b,), -1, dtype=torch.long)
    kind = torch.rand(b, generator=generator) < replace_prob
    budgets = lo + (hi - lo) * torch.rand(b, generator=generator)
    for i in range(b):
        if kind[i] and b > 1:
            j = int(torch.randint(0, b - 1, (1,), generator=generator))
            donor[i] = j + (j >= i)  # another image of the batch, never itself
            mask[i, 0] = torch.from_numpy(rectangle_union(h, w, replace_budget * h * w, max_block, generator))
        else:
            m = torch.from_numpy(rectangle_union(h, w, float(budgets[i]) * h * w, max_block, generator))
            mask[i, 0] = m
            noise[i][:, m] = torch.randn(c, int(m.sum()), generator=generator)
    device = images.device
    mask_d = mask.to(device, non_blocking=True)
    noise_d = noise.to(device, clean.dtype, non_blocking=True)
    from_donor = (donor >= 0).view(b, 1, 1, 1).to(device) & mask_d
    from_noise = mask_d & ~from_donor
    mean, std = clean.float().mean(), clean.float().std().clamp_min(1e-6)
    out = torch.where(from_donor, clean[donor.clamp_min(0).to(device)], clean)
    out = torch.where(from_noise, (mean + std * noise_d).to(clean.dtype), out)
    return out, mask_d, donor


# ---------------------------------------------------------------------------------------- decoder
class GMMLDecoder(nn.Module):
    """Patch tokens [B, N, D] → image [B, C, H, W]: an MLP per token, then a transposed convolution with
    kernel = stride = patch size (SS-CXR §3.1 'paper'; GMML's ``RECHead`` 'public')."""

    def __init__(self, dim: int, patch_size: int, in_chans: int = 1, variant: str = "paper",
                 dims: tuple[int, int, int] = (2048, 2048, 256)):
        super().__init__()
        if variant not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {variant!r}")
        if variant == "paper":
            a, b, width = dims
            self.mlp = nn.Sequential(nn.Linear(dim, a), nn.GELU(), nn.Linear(a, b), nn.GELU(), nn.Linear(b, width))
        else:
            self.mlp = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(dim, dim), nn.GELU())])
            width = dim
        self.up = nn.ConvTranspose2d(width, in_chans, kernel_size=patch_size, stride=patch_size)
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # the public head's init
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = self.mlp(tokens).transpose(1, 2)
        return self.up(x.reshape(len(x), -1, *grid))


# ---------------------------------------------------------------------------------------- GMML
@register("gmml")
class GMML(PretrainingMethod):
    """Group masked model learning of a registry ViT (SS-CXR §3.1). The product is the encoder artifact;
    the decoder stays here.

    Args:
        decoder: 'paper' (2048/2048/256 + transposed conv on the last block) or 'public' (3 × D on
            the mean of blocks 6/8/10/12).
        decoder_dims: the paper decoder's widths (2048, 2048, 256); smaller only for CPU smoke runs.
        noise_budget, replace_budget, replace_prob, max_block: the corruption (``corrupt``).
        seed: of the corruption's generator (default: the run's seed); + the rank under DDP.
        weight_decay, weight_decay_end: cosine weight-decay schedule (biases and 1-D tensors: none).
        min_lr: the cosine's floor.
        exclude_sources: sources that must not be in the pretraining rows (checked at fit start).
        check_patients: also refuse a patient shared between pretraining and evaluation splits.
        the rest: ``PretrainingMethod`` (encoder, encoder_kwargs, lr, warmup_epochs, online_probe…).
    """

    def __init__(self, encoder: str = "vit_small_patch16", decoder: str = "paper",
                 decoder_dims: tuple[int, int, int] = (2048, 2048, 256),
                 noise_budget: tuple[float, float] = (0.5, 0.7), replace_budget: float = 0.35,
                 replace_prob: float = 0.5, max_block: float = 0.3, seed: int | None = None,
                 optimizer: str = "adamw", lr: float = 5e-4 * 64 / 256, weight_decay: float = 0.04,
                 weight_decay_end: float = 0.4, min_lr: float = 1e-6, warmup_epochs: float = 10.0,
                 exclude_sources: list[str] | None = None, check_patients: bool = True, **kwargs):
        super().__init__(encoder=encoder, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         warmup_epochs=warmup_epochs, **kwargs)
        if self.encoder.kind != "vit":
            raise ValueError(f"GMML reconstructs the image from a ViT's patch tokens; {encoder!r} is a "
                             f"{self.encoder.kind} encoder")
        lo, hi = noise_budget
        if not 0 < lo <= hi < 1 or not 0 < replace_budget < 1 or not 0 <= replace_prob <= 1 or not 0 < max_block <= 1:
            raise ValueError(f"GMML corruption: need 0 < noise_budget[0] <= noise_budget[1] < 1, 0 < replace_budget < 1, "
                             f"0 <= replace_prob <= 1, 0 < max_block <= 1; got {noise_budget}, {replace_budget}, "
                             f"{replace_prob}, {max_block}")
        depth = len(self.encoder.vit.blocks)
        self.recons_blocks = sorted({max(1, round(depth * k / 12)) for k in (6, 8, 10, 12)})
        self.decoder = GMMLDecoder(self.encoder.out_dim, self.encoder.patch_size,
                                   self.encoder.vit.patch_embed.proj.in_channels, decoder, tuple(decoder_dims))
        self.corruption = {"noise_budget": (float(lo), float(hi)), "replace_budget": float(replace_budget),
                           "replace_prob": float(replace_prob), "max_block": float(max_block)}
        self.gen_train: torch.Generator | None = None
        self.gen_val = torch.Generator()

    # ---------------------------------------------------------------- generators
    def _base_seed(self) -> int:
        h = self.hparams
        return int(h.seed if h.seed is not None else torch.initial_seed() % 2**31)

    def _train_generator(self) -> torch.Generator:
        if self.gen_train is None:
            rank = self.global_rank  # 0 outside a trainer
            self.gen_train = torch.Generator().manual_seed(self._base_seed() + 7919 * rank)
        return self.gen_train

    def on_fit_start(self):
        self._train_generator()

    def on_validation_epoch_start(self):
        rank = self.global_rank  # 0 outside a trainer
        self.gen_val.manual_seed(self._base_seed() + 104729 + 7919 * rank)  # same corruptions every epoch

    def on_save_checkpoint(self, checkpoint):
        """The corruption generator of every process: under DDP each process runs this hook and rank 0's
        dictionary is written, so the states are gathered into it (``ranks``, in rank order)."""
        mine = self._train_generator().get_state()
        world = world_size()
        if world == 1:
            checkpoint["gmml_generator"] = mine
            return
        import torch.distributed as dist

        everyone: list = [None] * world
        dist.all_gather_object(everyone, mine)
        checkpoint["gmml_generator"] = {"ranks": everyone}

    def on_load_checkpoint(self, checkpoint):
        """Each process restores its own generator; a checkpoint of one process (or of fewer processes)
        restores rank 0 only, the others keep their fresh, rank-seeded generator rather than draw rank 0's
        corruptions."""
        if checkpoint.get("gmml_generator") is None:
            return
        state = own_rank_state(checkpoint["gmml_generator"], "GMML corruption generators")
        if state is not None:
            self.gen_train = torch.Generator()
            self.gen_train.set_state(state)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.data is not None:
            check_pretraining_rows(self.data, self.hparams.exclude_sources or (), self.hparams.check_patients)

    # ---------------------------------------------------------------- objective
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decoder(encoder(images)) at the input's size."""
        p = self.encoder.patch_size
        h, w = images.shape[-2:]
        if h % p or w % p:
            raise ValueError(f"GMML needs an input side divisible by the patch size {p}; got {h}x{w}")
        if self.hparams.decoder == "paper":
            tokens = self.encoder.tokens(images)[-1]
        else:
            hidden = self.encoder.tokens(images, norm_last=False)
            tokens = self.encoder.vit.norm(torch.stack([hidden[k - 1] for k in self.recons_blocks]).mean(0))
        return self.decoder(tokens[:, self.encoder.vit.num_prefix_tokens:], (h // p, w // p))

    def objective(self, batch):
        clean = self.image_views(batch)[:, 0]
        gen = self._train_generator() if self.training else self.gen_val
        corrupted, mask, _ = corrupt(clean, gen, **self.corruption)
        loss = masked_l1(self.reconstruct(corrupted), clean, mask)
        return loss, {"l1_corrupted": loss.detach(), "corrupted_share": mask.float().mean()}

    # ---------------------------------------------------------------- optimisation (the public code's)
    def optimizer_recipe(self) -> OptimizerRecipe:
        h = self.hparams
        if h.optimizer != "adamw":
            return super().optimizer_recipe()
        return recipe_from_hparams(h, exempt_from_decay=(), final_ratio=min(1.0, h.min_lr / h.lr))

    def on_train_batch_start(self, batch, batch_idx):
        h = self.hparams
        if h.optimizer != "adamw" or h.weight_decay_end is None:
            return
        total = max(1, int(self.trainer.estimated_stepping_batches))
        t = min(1.0, self.global_step / total)
        wd = h.weight_decay_end + (h.weight_decay - h.weight_decay_end) * 0.5 * (1 + math.cos(math.pi * t))
        for group in self.optimizers(use_pl_optimizer=False).param_groups:
            if group.get("group") == "decay":  # cxrbench.optim names its groups
                group["weight_decay"] = wd


# ---------------------------------------------------------------------------------------- RGT
@torch.no_grad()
def load_into_multitoken_vit(target: nn.Module, encoder) -> list[str]:
    """Initialise RGT's image branch (``MultiTokenViT``, patch stem) from a registry ViT (e.g. GMML's):
    patch projection, patch position embedding, blocks and final norm copied; each of the K class
    tokens starts as the ViT's class token plus its position (MultiTokenViT gives class tokens no
    position); LayerNorm eps set to the ViT's 1e-6. Every target tensor is filled (checked); returns the
    names filled. Beyond the paper:
    ``benchmarks/rgt/byoa_gmml.py`` asks whether this makes BYOA's boxes beat random ones."""
    if encoder.kind != "vit":
        raise ValueError(f"RGT's image branch takes a ViT; {encoder.encoder_name!r} is a {encoder.kind} encoder")
    src = encoder.vit.state_dict()
    dst = target.state_dict()
    k = dst["cls"].shape[1]
    mapped = {"cls": (src["cls_token"] + src["pos_embed"][:, :1]).expand(1, k, -1),
              "pos": src["pos_embed"][:, 1:],
              "patch.proj.weight": src["patch_embed.proj.weight"], "patch.proj.bias": src["patch_embed.proj.bias"]}
    mapped.update({key: v for key, v in src.items() if key.startswith(("blocks.", "norm."))})
    missing = sorted(set(dst) - set(mapped))
    bad = {key: (tuple(v.shape), tuple(dst[key].shape) if key in dst else None) for key, v in mapped.items()
           if key not in dst or v.shape != dst[key].shape}
    if missing or bad:
        raise ValueError(f"the ViT does not fit RGT's image branch (use stem='patch' and the ViT's patch size, width, "
                         f"depth and heads): left at random init {missing[:5]}, mismatched {bad}")
    target.load_state_dict({key: v.clone() for key, v in mapped.items()})
    for m in target.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = 1e-6  # the pretrained ViT's (timm's ViT); MultiTokenViT's blocks default to 1e-5
    return sorted(mapped)


# ---------------------------------------------------------------------------------------- UNETR
@register("unetr")
class UNETRSegmenter(SegmentationMethod):
    """MONAI's UNETR on a registry ViT (SS-CXR §4.3): pretrained from an artifact, or random init.

    Args:
        encoder, encoder_kwargs: the ViT built when no artifact is given (random init); with an
            artifact, the consumer's expectations (``img_size`` may differ: resampled, logged).
        encoder_artifact: path of a ViT encoder artifact (e.g. GMML's).
        feature_size, norm_name: UNETR's decoder width and norm (MONAI defaults 16, instance).
        optimizer, lr, momentum, nesterov, weight_decay, warmup_epochs: AdamW 5e-4, wd 1e-5 (§4.3), cosine.
    """

    fp32_modules = ("net.out",)

    def __init__(self, encoder: str = "vit_small_patch16", encoder_kwargs: dict | None = None,
                 encoder_artifact: str | None = None, feature_size: int = 16, norm_name: str = "instance",
                 optimizer: str = "adamw", lr: float = 5e-4, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 1e-5, warmup_epochs: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.save_hyperparameters()
        enc = make_encoder(encoder, encoder_kwargs, encoder_artifact, type(self).__name__, expect_kind="vit")
        self.img_size = int(enc.img_size)
        self.net = build_unetr(enc, self.num_classes, feature_size, norm_name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-2:]
        if tuple(size) != (self.img_size, self.img_size):
            x = nn.functional.interpolate(images, size=(self.img_size, self.img_size), mode="bilinear",
                                          align_corners=False, antialias=True)
            return nn.functional.interpolate(self.net(x), size=tuple(size), mode="bilinear", align_corners=False)
        return self.net(images)

