"""The pretraining baselines of CAMContrast's comparison (Tables 8–9): SupCE, SimCLR, SupCon.

Paper: ../shared/papers/004_724384b118fd035f.txt (CAMContrast), §4.1 "Baselines": random
initialisation (no pretraining: ``encoder_artifact`` left empty downstream), SimCLR, supervised
pretraining with cross-entropy (SupCE) and with the supervised contrastive loss (SupCon), each
on the coarse normal/abnormal labels of NIH ChestX-ray14 (``label_set: abnormal``), with the
5-level U-Net encoder, a SimCLR 2-layer projection head to 128 dimensions, τ = 0.05, SGD momentum
0.95, lr 1e-3, weight decay 1e-4, linear warm-up over 30% of the steps then cosine (§4.1).

Deviations, with reasons:
- Random crops of the whole image (the papers' plain variants). The "-crop" variants that Tables 8–9
  report are these same classes on the five fixed crops of the 448 image (``data_modules.NIHCrops``
  without heatmaps; configs ``benchmarks/camcontrast/configs/*_crop_nih.yaml``, rows ``simclr-crop`` etc. in
  ``benchmarks/camcontrast/paper.yaml``).
- Augmentations: ``contrastive`` preset (random resized crop 0.8–1, flip, rotation 30°, brightness
  and contrast jitter 0.4); the papers' random grayscale has no meaning on 1-channel radiographs.
- SupCE on a binary label uses one logit and BCE (the paper's CE over two classes is the same model
  up to a reparametrisation).
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import masked_bce, nt_xent, supcon
from .registry import register
from .pretraining import PretrainingMethod


def projection_head(dim: int, hidden: int | None = None, out: int = 128) -> nn.Sequential:
    """SimCLR's projection: Linear → ReLU → Linear (CAMContrast: 1024 → 1024 → 128)."""
    hidden = hidden or dim
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


@register("supce")
class SupCE(PretrainingMethod):
    """Supervised pretraining with cross-entropy on the DataModule's labels; the encoder is the product."""

    fp32_modules = ("head",)

    uses_labels = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = nn.Linear(self.encoder.out_dim, self.num_classes)

    def objective(self, batch):
        feats = self.encoder(self.image_views(batch)[:, 0])
        logits = self.head(feats)
        label = batch["label"]
        if self.task == "multiclass":
            loss = nn.functional.cross_entropy(logits, label.long())
        else:
            loss = masked_bce(logits, label)
        return loss, {"ce": loss.detach(), "_features": feats}


@register("simclr")
class SimCLR(PretrainingMethod):
    """SimCLR: two augmented views of each image, NT-Xent over the 2B views (no labels)."""

    contrasts_batch = True

    def __init__(self, tau: float = 0.05, proj_dim: int = 128, views: int = 2, **kwargs):
        super().__init__(views=views, **kwargs)
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = tau
        self.projector = projection_head(self.encoder.out_dim, out=proj_dim)

    def objective(self, batch):
        x = self.image_views(batch)
        b = len(x)
        feats = self.encoder(torch.cat([x[:, 0], x[:, 1]]))
        z = self.projector(feats)
        loss = nt_xent(z[:b], z[b:], self.tau)
        return loss, {"nt_xent": loss.detach(), "_features": feats[:b]}


@register("supcon")
class SupCon(PretrainingMethod):
    """Supervised contrastive pretraining: views of images with the same label are positives.

    Needs one label per image (binary or multi-class); an image whose label is unknown (NaN) is
    its own class, so only its other view is a positive.
    """

    contrasts_batch = True

    uses_labels = True

    def __init__(self, tau: float = 0.05, proj_dim: int = 128, views: int = 2, **kwargs):
        super().__init__(views=views, **kwargs)
        if self.task == "multilabel" and self.num_classes > 1:
            raise ValueError("SupCon needs one label per image (a binary or multi-class DataModule, e.g. NIH "
                             f"label_set: abnormal); this DataModule is multi-label with {self.num_classes} classes")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = tau
        self.projector = projection_head(self.encoder.out_dim, out=proj_dim)

    def image_labels(self, label: torch.Tensor) -> torch.Tensor:
        lab = label.reshape(len(label), -1)[:, 0].float()
        unknown = torch.isnan(lab)
        out = lab.nan_to_num(0).long()
        out[unknown] = -1 - torch.arange(int(unknown.sum()), device=lab.device)  # each its own class
        return out

    def objective(self, batch):
        x = self.image_views(batch)
        b, v = x.shape[:2]
        feats = self.encoder(x[:, :self.views].flatten(0, 1))
        z = self.projector(feats).reshape(b, self.views, -1)
        loss = supcon(z, self.image_labels(batch["label"]), self.tau)
        return loss, {"supcon": loss.detach(), "_features": feats.reshape(b, self.views, -1)[:, 0]}
