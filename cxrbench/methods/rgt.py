"""RGT: Radiomics-Guided Transformer, and its ViT baseline.

Paper: ../shared/papers/000_9b4b71fdf1ea70f1.txt (Han et al., Radiomics-Guided Global-Local
Transformer for weakly supervised pathology localization in chest X-rays).
Follows: §III-A (image branch: a ViT with one class token per disease — the text speaks of "the CLS
token"; one token per disease is what the public PS-ViT-Ti weights hold (8 class tokens), and we follow them; radiomics branch: the 107 features as tokens of a
"vanilla Transformer" whose positional encoding "is discarded", 2 layers); §III-B and Fig. 3 (BYOA: last-layer class-token
attention -> top T = 10% -> boxes of the class's mean size -> radiomics of those boxes, every step);
the cross-attention fusion of the two branches' class tokens (CrossViT, one layer; §IV-B "one more
cross-attention layer"); §III-C Eq. 2–3 (L = (1 − λ)·NT-Xent(g_i(I_cls), g_r(R_cls)) + λ·focal;
λ = 0.7, where Fig. 5B's text puts the optimum); §IV-B (6-layer image encoder, batch 128, 50 epochs,
cosine schedule with 5 warm-up epochs, weight decay 0.05, 224 input with flips, eval resize 256 /
centre crop 224 — ``benchmarks/rgt/configs/rgt_nih8.yaml``). Logits = mean of both branches' heads.

Deviations, with reasons:
- How a radiomic feature becomes a token §III-A does not say. Each feature gets its own Linear(1, d)
  (``rad_tokens='per_feature'``, FT-Transformer's numerical tokenizer): a token then says which feature
  it is, with no order among features, as the paper's dropped positional encoding wants. cxrbench had
  one Linear(1, d) shared by all features (``rad_tokens='shared'``): with no positional encoding every
  token is then a function of its value alone, the Transformer sees the multiset of the 107 values, and
  with the twin's true boxes the radiomics branch alone scored test AUC 0.54 (shuffled boxes 0.57);
  per feature, 0.80–0.82 against 0.53–0.55 (``results/rgt_oracle_boxes.md``, "Oracle boxes" below).
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

Oracle boxes (issue 32; an instrument, not the paper's method): ``box_source`` replaces BYOA's boxes by
the batch's ``oracle_boxes`` (NIH's ``oracle_boxes`` option; the NIH twin's twin_boxes.csv holds, per
image and finding, the box it was drawn in or would have been), by the class's mean box at the oracle
centre (BYOA at its best), by the previous image's oracle boxes (``shuffled``: the mechanism off), or by
mean boxes at random places; ``branch='radiomics'`` trains the radiomics branch alone. With the true
boxes the pathway carries the signal (``results/rgt_oracle_boxes.md``; ``tests/test_rgt.py``'s learns
test); with BYOA's boxes on a from-scratch ViT it gets the boxes' geometry wrong (``val/box_oracle_iou``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.byoa import ClassBoxPrior, byoa_boxes
from ..models.rgt_model import ClassHeads, CrossAttention, MultiTokenViT, RadiomicsEncoder, projection
from ..losses import masked_focal, nt_xent
from ..radiomics import extract
from data_modules.io import DataError
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


#: where the radiomics branch's boxes come from (``box_source``); every source but BYOA is an instrument
#: of the oracle-box experiment, not the paper's method
BOX_SOURCES = ("byoa", "oracle", "oracle_center", "shuffled", "random")
BRANCHES = ("fused", "radiomics")


@register("rgt")
class RGT(ViTBaseline):
    """Image ViT + BYOA + radiomics Transformer + cross-attention fusion; see the module docstring.

    ``box_source`` and ``branch`` isolate the radiomics pathway (not the paper's method; the module
    docstring's "Oracle boxes"): ``byoa`` (the paper), ``oracle`` (the batch's ``oracle_boxes``: where
    each finding is, or would be, drawn), ``oracle_center`` (the class's mean box at the oracle box's
    centre: BYOA's boxes at their best), ``shuffled`` (the oracle boxes of the previous image of the batch:
    right sizes and places, wrong image), ``random`` (the class's mean box at a uniform random place);
    ``branch='radiomics'`` scores the radiomics branch alone (no image branch, no cross-attention, no
    NT-Xent), which needs boxes from a source other than BYOA.
    """

    fp32_modules = ("img_head", "rad_head")

    contrasts_batch = True

    data_needs = ("box_prior",)  # the data contract's door this method reads


    def __init__(self, lam: float = 0.7, tau: float = 0.1, top: float = 0.1, rad_depth: int = 2,
                 radiomics_chunk: int = 128, box_source: str = "byoa", branch: str = "fused",
                 rad_tokens: str = "per_feature", **kwargs):
        super().__init__(**kwargs)
        if not 0 < top < 1:
            raise ValueError(f"BYOA threshold top (T) must be in (0, 1), got {top}")
        if not 0 <= lam <= 1 or tau <= 0:
            raise ValueError(f"need 0 <= lam <= 1 and tau > 0, got lam={lam}, tau={tau}")
        if box_source not in BOX_SOURCES:
            raise ValueError(f"box_source must be one of {BOX_SOURCES}, got {box_source!r}")
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        if branch == "radiomics" and box_source == "byoa":
            raise ValueError("branch 'radiomics' has no image branch, so no attention for BYOA to read: "
                             f"choose box_source among {BOX_SOURCES[1:]}")
        if box_source in ("oracle", "oracle_center", "shuffled"):
            self.data_needs = (*type(self).data_needs, "oracle_boxes")
        dim, heads, k = self.hparams.dim, self.hparams.heads, self.num_classes
        self.rad = RadiomicsEncoder(dim, rad_depth, heads, tokens=rad_tokens)
        self.rad_norm = nn.BatchNorm1d(107, affine=False)
        self.cross_img, self.cross_rad = CrossAttention(dim, heads), CrossAttention(dim, heads)
        self.rad_head = ClassHeads(k, dim)
        self.proj_img, self.proj_rad = projection(dim), projection(dim)
        self.register_buffer("prior_center", torch.zeros(k, 2))
        self.register_buffer("prior_size", torch.zeros(k, 2))

    def bind_data(self, contract) -> None:
        if "oracle_boxes" in self.data_needs and contract.oracle_boxes is None:
            raise DataError(f"RGT box_source {self.hparams.box_source!r} reads the batches' oracle boxes, which "
                            f"{contract.datamodule} at {contract.root} does not provide: give NIH the option "
                            "oracle_boxes (the NIH twin writes twin_boxes.csv); no other dataset has them")
        super().bind_data(contract)

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

    def mean_boxes(self, centers: torch.Tensor, size) -> torch.Tensor:
        """The class's mean box at ``centers`` [B, K, 2] (pixels), clamped to the image ``size`` (H, W)."""
        h, w = size
        half = self.prior_size.float() * torch.tensor([w, h], device=centers.device) / 2
        boxes = torch.cat([centers - half, centers + half], -1)
        return torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                            boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1)

    def source_boxes(self, batch: dict, size) -> torch.Tensor:
        """The radiomics branch's boxes [B, K, 4] for a source other than BYOA (see the class docstring)."""
        source, h, w = self.hparams.box_source, *size
        b = len(batch["image"])
        prior_centers = (self.prior_center.float() * torch.tensor([w, h], device=self.device)).expand(b, -1, -1)
        if source == "random":
            u = torch.rand(b, self.num_classes, 2, device=self.device)
            half = self.prior_size.float() * torch.tensor([w, h], device=self.device) / 2
            lo, hi = half, torch.tensor([w, h], device=self.device) - half
            return self.mean_boxes(lo + u * (hi - lo).clamp_min(0), size)
        if "oracle_boxes" not in batch:
            raise ValueError(f"RGT box_source {source!r} reads the batch's oracle_boxes, which this batch lacks "
                             "(NIH option oracle_boxes)")
        oracle, known = batch["oracle_boxes"].float(), batch["oracle_known"].bool()
        if source == "shuffled":  # the previous image's (roll by one): a derangement for every batch of two or more
            oracle, known = oracle.roll(1, 0), known.roll(1, 0)
        centers = torch.where(known[..., None], (oracle[..., :2] + oracle[..., 2:]) / 2, prior_centers)
        if source == "oracle_center":
            return self.mean_boxes(centers, size)
        return torch.where(known[..., None], oracle, self.mean_boxes(prior_centers, size))  # unknown: the fallback

    def radiomics(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The standardised radiomic features [B·K, 107] of ``boxes`` [B, K, 4] (XYXY pixels)."""
        b, k = images.shape[0], self.num_classes
        gray = (images[:, 0].detach().float() * 255).round().clamp(0, 255)
        gray = gray[:, None].expand(b, k, *gray.shape[1:]).reshape(b * k, *gray.shape[1:])
        feats = extract(gray, boxes=boxes.reshape(b * k, 4), chunk=self.hparams.radiomics_chunk).float()
        feats = torch.sign(feats) * torch.log1p(feats.abs())
        return self.standardise(feats)

    def standardise(self, feats: torch.Tensor) -> torch.Tensor:
        """Running-statistics standardisation; a non-finite entry (a ROI PyRadiomics would refuse) is
        imputed with the feature's running mean *before* the normalisation, so it neither drags the batch
        statistics (zero-filling made it (0 − μ)/σ, ≈ −7.7 in one measurement) nor carries a value
        after it: it comes out as exactly 0, the running mean in standardised units."""
        bad = ~torch.isfinite(feats)
        mean = self.rad_norm.running_mean.to(feats.dtype).expand_as(feats)
        normed = self.rad_norm(torch.where(bad, mean, feats))
        return torch.where(bad | ~torch.isfinite(normed), torch.zeros_like(normed), normed).clamp(-10, 10)

    def fused(self, images: torch.Tensor, batch: dict | None = None):
        """Logits [B, K], the two branches' fused class tokens [B, K, d] (None for the radiomics branch
        alone) and the radiomics branch's boxes [B, K, 4]. ``batch`` is read by box sources other than BYOA."""
        b, k, d = images.shape[0], self.num_classes, self.hparams.dim
        if self.hparams.box_source != "byoa" and batch is None:
            raise ValueError(f"RGT box_source {self.hparams.box_source!r} takes its boxes from the batch: call "
                             "batch_logits(batch), not forward(images)")
        if self.hparams.branch == "radiomics":
            boxes = self.source_boxes(batch, images.shape[-2:])
            rad = self.rad(self.radiomics(images, boxes))
            return self.rad_head(rad[:, 0].reshape(b, k, d)), None, None, boxes
        img_cls, patches, att = self.encode(images)
        boxes = self.byoa(att, images.shape[-2:])[1] if self.hparams.box_source == "byoa" else \
            self.source_boxes(batch, images.shape[-2:])
        rad = self.rad(self.radiomics(images, boxes))  # [B·K, 108, d]
        img_f = self.cross_img(img_cls.reshape(b * k, 1, d), rad[:, 1:])
        rad_f = self.cross_rad(rad[:, :1], patches.repeat_interleave(k, 0))
        img_f, rad_f = img_f.reshape(b, k, d), rad_f.reshape(b, k, d)
        logits = (self.img_head(img_f) + self.rad_head(rad_f)) / 2
        return logits, img_f, rad_f, boxes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fused(images)[0]

    def batch_logits(self, batch: dict) -> torch.Tensor:
        return self.fused(batch["image"], batch)[0]

    @torch.no_grad()
    def heatmaps(self, images: torch.Tensor) -> torch.Tensor | None:
        return None if self.hparams.branch == "radiomics" else super().heatmaps(images)

    def nt_xent(self, img_f: torch.Tensor, rad_f: torch.Tensor) -> torch.Tensor:
        return nt_xent(self.proj_img(img_f.reshape(-1, img_f.shape[-1])),
                       self.proj_rad(rad_f.reshape(-1, rad_f.shape[-1])), self.hparams.tau)

    def training_step(self, batch, batch_idx):
        logits, img_f, rad_f, _ = self.fused(batch["image"], batch)
        focal = self.loss(logits, batch["label"])
        n = len(logits)
        if img_f is None:  # the radiomics branch alone: the focal loss only
            self.log_dict({"train/loss": focal, "train/focal": focal}, prog_bar=True, batch_size=n)
            return focal
        contrast = self.nt_xent(img_f, rad_f)
        lam = self.hparams.lam
        loss = (1 - lam) * contrast + lam * focal
        self.log_dict({"train/loss": loss, "train/focal": focal, "train/nt_xent": contrast}, prog_bar=True, batch_size=n)
        return loss

    def validation_logits(self, batch, batch_idx: int) -> torch.Tensor:
        """The logits; where the batch has oracle boxes, also how well the radiomics branch's boxes cover
        the boxes of the findings present (``val/box_oracle_iou``: mean IoU over positive (image, class)
        pairs; how BYOA's boxes approach the oracle as the image branch learns)."""
        logits, _, _, boxes = self.fused(batch["image"], batch)
        if "oracle_boxes" in batch:
            present = batch["oracle_known"].bool() & (batch["label"] == 1)
            if present.any():
                iou = paired_iou(boxes[present].float(), batch["oracle_boxes"][present].float())
                self.log("val/box_oracle_iou", iou.mean(), batch_size=int(present.sum()), sync_dist=True)
        return logits


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each box of ``a`` [N, 4] with the same row of ``b`` [N, 4] (XYXY); torchvision's
    ``box_iou`` is all pairs, N² for N wanted values."""
    lo, hi = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp_min(0).prod(1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp_min(0).prod(1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp_min(1e-9)
