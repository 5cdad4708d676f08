"""RGT: Radiomics-Guided Transformer, and its ViT baseline.

Paper: ../shared/papers/000_9b4b71fdf1ea70f1.txt (Han et al., Radiomics-Guided Global-Local
Transformer for weakly supervised pathology localization in chest X-rays).
Follows: §III-A (image branch: a ViT with one class token per disease — the text speaks of "the CLS
token"; one token per disease is what the public PS-ViT-Ti weights hold (8 class tokens), and we follow them; radiomics branch: each of the 107 features a token through Linear(1, d),
no positional encoding, a 2-layer Transformer); §III-B and Fig. 3 (BYOA: last-layer class-token
attention -> top T = 10% -> boxes of the class's mean size -> radiomics of those boxes, every step);
the cross-attention fusion of the two branches' class tokens (CrossViT, one layer; §IV-B "one more
cross-attention layer"); §III-C Eq. 2–3 (L = (1 − λ)·NT-Xent(g_i(I_cls), g_r(R_cls)) + λ·focal;
λ = 0.7, where Fig. 5B's text puts the optimum); §IV-B (6-layer image encoder, batch 128, 50 epochs,
cosine schedule with 5 warm-up epochs, weight decay 0.05, 224 input with flips, eval resize 256 /
centre crop 224 — ``benchmarks/rgt/configs/rgt_nih8.yaml``). Logits = mean of both branches' heads.

Deviations, with reasons:
- Image encoder: a plain ViT (timm blocks, patch 16, dim 192, 3 heads, 6 layers) by default, not
  PS-ViT: PS-ViT has no maintained implementation and no weights can be downloaded here.
  ``stem='conv'`` replaces the one-shot patchify by timm's ConvStem (log2(patch) stride-2 3×3
  convolutions), nearer PS-ViT, which samples its tokens from a convolutional feature map; on a
  900-image twin it lifts the image branch's AUC from 0.59 / 0.70 to 0.92 / 0.95 (tests/test_rgt.py).
- Focal loss α = 0.25, γ = 2 (RetinaNet's defaults): §III-C gives the form, not the values.
- Input: the 1-channel radiograph scaled to [0, 1] (÷255), not normalised by ImageNet's mean and
  standard deviation as §IV-B says: those statistics matter for ImageNet-pretrained weights, and none
  are used here (the encoder is trained from scratch).
- Weight decay 0.05 on weights only: norms, biases, class tokens and position embeddings are exempt
  (DeiT / PS-ViT's training code, on which the public RGT code builds; the paper does not say).
- Radiomics on the model's input (224², 0–255 gray levels), not on the original 1024² image: the
  engine then runs inside the training step on the same tensor, and binWidth 25 needs 0–255 values
  (the public code's min-max normalised [0, 1] input puts every pixel in one bin).
- Features are passed through sign(x)·log1p(|x|) and standardised with running training statistics
  (BatchNorm without affine): radiomic features span 1e-6…1e9. Entries PyRadiomics would refuse (NaN)
  are imputed with the running mean before the standardisation (0 after it; ``RGT.standardise``), so
  the loss never turns NaN and the batch statistics are not dragged towards zero.
- NT-Xent is taken per (image, class) pair of class tokens (RGT has one token per disease), over
  both views as anchors (SimCLR's 2N-view form, as §III-C describes its negatives), averaged
  rather than summed over the batch (a scale absorbed by λ), with τ = 0.1 (the paper gives no value).
- The class mean boxes (BYOA's box size and fallback) come from the dataset's box file
  (``ClassBoxPrior``): in the RGT protocol the box images are held out, so the statistics are those
  of the annotations themselves — the "free prior knowledge" the paper describes — never constants.
- Localization (``nih8-loc``) is scored as for every method here, not with BYOA's boxes: the
  class-token attention, upsampled bilinearly to the input, min-max normalised, thresholded at
  ``loc_threshold`` = 0.5; every 8-connected component is one box, the best IoU with the class's
  ground-truth boxes counts (``localization.boxes``, Wang et al. 2017), and the number of boxes per
  (image, class) is reported beside it (``loc/boxes_per_image``). The paper says it "relaxed" BYOA's
  boxes at test time without saying how; BYOA's boxes (top T = 10%, components resized to the
  class's mean box) still feed the radiomics branch at test time exactly as in training. The loc
  images are resized whole to 224, not centre-cropped (a crop cuts 58 of the 984 boxes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.byoa import ClassBoxPrior, byoa_boxes
from ..models.rgt_model import ClassHeads, CrossAttention, MultiTokenViT, RadiomicsEncoder, projection
from ..losses import masked_focal, nt_xent
from ..radiomics import extract
from ..optim import OptimizerRecipe, decay_groups
from .registry import register
from .classification import ClassificationMethod

#: DeiT / PS-ViT practice: class tokens and position embeddings do not decay (with norms and biases)
NO_DECAY = ("*.cls", "*.pos")


@register("vit")
class ViTBaseline(ClassificationMethod):
    """The image branch alone: class-token heads, focal loss; heatmaps = class-token attention."""

    fp32_modules = ("img_head",)

    def __init__(self, img_size: int = 224, patch_size: int = 16, dim: int = 192, depth: int = 6, heads: int = 3,
                 lr: float = 4e-3, weight_decay: float = 0.05, warmup_epochs: int = 5, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, stem: str = "patch", **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.vit = MultiTokenViT(img_size, patch_size, 1, self.num_classes, dim, depth, heads, stem=stem)
        self.img_head = ClassHeads(self.num_classes, dim)

    def encode(self, images):
        tokens, att = self.vit(images)
        return tokens[:, : self.num_classes], tokens[:, self.num_classes:], att

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cls, _, _ = self.encode(images)
        return self.img_head(cls)

    @torch.no_grad()
    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        _, _, att = self.encode(images)
        return F.interpolate(att, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def loss(self, logits: torch.Tensor, label: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        return masked_focal(logits, label, self.hparams.focal_alpha, self.hparams.focal_gamma)

    def param_groups(self) -> list[dict]:
        """DeiT / PS-ViT practice (timm's param groups): no weight decay on norms, biases, class tokens
        and position embeddings; every other weight decays at ``weight_decay`` (0.05, §IV-B)."""
        return decay_groups(self, self.hparams.weight_decay, NO_DECAY)

    def optimizer_recipe(self) -> OptimizerRecipe:
        h = self.hparams
        return OptimizerRecipe("adamw", h.lr, weight_decay=h.weight_decay, warmup_epochs=h.warmup_epochs,
                               exempt_from_decay=NO_DECAY)


@register("rgt")
class RGT(ViTBaseline):
    """Image ViT + BYOA + radiomics Transformer + cross-attention fusion; see the module docstring."""

    fp32_modules = ("img_head", "rad_head")

    contrasts_batch = True

    data_needs = ("box_prior",)  # the data contract's door this method reads


    def __init__(self, lam: float = 0.7, tau: float = 0.1, top: float = 0.1, rad_depth: int = 2,
                 radiomics_chunk: int = 128, **kwargs):
        super().__init__(**kwargs)
        if not 0 < top < 1:
            raise ValueError(f"BYOA threshold top (T) must be in (0, 1), got {top}")
        if not 0 <= lam <= 1 or tau <= 0:
            raise ValueError(f"need 0 <= lam <= 1 and tau > 0, got lam={lam}, tau={tau}")
        dim, heads, k = self.hparams.dim, self.hparams.heads, self.num_classes
        self.rad = RadiomicsEncoder(dim, rad_depth, heads)
        self.rad_norm = nn.BatchNorm1d(107, affine=False)
        self.cross_img, self.cross_rad = CrossAttention(dim, heads), CrossAttention(dim, heads)
        self.rad_head = ClassHeads(k, dim)
        self.proj_img, self.proj_rad = projection(dim), projection(dim)
        self.register_buffer("prior_center", torch.zeros(k, 2))
        self.register_buffer("prior_size", torch.zeros(k, 2))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if float(self.prior_size.sum()) == 0:  # not restored from a checkpoint: take it from the box file
            if self.data is None or self.data.box_prior is None:
                raise ValueError(f"RGT needs the class box prior of a DataModule with a box file (NIH's "
                                 f"BBox_List_2017.csv); {self.data.datamodule if self.data else 'no DataModule'} has none")
            prior = ClassBoxPrior.from_prior(self.data.box_prior())
            if prior.classes != self.class_names:
                raise ValueError(f"box prior classes {prior.classes} differ from the model's {self.class_names}")
            self.prior_center.copy_(prior.center)
            self.prior_size.copy_(prior.size)

    def prior(self) -> ClassBoxPrior:
        if float(self.prior_size.sum()) == 0:
            raise RuntimeError("RGT has no class box prior: fit it on a DataModule with boxes, or load a checkpoint")
        return ClassBoxPrior(self.class_names, self.prior_center, self.prior_size)

    def byoa(self, att: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class-token attention [B, K, h, w] -> its maps at the image ``size`` [B, K, H, W], BYOA's boxes
        [B, K, 4], and which boxes are the class's mean box (no attention component qualified) [B, K]."""
        maps = F.interpolate(att.detach().float(), size=tuple(size), mode="bilinear", align_corners=False)
        return maps, *byoa_boxes(maps, self.prior(), top=self.hparams.top, with_fallback=True)

    def radiomics(self, images: torch.Tensor, att: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BYOA boxes [B, K, 4] and their standardised radiomic features [B·K, 107]."""
        b, k = images.shape[0], self.num_classes
        _, boxes, _ = self.byoa(att, images.shape[-2:])
        gray = (images[:, 0].detach().float() * 255).round().clamp(0, 255)
        gray = gray[:, None].expand(b, k, *gray.shape[1:]).reshape(b * k, *gray.shape[1:])
        feats = extract(gray, boxes=boxes.reshape(b * k, 4), chunk=self.hparams.radiomics_chunk).float()
        feats = torch.sign(feats) * torch.log1p(feats.abs())
        return boxes, self.standardise(feats)

    def standardise(self, feats: torch.Tensor) -> torch.Tensor:
        """Running-statistics standardisation; a non-finite entry (a ROI PyRadiomics would refuse) is
        imputed with the feature's running mean *before* the normalisation, so it neither drags the batch
        statistics (zero-filling made it (0 − μ)/σ, ≈ −7.7 in one measurement) nor carries a value
        after it: it comes out as exactly 0, the running mean in standardised units."""
        bad = ~torch.isfinite(feats)
        mean = self.rad_norm.running_mean.to(feats.dtype).expand_as(feats)
        normed = self.rad_norm(torch.where(bad, mean, feats))
        return torch.where(bad | ~torch.isfinite(normed), torch.zeros_like(normed), normed).clamp(-10, 10)

    def fused(self, images: torch.Tensor):
        b, k, d = images.shape[0], self.num_classes, self.hparams.dim
        img_cls, patches, att = self.encode(images)
        _, feats = self.radiomics(images, att)
        rad = self.rad(feats)  # [B·K, 108, d]
        img_f = self.cross_img(img_cls.reshape(b * k, 1, d), rad[:, 1:])
        rad_f = self.cross_rad(rad[:, :1], patches.repeat_interleave(k, 0))
        img_f, rad_f = img_f.reshape(b, k, d), rad_f.reshape(b, k, d)
        logits = (self.img_head(img_f) + self.rad_head(rad_f)) / 2
        return logits, img_f, rad_f

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fused(images)[0]

    def nt_xent(self, img_f: torch.Tensor, rad_f: torch.Tensor) -> torch.Tensor:
        return nt_xent(self.proj_img(img_f.reshape(-1, img_f.shape[-1])),
                       self.proj_rad(rad_f.reshape(-1, rad_f.shape[-1])), self.hparams.tau)

    def training_step(self, batch, batch_idx):
        logits, img_f, rad_f = self.fused(batch["image"])
        focal = self.loss(logits, batch["label"])
        contrast = self.nt_xent(img_f, rad_f)
        lam = self.hparams.lam
        loss = (1 - lam) * contrast + lam * focal
        n = len(logits)
        self.log_dict({"train/loss": loss, "train/focal": focal, "train/nt_xent": contrast}, prog_bar=True, batch_size=n)
        return loss
