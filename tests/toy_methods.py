"""A toy classifier for runner tests: small enough that a cell is a few seconds."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from cxrbench.methods import register
from cxrbench.methods.classification import ClassificationMethod


def _encoder() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@register("toy")
class ToyClassifier(ClassificationMethod):

    def __init__(self, lr: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.encoder = _encoder()
        self.head = nn.Linear(8, self.num_classes)

    def forward(self, images):
        return self.head(self.encoder(images))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


@register("toy-bn")
class ToyBNClassifier(ToyClassifier):
    """The toy with BatchNorm: what a multi-process CPU cell must run (SyncBatchNorm is GPU-only)."""

    def __init__(self, lr: float = 0.01, **kwargs):
        super().__init__(lr=lr, **kwargs)
        self.encoder = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())


class SlowEpochs(L.Callback):
    """Makes every training epoch last at least ``seconds``: a cell whose length does not depend on the CPU."""

    def __init__(self, seconds: float = 0.5):
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module):
        import time

        time.sleep(self.seconds)


class PreemptOnce(L.Callback):
    """Sends this process SLURM's preemption signal (submitit's USR2) at the start of epoch ``at_epoch``
    of a run that did not resume: the requeue comes after a known epoch whatever the machine's speed,
    where a timer would cut a loaded machine's run before its first checkpoint."""

    def __init__(self, at_epoch: int = 3):
        self.at_epoch = at_epoch

    def on_train_epoch_start(self, trainer, pl_module):
        import os
        import signal

        if trainer.current_epoch == self.at_epoch and trainer.ckpt_path is None:
            os.kill(os.getpid(), signal.SIGUSR2)


class ToyLR(ToyClassifier):
    """A toy whose validation score peaks at ``best_lr`` (``val/score`` = −|log10(lr / best_lr)|) and whose
    training loss is NaN above ``diverge_above``: two of them with different ``best_lr`` are two encoders
    whose best learning rates differ, for the lr search's plumbing (tests/test_lr_search.py)."""

    monitor = ("val/score", "max")

    def __init__(self, lr: float = 0.01, best_lr: float = 0.01, diverge_above: float = float("inf"), **kwargs):
        super().__init__(lr=lr, **kwargs)
        self.save_hyperparameters()

    def configure_optimizers(self):  # every grid point trains alike: its lr only sets the score (and the NaN)
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.hparams.lr > self.hparams.diverge_above else loss

    def validation_step(self, batch, batch_idx):
        import math

        super().validation_step(batch, batch_idx)
        self.log("val/score", -abs(math.log10(self.hparams.lr / self.hparams.best_lr)), batch_size=len(batch["image"]))
