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

Test (``cxrbench test`` of a pretraining config, so that every family leaves a record): the objective on
each test split where its batches carry what it needs (``test_objective``: a one-view test split gives
no SimCLR pair, and CAMContrast's heatmaps cover train+val only), as ``loss`` / ``<split>/loss``; the
online probe's AUC (``online_auc/mean``) when there is a probe; and per image (``predictions.csv``) the
pooled feature's L2 norm (``feature_norm``: identical norms over a split are a sign of a collapsed
encoder) and the probe's probabilities (``online_prob/<class>``). Never a board row: a pretraining's
result is its downstream cells'. Under DDP the test ``loss`` includes the distributed sampler's padded
repeats (at most N − 1 images): removing them would make the processes' last batches unequal, which
the gathered contrastive losses cannot take; the per-image arrays and the probe's AUC do not count them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from lightning.pytorch.utilities import rank_zero_warn

from ..losses import masked_bce
from torchmetrics import MeanMetric

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
        self.test_losses = nn.ModuleDict()  # split -> MeanMetric of the test objective (DDP-reduced)
        self.test_stores = nn.ModuleDict()  # split -> per-image feature norm (and probe outputs)

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
        n = len(batch["image"])
        if n < 2 and self.contrasts_batch:
            # An epoch's last batch can hold one image per process (the loader keeps short batches): nothing
            # to contrast, and the projector's BatchNorm cannot normalise one sample. A zero loss on every
            # parameter instead: Lightning refuses a skipped step (None) under DDP, and the distributed
            # sampler pads the processes' lists to one length, so every process meets this batch at once.
            # Its gradients are zero; momentum and weight decay still step. The public code drops the
            # short batch (drop_last); ours keeps the loaders the same for every family.
            rank_zero_warn(f"{type(self).__name__}: a training batch of {n} image(s) per process steps with a zero "
                           "loss (nothing to contrast)")
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        loss, logs = self.objective(batch)
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

    # ---------------------------------------------------------------- test (a record, never a board row)
    def test_objective(self, batch) -> torch.Tensor | None:
        """The objective on a test batch, or None where the batch cannot give it (fewer views than the
        method needs). A method whose objective needs more than views overrides this."""
        x = batch["image"]
        if (1 if x.ndim == 4 else x.shape[1]) < self.views:
            return None
        return self.objective(batch)[0]

    def _test_store(self, split: str) -> SampleStore:
        if split not in self.test_stores:
            fields = ("feature_norm", "online_prob", "label") if self.probe is not None else ("feature_norm",)
            self.test_stores[split] = SampleStore(fields).to(self.device)
            self.test_losses[split] = MeanMetric().to(self.device)
        return self.test_stores[split]

    def on_test_epoch_start(self) -> None:
        for m in (*self.test_stores.values(), *self.test_losses.values()):
            m.reset()

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = self.split_name(dataloader_idx)
        store = self._test_store(split)
        loss = self.test_objective(batch)
        if loss is not None:
            self.test_losses[split].update(loss.detach().float(), weight=len(batch["image"]))
        images = batch["image"][:, 0] if batch["image"].ndim == 5 else batch["image"]
        feats = self.encoder(images)
        got = {"feature_norm": feats.float().norm(dim=1)}
        if self.probe is not None:
            logits = self.probe(feats)
            got["online_prob"] = logits.softmax(-1) if self.task == "multiclass" else logits.sigmoid()
            label = batch["label"]
            got["label"] = (nn.functional.one_hot(label.long(), self.num_classes).float()
                            if self.task == "multiclass" else label.float().reshape(len(label), -1))
        store.update(batch["index"], **{k: v.float() for k, v in got.items()})

    def on_test_epoch_end(self):
        metrics, predictions = {}, {}
        for split, store in self.test_stores.items():
            prefix = "" if split == "test" else f"{split}/"
            got = store.compute()
            if self.test_losses[split].update_count:  # only splits whose batches gave the objective
                metrics[f"{prefix}loss"] = float(self.test_losses[split].compute())
            if self.probe is not None and len(got["index"]):
                value = auc(got["online_prob"].double().cpu(), got["label"].double().cpu(), self.class_names)["mean"]
                metrics[f"{prefix}online_auc/mean"] = value
            predictions[split] = {k: v.cpu().double().numpy() if k != "index" else v.cpu().numpy()
                                  for k, v in got.items()}
        self.test_metrics, self.test_predictions = metrics, predictions
        for k, v in metrics.items():
            self.log(f"test/{k}", v)
