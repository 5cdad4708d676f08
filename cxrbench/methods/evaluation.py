"""Evaluating an encoder: linear probe, full fine-tune, and segmentation with a pretrained encoder.

Each takes its encoder either from an artifact (``encoder_artifact``: a pretraining cell's
``encoder.pt``, usually ``${needs.encoder}`` in a sweep) or, without one, builds ``encoder`` from the
registry at random initialisation — the ``random`` baseline of CAMContrast Tables 8–9.

Linear probe (lightly's benchmarks): the encoder is frozen. ``freeze='strict'`` (the class default)
also keeps it in eval mode for the whole fit, so BatchNorm uses and keeps its running statistics: the
probe measures the pretrained features and nothing else (every encoder tensor and BatchNorm buffer is
bit-identical after training; tested). ``freeze='bn_train'`` is CAMContrast's public code
(``train_utils.py``: ``model.train()`` over an encoder frozen by ``requires_grad=False``): BatchNorm
normalises with batch statistics and updates its running statistics during the probe, so they become
the probe's training images'. nih14-linear (CAMContrast Tables 8 and 12) runs ``bn_train``: under a
strict probe a random encoder keeps its initial statistics (0, 1), its pooled features hardly vary
across images and the Table 12 random row (61.62) cannot be reproduced; encoders pretrained on crops
likewise carry crop statistics into whole-image probing. The strict probe is kept as a labelled variant.
``freeze='none'`` is a full fine-tune (SS-CXR: class token → Linear, AdamW).

A strict probe computes each validation image's encoder features once, at the first validation, and
scores later validations from them (issue 33): its encoder, BatchNorm statistics and evaluation
transform never change during fit, and the validation batches come in the same order every epoch,
so the features, and every metric, are bit-identical to recomputing them (tested), at one encoder
pass over the validation split instead of one per epoch. ``bn_train`` and fine-tunes recompute them
(their encoders' outputs change).
"""

from __future__ import annotations

import torch
from torch import nn

from ..artifacts import make_encoder
from ..models.decoders import UNet
from ..models.encoders import Encoder
from ..optim import OPTIMIZERS
from .registry import register
from .classification import ClassificationMethod
from .segmentation import SegmentationMethod

FREEZE = ("strict", "bn_train", "none")


class EncoderClassifier(ClassificationMethod):
    """Encoder → pooled features → Linear, with the encoder frozen (probe) or trained (fine-tune).

    Args:
        encoder, encoder_kwargs: the registry encoder built when no artifact is given (random init).
        encoder_artifact: path of an encoder artifact (its architecture wins over ``encoder``).
        freeze: 'strict' (frozen, eval mode), 'bn_train' (frozen, BatchNorm in train mode), 'none'.
        optimizer, lr, momentum, nesterov, weight_decay, warmup_epochs: cosine schedule after warm-up.
    """

    fp32_modules = ("head",)

    method_name = "encoder-classifier"

    def __init__(self, encoder: str = "unet", encoder_kwargs: dict | None = None, encoder_artifact: str | None = None,
                 freeze: str = "strict", optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
                 nesterov: bool = True, weight_decay: float = 0.0, warmup_epochs: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if freeze not in FREEZE:
            raise ValueError(f"freeze must be one of {FREEZE}, got {freeze!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.save_hyperparameters()
        self.encoder = make_encoder(encoder, encoder_kwargs, encoder_artifact, type(self).__name__)
        self.head = nn.Linear(self.encoder.out_dim, self.num_classes)
        self.freeze = freeze
        self._validation_features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # batch -> (index, features)
        if freeze != "none":
            self.encoder.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True):
        """Lightning switches the whole module to train mode around validation; a strict probe's
        encoder stays in eval mode regardless, so its BatchNorm statistics never move."""
        super().train(mode)
        if self.freeze == "strict":
            self.encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.freeze == "none":
            return self.head(self.encoder(images))
        with torch.no_grad():
            feats = self.encoder(images)
        return self.head(feats)

    #: a strict probe keeps its validation features (class attribute: tests switch it off to compare)
    keep_validation_features = True

    @staticmethod
    def encodes_validation_once(init_args: dict) -> bool:
        """Whether a probe of these arguments encodes its validation split once per fit (the budget's rule)."""
        return EncoderClassifier.keep_validation_features and init_args.get("freeze", "strict") == "strict"

    def validation_logits(self, batch, batch_idx: int) -> torch.Tensor:
        if self.freeze != "strict" or not self.keep_validation_features:
            return super().validation_logits(batch, batch_idx)
        index = torch.as_tensor(batch["index"], device=self.device)
        kept = self._validation_features.get(batch_idx)
        if kept is None or not torch.equal(kept[0], index):  # a batch not seen, or other images: encode it
            with torch.no_grad():
                kept = (index, self.encoder(batch["image"]))
            self._validation_features[batch_idx] = kept
        return self.head(kept[1])

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._validation_features.clear()  # a resumed or re-fitted module keeps nothing of an earlier fit



@register("linear")
class LinearProbe(EncoderClassifier):
    """Linear evaluation (CAMContrast §4.2: SGD lr 0.1, Nesterov momentum 0.9, no weight decay, cosine)."""


@register("finetune")
class FineTune(EncoderClassifier):
    """Full fine-tune of an encoder (SS-CXR: class token → Linear, AdamW lr 5e-4, weight decay 0.05)."""

    def __init__(self, freeze: str = "none", optimizer: str = "adamw", lr: float = 5e-4, weight_decay: float = 0.05,
                 **kwargs):
        super().__init__(freeze=freeze, optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)


@register("unet")
class EncoderSegmenter(SegmentationMethod):
    """A U-Net on a registry CNN encoder (pretrained from an artifact, or random init), fully trained.

    CAMContrast §4.2 (SIIM): the whole U-Net fine-tuned with the Dice loss, SGD lr 0.01, Nesterov
    momentum 0.9, weight decay 1e-5, cosine. ViT encoders go to UNETR instead (refused here).
    """

    fp32_modules = ("net.decoder.head",)

    def __init__(self, encoder: str = "unet", encoder_kwargs: dict | None = None, encoder_artifact: str | None = None,
                 optimizer: str = "sgd", lr: float = 0.01, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 1e-5, warmup_epochs: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.save_hyperparameters()
        enc = make_encoder(encoder, encoder_kwargs, encoder_artifact, type(self).__name__, expect_kind="cnn")
        self.net = UNet(enc, self.num_classes)

    @property
    def encoder(self) -> Encoder:
        return self.net.encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

