"""The contract every method family shares: what the DataModule must give, and what a test leaves.

Four families subclass ``Method`` (solo-learn's "base per kind of method", each kept small):

| family | module | accepts DataModule tasks | test leaves in ``test_metrics`` |
|---|---|---|---|
| ``ClassificationMethod`` | ``classification.py`` | multilabel, binary, multiclass | AUC, PR-AUC, operating point, IoU-accuracy |
| ``SegmentationMethod`` | ``segmentation.py`` | segmentation | per-image Dice / IoU / HD95 (empty = 1) |
| ``PretrainingMethod`` | ``pretraining.py`` | any (labels only where the method says) | nothing: it exports an encoder |
| encoder evaluation | ``evaluation.py`` | linear probe / fine-tune (classification), U-Net on an encoder (segmentation) | as its family |

``num_classes``, ``class_names`` and ``task`` are linked from the DataModule by the CLI, so a family
refuses a DataModule of the wrong kind when it is built, before any training step. Everything else a
method knows of its data is the ``DataContract`` the DataModule hands it in ``setup`` (``self.data``,
``data_modules.contract``): a method never reads the DataModule itself.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from data_modules.contract import DataContract
from data_modules.transforms import to_float

from ..artifacts import ArtifactError, save_encoder
from ..optim import OptimizerRecipe, build, recipe_from_hparams


class Method(L.LightningModule):
    """Base of every cxrbench method. ``TASKS``: the DataModule tasks this family accepts.

    ``method_name``: the registry name (``cxrbench.methods.METHODS``); a sweep may record its rows under
    another name (e.g. ``amm-densenet121``). ``monitor``: the validation quantity a checkpoint of this
    family is chosen by, and its mode, when the config names none.
    """

    method_name = "method"
    family = "method"
    TASKS: tuple[str, ...] = ()
    monitor: tuple[str, str] = ("val/loss", "min")
    #: artifact kinds ``cxrbench fit`` exports after training (``callbacks.ExportArtifacts``); none here
    artifacts: tuple[str, ...] = ()
    #: optional contract fields and doors this method cannot work without (checked when it is bound)
    data_needs: tuple[str, ...] = ()
    #: splits beyond test/shift/loc this method scores in the test loop (e.g. ``("val",)``)
    wants_test_splits: tuple[str, ...] = ()
    #: whether the loss contrasts the images of a batch (NT-Xent, SupCon): then each process needs >= 2
    contrasts_batch: bool = False
    #: submodules (dotted names) that run in fp32 outside autocast under a mixed precision
    #: (``trainer.precision: bf16-mixed``): the heads whose logits become scores. bf16 keeps 8 bits of
    #: mantissa, so bf16 logits tie across images and pull AUC towards 0.5; the losses then see fp32
    #: logits too (``cxrbench.precision``)
    fp32_modules: tuple[str, ...] = ()

    def __init__(self, num_classes: int = 1, class_names: list[str] | None = None, task: str = "binary"):
        super().__init__()
        if self.TASKS and task not in self.TASKS:
            raise ValueError(
                f"{type(self).__name__} is a {self.family} method: it needs a DataModule whose task is one of "
                f"{list(self.TASKS)}, but the DataModule gives task {task!r}. Pick the matching DataModule "
                "(e.g. SIIM/Lungs for segmentation, NIH/CheXpert/COVIDx for classification) or method.")
        self.num_classes, self.task = int(num_classes), task
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for num_classes={num_classes}")
        self.test_metrics: dict[str, float] = {}  # read by the result record (callbacks.WriteResult)
        self.test_curves: dict = {}
        # per evaluation split, per-sample arrays keyed by name ("index" + predictions / per-image scores):
        # written beside the record as predictions.csv, read by the leaderboard's bootstrap CIs
        self.test_predictions: dict[str, dict] = {}
        self.data: DataContract | None = None  # handed in by the DataModule (``bind_data``)

    def configure_model(self) -> None:
        """Lightning's hook before every stage: the ``fp32_modules`` set to run in fp32 (once)."""
        from ..precision import run_in_fp32

        for name in self.fp32_modules:
            run_in_fp32(self.get_submodule(name), f"{type(self).__name__}.{name}")

    def bind_data(self, contract: DataContract) -> None:
        """Called by the DataModule in its ``setup``, before this module's: the one door to the data."""
        contract.require(self.data_needs, type(self).__name__)
        self.data = contract

    # ---------------------------------------------------------------- optimisation (``cxrbench.optim``)
    def optimizer_recipe(self) -> OptimizerRecipe:
        """This method's paper recipe; by default the one its arguments name (optimizer, lr, momentum,
        nesterov, weight_decay, warmup_epochs, warmup_fraction), warm-up then cosine."""
        return recipe_from_hparams(self.hparams)

    def optimizer_groups(self) -> list[dict] | None:
        """Parameter groups where the paper splits them (e.g. STN's localisation lr); None: one group."""
        return None

    def configure_optimizers(self):
        return build(self, self.optimizer_recipe(), self.optimizer_groups())

    def predict_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ``cxrbench predict`` writes per image: a family's probabilities, maps or embeddings."""
        raise NotImplementedError(f"{type(self).__name__} has no prediction outputs")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        out = {k: v.detach().float().cpu() for k, v in self.predict_outputs(batch["image"]).items() if v is not None}
        return {"index": torch.as_tensor(batch["index"]).cpu(), **out}

    def split_name(self, dataloader_idx: int) -> str:
        """The evaluation split a test dataloader index stands for ("test", "shift", "loc", …)."""
        names = self.data.test_splits if self.data is not None else ("test",)
        return names[dataloader_idx] if dataloader_idx < len(names) else f"test{dataloader_idx}"

    def export_artifact(self, kind: str, path: Path, producer: dict | None = None) -> Path:
        """Write this method's artifact of ``kind`` (``cxrbench.artifacts.ARTIFACT_FILES``) to ``path``.

        The runner calls it after fit, on the weights the cell keeps, for every kind the cell's
        ``produces`` lists. Here: ``encoder`` for any method whose ``encoder`` is a registry encoder;
        a method exporting another kind (heatmaps, boxes) overrides this and calls ``super()`` otherwise.
        """
        from ..models.encoders import Encoder

        if kind == "encoder" and isinstance(getattr(self, "encoder", None), Encoder):
            return save_encoder(path, self.encoder, producer)
        raise ArtifactError(f"{type(self).__name__} does not produce a {kind!r} artifact")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Batch images travel as uint8 (a quarter of float32's bytes through the worker pipe and the
        host-to-device copy) and become float32 in [0, 1] here, on the device, for every method."""
        if isinstance(batch, dict) and "image" in batch:
            batch["image"] = to_float(batch["image"])
        return batch
