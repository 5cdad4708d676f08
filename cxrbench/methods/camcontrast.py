"""CAMContrast (Yap & Ng): CAM heatmaps from coarse normal/abnormal labels, then image-vs-heatmap contrast.

Paper: ../shared/papers/004_724384b118fd035f.txt — §3.1 (heatmap generator, Eqs. 1–4), §3.2 (contrastive
representation learning, Eq. 5, negative and background suppression, fixed crop training), §3.3
(two stages), Algorithm 1, §4.1–4.2 (data and setups), Tables 8–9 (NIH-14 linear evaluation, SIIM
fine-tuning). Facts of the authors' public code (BPYap/CAMContrast) from ../shared/notes/method-facts.md
and its scripts ``1_train_generator``, ``2_generate_patch``, ``camcontrast-patch``.

**Stage 1** ``CAMContrastCAM`` (registry ``camcontrast-cam``): the 5-level U-Net encoder (registry
``unet``) → GAP → Linear(1024, 2) on normal ("No Finding", class 0) vs abnormal (class 1). Loss (Eq. 2)
= mean over the batch of CE + λ·L_attn, λ = 0.01; L_attn (Eq. 4) = [p⁰ ≥ 0.5 and y = 0] ·
mean_ij(1 − M⁰ + M¹) on the min-max normalised CAMs Mᶜ = Σ_k w_c[k]·F_k (classifier weights, no bias,
Eq. 1) at feature resolution (448 → 28×28): ``cxrbench.losses.cam_attention_loss``. 448 input;
RandomResizedCrop(448, 0.8–1), flip, rotation 30°; eval Resize(512) + CenterCrop(448) (preset
``camcontrast``). SGD lr 0.01, momentum 0.95, Nesterov, 20 warm-up epochs then per-step cosine, 60
epochs, batch 40, weight decay 0 (public code), the last epoch kept.

**Heatmaps** (``export_artifact('heatmaps')``, a folder artifact, ``data_modules.heatmaps.HeatmapWriter``):
for every train+val image of stage 1's split, resized to 448: the abnormal-class CAM upsampled
bilinearly to 448, min-max normalised, multiplied by the foreground mask (raw pixel > 15), stored as
uint8 (×255, truncated as torchvision's ``to_pil_image`` does). The five 224 crops at (0,0), (0,224),
(224,0), (224,224), (112,112) are cut when read, each heatmap crop resized to 14×14 and zeroed for
normal images (``data_modules.crops.NIHCrops``).

**Stage 2** ``CAMContrast`` (registry ``camcontrast``): image crop → U-Net encoder → GAP →
Linear(1024, 1024) → ReLU → Linear(1024, 128); heatmap crop (14×14) → 3 × [Conv3×3 without padding or
bias → ReLU] (1→32→64→128, 14 → 8 px) → GAP → MLP 128→128→128; NT-Xent over the 2B image and heatmap
views, τ = 0.05 (Eq. 5 with Algorithm 1's ½B·Σ[L(z¹ᵢ, z²ᵢ) + L(z²ᵢ, z¹ᵢ)] = ``cxrbench.losses.nt_xent``).
Batch 120, SGD momentum 0.95, lr 1e-3, wd 1e-4, linear warm-up over 30% of the steps then cosine, 72k
steps (20 epochs of the 5 × 86,524 crops). The image encoder is the product (``encoder`` artifact);
projectors and the heatmap encoder are dropped. Image crops: RandomResizedCrop(224, 0.8–1), flip,
rotation 30°; no augmentation of the heatmap crops.

**Baselines** SimCLR-crop, SupCE-crop, SupCon-crop are ``ssl_baselines`` on ``NIHCrops`` without
heatmaps (configs ``benchmarks/camcontrast/configs/{simclr,supce,supcon}_crop_nih.yaml``); ``random`` is an
evaluation cell without an encoder artifact. Downstream: ``nih14-linear`` (the public code's probe: BatchNorm in train mode) and
``siim-seg`` (U-Net fine-tune) — ``benchmarks/camcontrast/paper.yaml``.

Deviations and choices (paper vs public code), each with its reason:
- CE on two classes is computed as BCE on the one logit z₁ − z₀ (identical: softmax over two classes
  is the sigmoid of the difference), so stage 1 is a binary member of the classification family
  (validation AUC, IoU-accuracy) while keeping the paper's Linear(·, 2) whose two weight rows give M⁰, M¹.
- Min-max normalisation adds ε = 1e-8 to the denominator (paper and code divide by max − min: a
  constant CAM gives NaN and poisons the batch's gradient). Gradients flow through the min-max, as in
  the code.
- The gate p⁰ ≥ 0.5 is z₀ ≥ z₁ (the code's argmax = 0, ties to normal — the same set).
- Heatmaps are upsampled to 448 before the min-max and the crops resized to 14×14 when read (public
  code); the paper keeps them at feature size (28×28, crops 14×14) to save memory. Upsampling uses
  ``align_corners=True`` (public code). The 448 maps are stored as uint8, as the code's PNGs.
- Images are in [0, 1] without the code's dataset mean/std normalisation (a fixed affine map of the
  input, absorbed by the first convolution's BatchNorm; every cxrbench method reads [0, 1] images).
  The foreground threshold is applied to the raw uint8 pixel (> 15), equal to the code's threshold in
  normalised units.
- The heatmap export reads each image resized to 448² (the code: Resize(448) + CenterCrop(448), the
  same on NIH's square images) through PIL bilinear resizing from the image cache.
- Stage 2 warm-up: 30% of the steps (paper §4.2); the public script warms up 5 of 20 epochs (25%).
  Stage-2 SGD without Nesterov (public script; the paper does not say).
- Stage 2 keeps 10% of the train_val patients as a validation split for its loss (``val_share``);
  the public code trains stage 2 on all train+val crops without validation. Heatmaps are exported for
  train and val images, as in the code, so the validation loss is computable.
- The heatmap crop is resized with PIL's bilinear filter from the stored uint8 crop (public code's
  ``Resize((14, 14))``), then /255.
- The heatmap encoder's convolutions start from He initialisation (fan-in, ReLU gain; ``heatmap_init``);
  the public code keeps PyTorch's default, under which three bias-free ReLU layers shrink a heatmap's
  features ~20× to ~0.008 at the GAP: the projector's biases then dominate and every heatmap projects to
  nearly one vector (mean cosine 0.997 over a batch, measured on the twin; 0.74 with He init).
  ``heatmap_init: default`` restores the code's. Known limit at CPU scale: even so, short runs on the
  twin (64 px, width 8, a few hundred steps; lr 1e-3…5e-2, τ 0.05/0.5, with or without warm-up or
  BatchNorm in the projectors) fall from ~24 into the collapsed state log(2B − 1): at initialisation
  the image and heatmap projections form two tight, mutually orthogonal clusters and merging them is
  the steepest descent. The paper's 72k steps are not reproduced here (tests/test_camcontrast.py).
  Not the floor the paper's construction imposes: with every normal heatmap zeroed, a batch's k normal
  heatmap crops are one view, which bounds NT-Xent below by (k / B) · log k
  (``losses.nt_xent_floor_with_identical_views``), and the arrangement where each normal image crop
  projects onto that view scores (k / B) · log(2k − 1): 1.9 and 2.2 at the twin's batch 64, 2.3 and 2.6
  at the paper's 120, with NIH's 53.8% "No Finding" images (60,361 of 112,120), against log(2B − 1) =
  4.8 and 5.5. A loss at log(2B − 1) is a complete collapse, which identical normal views do not
  explain (issue 32: the diagnosis; what avoids the collapse is not found yet). Measured by batch and
  steps (``benchmarks/camcontrast/stage2_trend.py``, ``results/camcontrast_stage2_trend.md``: B 16/32/64,
  100/400 steps, 32 px crops of the 128 px twin): 52% of the crops have an all-zero heatmap (floor
  1.1–1.8); at initialisation, as the loss sees them (BatchNorm on the batch), the image projections
  have a mean pairwise cosine of 0.95 and the heatmap projections 0.89–0.92, the two branches −0.05;
  training aligns the branches (pair cosine → 1.00) and stays at log(2B − 1); 4× the batch or the
  steps does not move it (B = 16, 400 steps: 3.29 against 3.43).
- Colour jitter and random grayscale (paper §3.2) are not applied to image crops: the public code's
  chest X-ray transform has neither (grayscale is meaningless on 1-channel radiographs).
- Beyond the paper: stage 1's abnormal-class heatmap (foreground-suppressed, as exported) is scored on
  ``nih8-loc`` by the shared IoU-accuracy: with the coarse label set every box of a box image, whatever
  its disease, is matched against the one abnormal heatmap (``test_step`` maps the box labels to class
  0; the scorer itself is unchanged). Scored on the RGT protocol's held-out box images (never trained
  on), from a stage-1 run of its own (``camcontrast-loc`` in the Table 8 spec).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn

from ..losses import cam_attention_loss, minmax, nt_xent
from ..models.encoders import build_encoder
from .registry import register
from .classification import ClassificationMethod
from ..optim import OPTIMIZERS, OptimizerRecipe, recipe_from_hparams
from .pretraining import PretrainingMethod
from .ssl_baselines import projection_head

FOREGROUND_THRESHOLD = 15  # data_modules.crops.FOREGROUND_THRESHOLD; raw uint8 pixel > 15 is body


@register("camcontrast-cam")
class CAMContrastCAM(ClassificationMethod):
    """CAMContrast stage 1: the heatmap generator (a normal/abnormal classifier with CAM attention loss).

    Args:
        encoder, encoder_kwargs: a registry CNN encoder (``unet``; ``width`` shrinks it for CPU runs).
        attention_weight: λ of Eq. 2 (0.01).
        cam_eps: ε of the min-max normalisation.
        foreground_threshold: raw uint8 pixel above which a pixel is body (15); 0 keeps every pixel.
        optimizer, lr, momentum, nesterov, weight_decay, warmup_epochs: the schedule (no weight decay on
            BatchNorm and biases when weight_decay > 0).
        export_batch_size: batch size of the heatmap export (default: the DataModule's).
        num_classes, class_names, task: linked from the DataModule — one binary label (NIH
            ``label_set: abnormal``: 1 = abnormal).
    """

    fp32_modules = ("head",)

    data_needs = ("full_images",)  # the data contract's door this method reads

    #: what ``cxrbench fit`` exports after training (``callbacks.ExportArtifacts``), as a sweep cell's ``produces``
    artifacts: tuple[str, ...] = ("heatmaps",)

    TASKS = ("binary",)

    def __init__(self, encoder: str = "unet", encoder_kwargs: dict | None = None, attention_weight: float = 0.01,
                 cam_eps: float = 1e-8, foreground_threshold: int = FOREGROUND_THRESHOLD, optimizer: str = "sgd",
                 lr: float = 0.01, momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
                 warmup_epochs: float = 20.0, export_batch_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if self.num_classes != 1:
            raise ValueError(f"CAMContrast stage 1 classifies normal vs abnormal: it needs one binary label (NIH "
                             f"label_set: abnormal), got {self.num_classes} classes {self.class_names}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if attention_weight < 0 or cam_eps <= 0:
            raise ValueError(f"attention_weight must be >= 0 and cam_eps > 0, got {attention_weight}, {cam_eps}")
        self.save_hyperparameters()
        self.encoder = build_encoder(encoder, **(encoder_kwargs or {}))
        if self.encoder.kind != "cnn":
            raise ValueError(f"CAMs need a CNN encoder's feature maps; {encoder!r} is a {self.encoder.kind} encoder")
        self.head = nn.Linear(self.encoder.out_dim, 2)  # row 0: normal, row 1: abnormal (Eq. 1's w^c)

    # ---------------------------------------------------------------- model
    def logits_and_cams(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-class logits [B, 2] and the raw CAMs [B, 2, h, w] of the last feature map (Eq. 1)."""
        fmap = self.encoder.features(images)[-1]
        logits = self.head(fmap.mean((2, 3)))
        cams = torch.einsum("bkhw,ck->bchw", fmap, self.head.weight)
        return logits, cams

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.head(self.encoder(images))
        return z[:, 1:] - z[:, :1]  # the abnormal logit of the equivalent binary model

    def abnormal_heatmap(self, images: torch.Tensor) -> torch.Tensor:
        """[B, H, W] in [0, 1]: the abnormal-class CAM upsampled to the image, min-max, foreground only."""
        _, cams = self.logits_and_cams(images)
        up = F.interpolate(cams[:, 1:].float(), size=images.shape[-2:], mode="bilinear", align_corners=True)
        heat = minmax(up, self.hparams.cam_eps)[:, 0]
        foreground = (images[:, 0].float() * 255).round() > self.hparams.foreground_threshold
        return heat * foreground

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        return self.abnormal_heatmap(images)[:, None]

    # ---------------------------------------------------------------- training
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.data is not None:
            n_norm, n_abn = self.data.train_negatives[0], self.data.train_positives[0]
            if n_norm == 0 or n_abn == 0:
                raise ValueError(f"CAMContrast stage 1 needs normal and abnormal images in the training split; it has "
                                 f"{n_norm} normal and {n_abn} abnormal ({self.data.classes[0]} = 1). Check the label set, "
                                 "filters and label fraction")

    def stage1_loss(self, images: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits, cams = self.logits_and_cams(images)
        ce = self.loss(logits[:, 1:] - logits[:, :1], label)
        attn = cam_attention_loss(cams, logits, label[:, 0], self.hparams.cam_eps)
        return ce + self.hparams.attention_weight * attn, {"ce": ce.detach(), "attention": attn.detach()}

    def training_step(self, batch, batch_idx):
        loss, logs = self.stage1_loss(batch["image"], batch["label"])
        n = len(batch["image"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=n)
        return loss

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if self.split_name(dataloader_idx) == "loc":
            # One heatmap (abnormal) for every box, whatever its disease: with the coarse label set the
            # boxes' disease names are outside the classes (-1); they all become class 0 here.
            batch = {**batch, "box_labels": [torch.zeros_like(l) for l in batch["box_labels"]]}
        return super().test_step(batch, batch_idx, dataloader_idx)

    def optimizer_recipe(self) -> OptimizerRecipe:
        return recipe_from_hparams(self.hparams, exempt_from_decay=())  # BatchNorm and biases do not decay

    # ---------------------------------------------------------------- heatmap artifact
    def export_artifact(self, kind, path, producer=None):
        """The ``heatmaps`` artifact: every train+val image of stage 1's split (the data contract's
        ``full_images`` door, in row order) through Lightning's predict loop on one device of the
        accelerator Lightning picks (``HeatmapExport``), each batch's maps written as they come."""
        if kind != "heatmaps":
            return super().export_artifact(kind, path, producer)
        from data_modules.heatmaps import HeatmapWriter, images_key

        data = self.data
        if data is None or data.full_images is None:
            raise RuntimeError("the heatmap export reads stage 1's images through its data contract: fit (or test) "
                               "the model on its DataModule first")
        size = int(data.image_size)
        loader, rows = data.full_images(size, self.hparams.export_batch_size)
        meta = {"producer": dict(producer or {}), "dataset": data.dataset, "dataset_root": str(Path(data.root).resolve()),
                "dataset_key": images_key(data.dataset, data.images), "n_index": len(data.images), "classes": list(data.classes),
                "split": {"protocol": data.protocol, "split_seed": data.split_seed,
                          "val_share": data.val_share, "splits": ["train", "val"]},
                "cam": {"class": self.class_names[0], "upsample": "bilinear, align_corners=True",
                        "normalise": "min-max", "foreground_threshold": int(self.hparams.foreground_threshold)}}
        was_training, old_device = self.training, self.device
        try:
            with HeatmapWriter(path, rows, size, meta) as writer:
                export = L.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                                   enable_model_summary=False, enable_progress_bar=False, callbacks=[_PutHeatmaps(writer)])
                export.predict(HeatmapExport(self), dataloaders=loader, return_predictions=False)
        finally:
            self.train(was_training).to(old_device)
        return path


class HeatmapExport(L.LightningModule):
    """Stage 1 as a predictor of the exported maps: uint8 heatmaps (×255, truncated) of whole images. A
    module of its own, so that the export's predict loop never touches the fitted model's trainer."""

    def __init__(self, stage1: CAMContrastCAM):
        super().__init__()
        self.stage1 = stage1

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        heat = self.stage1.abnormal_heatmap(batch["image"].float() / 255.0)
        return {"index": batch["index"], "heatmap": (heat * 255).clamp(0, 255).to(torch.uint8).cpu()}


class _PutHeatmaps(BasePredictionWriter):
    def __init__(self, writer):
        super().__init__(write_interval="batch")
        self.writer = writer

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self.writer.put(prediction["index"], prediction["heatmap"])


class HeatmapEncoder(nn.Module):
    """f_h: 3 × [Conv3×3, no padding, no bias → ReLU] (1→32→64→128; 14×14 → 8×8) → GAP → [B, 128].

    Without biases an all-zero (normal) heatmap maps to zero features, so every normal crop shares one
    projection — the "prototypical vector of an empty heatmap" of §3.2."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), in_chans: int = 1, init: str = "kaiming"):
        super().__init__()
        if init not in ("kaiming", "default"):
            raise ValueError(f"init must be 'kaiming' (He, fan-in, ReLU gain) or 'default' (PyTorch's), got {init!r}")
        layers, c_in = [], in_chans
        for c in channels:
            conv = nn.Conv2d(c_in, c, 3, bias=False)
            if init == "kaiming":
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            layers += [conv, nn.ReLU(inplace=True)]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        return self.net(heatmaps).mean((2, 3))


@register("camcontrast")
class CAMContrast(PretrainingMethod):
    """CAMContrast stage 2: NT-Xent between each image crop and its heatmap crop (no labels).

    Needs batches with ``heatmap`` (``data_modules.NIHCrops`` with ``heatmaps: ${needs.heatmaps}``).
    Args: tau (0.05), proj_dim (128), heatmap_channels (32, 64, 128), heatmap_init ('kaiming' or
    'default': PyTorch's, the public code's); the rest as PretrainingMethod.
    """

    contrasts_batch = True

    def __init__(self, tau: float = 0.05, proj_dim: int = 128, heatmap_channels: tuple[int, ...] = (32, 64, 128),
                 heatmap_init: str = "kaiming", **kwargs):
        super().__init__(views=1, **kwargs)
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = tau
        self.projector = projection_head(self.encoder.out_dim, out=proj_dim)  # g_I: 1024 → 1024 → 128
        self.heatmap_encoder = HeatmapEncoder(tuple(heatmap_channels), init=heatmap_init)  # f_h
        self.heatmap_projector = projection_head(self.heatmap_encoder.out_dim, out=proj_dim)  # g_h: 128 → 128 → 128

    def project(self, images: torch.Tensor, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.encoder(images)
        return self.projector(feats), self.heatmap_projector(self.heatmap_encoder(heatmaps)), feats

    def objective(self, batch):
        if "heatmap" not in batch:
            raise ValueError("CAMContrast stage 2 needs heatmap crops in its batches: use data_modules.NIHCrops with "
                             "heatmaps: ${needs.heatmaps} (the artifact of a camcontrast-cam cell)")
        z_img, z_heat, feats = self.project(self.image_views(batch)[:, 0], batch["heatmap"])
        loss = nt_xent(z_img, z_heat, self.tau)
        return loss, {"nt_xent": loss.detach(), "_features": feats}

    def test_objective(self, batch):
        # stage 1 exports heatmaps of the train+val images only: test images have no heatmap crop to contrast
        return super().test_objective(batch) if "heatmap" in batch else None


__all__ = ["CAMContrastCAM", "CAMContrast", "HeatmapEncoder", "HeatmapExport"]
