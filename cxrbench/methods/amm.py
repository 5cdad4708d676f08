"""Cardio-XAttentionNet: the Attention Mapping Mechanism (AMM) and its GAP baselines.

Paper: ../shared/papers/003_f324741b56ad6161.txt (Cardio-XAttentionNet, Scientific Reports).
Follows: "Cardio-XAttentionNet" and Table 3 (the AMM head, Eq. 8–9: W, fixed broadcast conv,
A = F⊙W, GWAP = ΣA/ΣW, dense 128 ELU, sigmoid output); "Hyper-parameters and model training"
(from scratch, SGD momentum 0.9, lr 1e-4, batch 16, lr ×0.3 when the validation loss plateaus,
early stopping on validation loss with patience 40, class-weighted loss); "Data preprocessing"
(cardiomegaly vs normal, official patient-wise split, 10% of train as validation; train at 224,
test at full size — the head is fully convolutional). Heatmap = W upsampled to the image (Fig. 7–8).
Backbones: densenet121 (CXA_Dense121, default), densenet201, resnet50, inception_resnet_v2 (timm).

Deviations:
- Glorot-uniform initialisation is used for the head only; backbones keep timm's (PyTorch)
  initialisation — re-initialising timm's backbones would not change what is compared.
- Dropout rates are not given in the paper: 0.5 and 0.25 (see ``models.amm_head``).
- The paper shows heatmaps as pictures only; we score them with the shared IoU-accuracy on the
  cardiomegaly box images (146 in the release).
- The "nih8" multi-label variant (one W per class) is ours, so AMM can enter nih8-cls / nih8-loc.
- Input is the 1-channel radiograph (timm in_chans=1) rather than a replicated RGB image, scaled to
  [0, 1] by ÷255 (``to_float``): the paper's "min–max normalization" to [0, 1] is read as the fixed
  0–255 → 0–1 scaling it contrasts with [0, 255]; a per-image min-max would differ only for images
  that do not span the full range.
- Augmentation magnitudes are not given (the paper names shifts, rotations, flips, shear, brightness
  and zoom): ours are translation 10%, rotation 10°, shear 5°, zoom 0.9–1.1, brightness ±20%,
  horizontal flip (``data_modules.transforms``, preset ``amm``).
- Class weights n_neg / n_pos of the training split weight the training loss only; validation loss
  (checkpoints, the plateau schedule, early stopping) is unweighted, as Keras's ``class_weight``
  (which the paper used) does.
- The full-size test caches the test and loc images alone at 1024² (``eval_size``); training and
  validation read the 256² cache.
- ``backbone_stage`` (ours, default -1 = the paper's last stage) cuts the backbone at an earlier
  stage: on small CPU-sized images the last stage's W is 3×3–4×4 and does not localize, while a
  stride-16 cut gives 8×8 at 128 px (the paper's 224 px densenet121 gives 7×7). Used by the tests.

At CPU scale (issue 32, ``results/amm_w_localization.md``): AMM learns cardiomegaly on every seed and
kernel family, but where W points is a property of the trajectory, not of the method: over 3 seeds × 2
CPU kernel families, W's maximum lands in the heart box for 0.20–0.88 of the box images at 8×8 and
0.30–0.76 at 16×16 (stride 8), against a 0.18 chance. Eq. 9's GWAP (ΣA/ΣW) rewards W only for the
relative weight it gives the heart's features, so a nearly flat W costs little loss; nothing in the paper
adds a term that would sharpen it, and none is added here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.amm_head import AMMHead, GAPHead
from ..models.encoders import TimmCNN
from ..optim import OptimizerRecipe
from .registry import register
from .classification import ClassificationMethod


@register("amm")
class AMM(ClassificationMethod):
    """Backbone -> AMM head. ``heatmaps`` = W, bilinearly upsampled to the input size."""

    fp32_modules = ("head",)  # the attention head and its classifier (cxrbench.precision)

    def __init__(self, backbone: str = "densenet121", lr: float = 1e-4, momentum: float = 0.9,
                 plateau_factor: float = 0.3, plateau_patience: int = 15, pretrained: bool = False,
                 class_weighted: bool = True, backbone_stage: int = -1, **kwargs):
        super().__init__(class_weighted=class_weighted, **kwargs)
        self.save_hyperparameters()
        self.backbone = TimmCNN(backbone, in_chans=1, stage=backbone_stage, pretrained=pretrained)
        self.head = self.make_head(self.backbone.out_dim)

    def make_head(self, channels: int):
        return AMMHead(channels, self.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.feature_map(images))[0]

    @torch.no_grad()
    def heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        w = self.head.weights(self.backbone.feature_map(images))
        return F.interpolate(w, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def optimizer_recipe(self) -> OptimizerRecipe:
        h = self.hparams
        return OptimizerRecipe("sgd", h.lr, momentum=h.momentum, schedule="plateau", plateau_factor=h.plateau_factor,
                               plateau_patience=h.plateau_patience, plateau_monitor="val/loss")


@register("gap")
class GAPBaseline(AMM):
    """The paper's base models (DenseNet121-GAP, …): same backbone and classifier, plain GAP, no map."""

    def make_head(self, channels: int):
        return GAPHead(channels, self.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.feature_map(images))

    def heatmaps(self, images: torch.Tensor) -> None:
        return None
