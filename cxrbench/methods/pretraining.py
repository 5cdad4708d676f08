"""The pretraining family: learn an encoder, validated on its own loss, exported as an artifact.

A method subclasses ``PretrainingMethod`` and implements ``objective(batch) -> (loss, logs)``. The
base owns the registry encoder, the optimizer (SGD or AdamW, warm-up + cosine), train/val loss
logging and an optional online linear probe (solo-learn's): a linear head on the *detached* pooled
features of the first view, trained beside the objective with the DataModule's labels, its
validation AUC logged as ``val/online_auc`` — a running sign that the features carry the labels,
never a result (results come from the downstream cells).

Batches: ``image`` is [B, 1, H, W], or [B, V, 1, H, W] when the DataModule gives ``views`` > 1.
Labels are read only by methods with ``uses_labels`` (SupCE, SupCon) and by the online probe.
After fit, the runner writes ``encoder`` artifacts from the kept weights (``Method.export_artifact``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..losses import masked_bce
from ..metrics import SampleStore, auc
from ..models.encoders import build_encoder
from .base import Method
from ..optim import OPTIMIZERS


class PretrainingMethod(Method):
    """Base of encoder pretraining.

    Args:
        encoder, encoder_kwargs: the registry encoder to train (``cxrbench.models.encoders``).
        views: how many views per image the objective needs (checked against the batch).
        online_probe: train a linear head on detached features beside the objective (needs labels).
        optimizer, lr, momentum, nesterov, weight_decay, warmup_epochs / warmup_fraction: the schedule.
    """

    #: what ``cxrbench fit`` exports after training (``callbacks.ExportArtifacts``), as a sweep cell's ``produces``
    artifacts: tuple[str, ...] = ("encoder",)

    method_name = "pretraining"
    family = "pretraining"
    TASKS = ()  # any DataModule: labels are optional
    monitor = ("val/loss", "min")
    uses_labels = False

    def __init__(self, encoder: str = "unet", encoder_kwargs: dict | None = None, views: int = 1,
                 online_probe: bool = False, optimizer: str = "sgd", lr: float = 1e-3, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 1e-4, warmup_epochs: float = 0.0,
                 warmup_fraction: float | None = None, num_classes: int = 1, class_names: list[str] | None = None,
                 task: str = "binary"):
        super().__init__(num_classes, class_names, task)
        self.save_hyperparameters()  # from the base: a subclass's own arguments are collected too
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if self.uses_labels and task == "segmentation":
            raise ValueError(f"{type(self).__name__} learns from image labels; a segmentation DataModule has none")
        self.views = int(views)
        self.encoder = build_encoder(encoder, **(encoder_kwargs or {}))
        self.probe = nn.Linear(self.encoder.out_dim, self.num_classes) if online_probe else None
        self.probe_store = SampleStore(("preds", "target"))

    # ---------------------------------------------------------------- to implement
    def objective(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    # ---------------------------------------------------------------- shared
    def image_views(self, batch) -> torch.Tensor:
        """The batch's views as [B, V, 1, H, W], refusing a batch with fewer views than the method needs."""
        x = batch["image"]
        x = x[:, None] if x.ndim == 4 else x
        if x.shape[1] < self.views:
            raise ValueError(f"{type(self).__name__} needs {self.views} views per image; the batch has {x.shape[1]}: "
                             f"set the DataModule's views: {self.views}")
        return x

    def predict_outputs(self, images: torch.Tensor) -> dict:
        """The encoder's pooled features (of the first view when the batch has several)."""
        return {"embedding": self.encoder(images[:, 0] if images.ndim == 5 else images)}

    def _probe_logits(self, batch, feats: torch.Tensor | None = None):
        if self.probe is None:
            return None
        if feats is None:
            with torch.no_grad():
                feats = self.encoder(self.image_views(batch)[:, 0])
        return self.probe(feats.detach())

    def _probe_loss(self, logits, label):
        if self.task == "multiclass":
            return nn.functional.cross_entropy(logits, label.long())
        return masked_bce(logits, label)

    def training_step(self, batch, batch_idx):
        loss, logs = self.objective(batch)
        n = len(batch["image"])
        probe = self._probe_logits(batch, logs.pop("_features", None))
        if probe is not None:
            probe_loss = self._probe_loss(probe, batch["label"])
            logs["online_loss"] = probe_loss
            loss = loss + probe_loss  # the probe's gradient never reaches the encoder (detached features)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, logs = self.objective(batch)
        probe = self._probe_logits(batch, logs.pop("_features", None))
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["image"]), sync_dist=True)
        if probe is not None:
            label = batch["label"]
            if self.task == "multiclass":
                preds, target = probe.softmax(-1), nn.functional.one_hot(label.long(), self.num_classes).float()
            else:
                preds, target = probe.sigmoid(), label.float()
            self.probe_store.update(batch["index"], preds=preds.float(), target=target)

    def on_validation_epoch_end(self):
        got = self.probe_store.compute()
        self.probe_store.reset()
        if self.probe is not None and len(got["index"]):
            value = auc(got["preds"].double().cpu(), got["target"].double().cpu(), self.class_names)["mean"]
            self.log("val/online_auc", 0.0 if math.isnan(value) else value)

