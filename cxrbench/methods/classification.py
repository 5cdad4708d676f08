"""The classification family: loss with unknown labels, evaluation, localization.

A method subclasses ``ClassificationMethod`` and implements ``forward(images) -> logits``; if it yields heatmaps
(``heatmaps(images) -> [B, K, H, W]``), it is also scored on the DataModule's ``loc`` split by the
shared IoU-accuracy. Evaluation is identical for every method:

- val: loss and mean AUC (``val/auc``) each epoch;
- test: one SampleStore per evaluation split ("test", "shift", …) -> per-class AUC, PR-AUC, and for
  binary tasks the operating point chosen on the validation split (``threshold``) applied to test;
  "loc" -> IoU-accuracy at T = 0.1 … 0.7 and the number of boxes each (image, class) map offered
  (``loc/boxes_per_image``; heatmap → boxes: ``localization.boxes``, min-max, threshold
  ``loc_threshold``, every 8-connected component one box, the best IoU counts). The flat dict is ``self.test_metrics`` (what the result
  record and the leaderboards read), every value is also logged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..localization import THRESHOLDS, best_iou_per_class, heatmap_to_boxes, iou_accuracy
from ..losses import masked_bce
from ..metrics import MetricInputError, SampleStore, auc, confusion_rates, pr_auc, roc_points, threshold_at_recall, weighted_report
from .base import Method

THRESHOLD_RULES = ("val_youden", "val_f1", "fixed")


class ClassificationMethod(Method):
    """Base of the classification methods.

    Args:
        num_classes, class_names, task: linked from the DataModule by the CLI.
        threshold: operating point of binary tasks: 'val_youden', 'val_f1', 'val_recall:0.95'
            (chosen on the validation split, applied to every evaluation split), 'test_recall:0.95' (the
            threshold reaching that recall on each scored split itself: an oracle operating point that
            fixes recall exactly, for comparing with a paper that reports rates at a fixed recall
            without saying where it was set; never deployable) or 'fixed:0.5'.
        loc_threshold: heatmap level (after min-max) that separates boxes (Wang et al. 2017).
        class_weighted: weight positives by n_neg/n_pos of the training split (AMM's class weights).
    """

    method_name = "classification"
    family = "classification"
    TASKS = ("multilabel", "binary", "multiclass")
    monitor = ("val/auc", "max")

    def __init__(self, num_classes: int = 1, class_names: list[str] | None = None, task: str = "binary",
                 threshold: str = "val_youden", loc_threshold: float = 0.5, class_weighted: bool = False):
        super().__init__(num_classes, class_names, task)
        if not (threshold.startswith(("val_recall:", "test_recall:", "fixed:")) or threshold in ("val_youden", "val_f1")):
            raise ValueError(f"threshold must be val_youden, val_f1, val_recall:R, test_recall:R or fixed:T; got {threshold!r}")
        if threshold.startswith(("val_recall:", "test_recall:")):
            try:
                recall = float(threshold.split(":", 1)[1])
            except ValueError:
                recall = math.nan
            if not 0 < recall <= 1:
                raise ValueError(f"threshold {threshold!r}: the recall after ':' must be in (0, 1], e.g. val_recall:0.95")
        if not 0 < loc_threshold < 1:
            raise ValueError(f"loc_threshold must be in (0, 1), got {loc_threshold}")
        self.threshold_rule, self.loc_threshold, self.class_weighted = threshold, loc_threshold, class_weighted
        self.register_buffer("pos_weight", torch.ones(num_classes), persistent=True)
        self.val_store = SampleStore(("preds", "target"))
        self.loc_examples: dict = {}  # a few loc images with their maps, for the reporting layer
        self.eval_stores = torch.nn.ModuleDict()

    # ---------------------------------------------------------------- to implement
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def heatmaps(self, images: torch.Tensor) -> torch.Tensor | None:
        """[B, K, H, W] per-class maps at the image's size, or None for a method without maps."""
        return None

    def batch_logits(self, batch: dict) -> torch.Tensor:
        """The logits of a batch in every step: ``forward`` of its images, unless a method also reads
        other fields of the batch (RGT with oracle boxes)."""
        return self(batch["image"])

    # ---------------------------------------------------------------- loss and probabilities
    @property
    def wants_test_splits(self) -> tuple[str, ...]:
        """A binary task's operating point chosen on the validation split: its images are scored in the
        test loop too (with the weights under test), so the choice is Lightning's loop, DDP included."""
        return ("val",) if self.num_classes == 1 and self.task != "multiclass" and self.threshold_rule.startswith("val_") else ()

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.class_weighted and self.data is not None and self.task != "multiclass":
            pos, neg = np.asarray(self.data.train_positives, np.float64), np.asarray(self.data.train_negatives, np.float64)
            self.pos_weight.copy_(torch.as_tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)))

    def loss(self, logits: torch.Tensor, label: torch.Tensor, weighted: bool = True) -> torch.Tensor:
        """The training loss; ``weighted=False`` drops the class weights (validation: Keras's
        ``class_weight``, which AMM used, weights the training loss only)."""
        if self.task == "multiclass":
            return F.cross_entropy(logits, label.long())
        return masked_bce(logits, label, self.pos_weight if weighted else None)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """In float64: in float32 every logit above ~17 is a sigmoid of exactly 1.0, and a confident model's
        positives tie with each other, collapsing its AUC toward 0.5."""
        logits = logits.double() if logits.device.type != "mps" else logits.float()
        return logits.softmax(-1) if self.task == "multiclass" else logits.sigmoid()

    def predict_outputs(self, images: torch.Tensor) -> dict:
        """Class probabilities, and the class heatmaps where the method has them."""
        return {"prob": self.probabilities(self(images)), "heatmap": self.heatmaps(images)}

    def _targets(self, label: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            return F.one_hot(label.long(), self.num_classes).float()
        return label.float()

    # ---------------------------------------------------------------- steps
    def training_step(self, batch, batch_idx):
        loss = self.loss(self.batch_logits(batch), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def validation_logits(self, batch, batch_idx: int) -> torch.Tensor:
        """The logits a validation batch is scored by (a strict probe reuses its frozen features)."""
        return self.batch_logits(batch)

    def validation_step(self, batch, batch_idx):
        logits = self.validation_logits(batch, batch_idx)
        self.log("val/loss", self.loss(logits, batch["label"], weighted=False), prog_bar=True, batch_size=len(logits),
                 sync_dist=True)
        self.val_store.update(batch["index"], preds=self.probabilities(logits),
                              target=self._targets(batch["label"]))

    def on_validation_epoch_end(self):
        got = self.val_store.compute()
        self.val_store.reset()
        if len(got["index"]):
            value = auc(got["preds"], got["target"], self.class_names)["mean"]
            self.log("val/auc", 0.0 if math.isnan(value) else value, prog_bar=True)


    def _store(self, name: str, fields) -> SampleStore:
        if name not in self.eval_stores:
            self.eval_stores[name] = SampleStore(fields).to(self.device)
        return self.eval_stores[name]

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = self.split_name(dataloader_idx)
        if split == "loc":
            self._localize(batch)
            return
        logits = self.batch_logits(batch)
        self._store(split, ("preds", "target")).update(batch["index"], preds=self.probabilities(logits),
                                                       target=self._targets(batch["label"]))

    @torch.no_grad()
    def _localize(self, batch) -> None:
        maps = self.heatmaps(batch["image"])
        if maps is None:
            return
        store = self._store("loc", ("iou", "n_boxes"))  # created on every rank, even one without box images
        self._keep_loc_examples(batch, maps)
        keys, ious, counts = [], [], []
        for i, (gt, gl) in enumerate(zip(batch["boxes"], batch["box_labels"])):
            preds = {c: torch.as_tensor(heatmap_to_boxes(maps[i, c].float().cpu().numpy(), self.loc_threshold))
                     for c in torch.unique(gl).tolist() if c >= 0}
            for c, v in best_iou_per_class(gt.cpu(), gl.cpu(), preds).items():
                keys.append(int(batch["index"][i]) * self.num_classes + c)  # one key per (image, class)
                ious.append(v)
                counts.append(len(preds[c]))
        # every batch updates, an empty one too: a process whose loc images hold no box of the task's classes
        # then gathers typed empty tensors (torchmetrics fills a never-updated list state with float32,
        # which gloo cannot gather beside another process's int64 index)
        store.update(torch.tensor(keys, dtype=torch.long), iou=torch.tensor(ious, dtype=torch.float64),
                     n_boxes=torch.tensor(counts, dtype=torch.float64))

    def on_test_start(self) -> None:
        self.loc_examples = {}  # this test run's, not an earlier one's

    def _keep_loc_examples(self, batch, maps: torch.Tensor, n: int = 8) -> None:
        """The first ``n`` images of the ``loc`` split with their maps, boxes and probabilities, for the
        reporting layer's overlays (``callbacks.WandbTestMedia``): kept here, so nothing re-reads the data."""
        have = len(self.loc_examples.get("image", ()))
        k = min(n - have, len(maps))
        if k <= 0:
            return
        head = {key: v[:k] for key, v in batch.items() if isinstance(v, (torch.Tensor, list))}
        new = {"image": batch["image"][:k], "map": maps[:k], "prob": self.probabilities(self.batch_logits(head)),
               "index": torch.as_tensor(batch["index"][:k]),
               "label": batch["label"][:k] if "label" in batch else torch.full((k, self.num_classes), float("nan"))}
        for key, v in new.items():
            v = v.detach().float().cpu() if key != "index" else v.cpu()
            self.loc_examples[key] = torch.cat([self.loc_examples[key], v]) if key in self.loc_examples else v
        for key in ("boxes", "box_labels"):
            self.loc_examples.setdefault(key, []).extend(t.cpu() for t in batch[key][:k])

    # ---------------------------------------------------------------- test metrics
    def choose_threshold(self, val: dict | None = None) -> float:
        """The operating point: fixed, or chosen on ``val`` (the validation split's store, scored in the
        test loop: ``wants_test_splits``)."""
        rule = self.threshold_rule
        if rule.startswith("fixed:"):
            return float(rule.split(":", 1)[1])
        if val is None or not len(val["index"]):
            raise RuntimeError(f"{type(self).__name__}: threshold {rule!r} is chosen on the validation split, but the "
                               "test loop scored no validation image: test it on a cxrbench DataModule (which adds "
                               "the 'val' split to the test loaders), or set threshold fixed:T")
        p, t = val["preds"][:, 0].double().cpu(), val["target"][:, 0].double().cpu()
        if rule.startswith("val_recall:"):
            return threshold_at_recall(p, t, float(rule.split(":", 1)[1]))
        candidates = torch.unique(p)
        best, best_score = 0.5, -math.inf
        for thr in candidates.tolist():
            r = confusion_rates(p, t, thr)
            score = (r["tpr"] - r["fpr"]) if rule == "val_youden" else weighted_report(p, t, thr)["weighted"]["f1"]
            if not math.isnan(score) and score > best_score:
                best, best_score = thr, score
        return best

    def on_test_epoch_end(self):
        out: dict[str, float] = {}
        curves: dict = {}
        predictions: dict = {}
        threshold = None
        val = None
        if "val" in self.eval_stores:  # scored only for the operating point: not a result of the run
            val = self.eval_stores["val"].compute()
            self.eval_stores["val"].reset()
        for split, store in self.eval_stores.items():
            if split == "val":
                continue
            got = store.compute()
            store.reset()
            if split == "loc":
                n = self.num_classes
                acc = iou_accuracy((got["index"] % n).cpu().numpy(), got["iou"].cpu().numpy(), self.class_names)
                for t in THRESHOLDS:
                    out[f"iou_acc@{t}/mean"] = acc[t]["mean"]
                    for c, v in acc[t]["per_class"].items():
                        out[f"iou_acc@{t}/{c}"] = v
                out["loc/n_pairs"] = float(len(got["index"]))
                # IoU-accuracy takes the best of a class's boxes: a map cut into many boxes must not look
                # better than it is, so the boxes offered per (image, class) stand beside it.
                nb = got["n_boxes"].double()
                out["loc/boxes_per_image"] = float(nb.mean()) if len(nb) else math.nan
                out["loc/boxes_per_image_max"] = float(nb.max()) if len(nb) else math.nan
                continue
            prefix = "" if split == "test" else f"{split}/"
            p, t = got["preds"].double().cpu(), got["target"].double().cpu()
            predictions[split] = {"index": got["index"].cpu().numpy(), "prob": p.numpy(), "label": t.numpy()}
            a, pa = auc(p, t, self.class_names), pr_auc(p, t, self.class_names)
            out[f"{prefix}auc/mean"], out[f"{prefix}pr_auc/mean"] = a["mean"], pa["mean"]
            out[f"{prefix}n_images"] = float(len(p))
            for c in self.class_names:
                out[f"{prefix}auc/{c}"], out[f"{prefix}pr_auc/{c}"] = a["per_class"][c], pa["per_class"][c]
            if self.task == "multiclass":
                out[f"{prefix}accuracy"] = float((p.argmax(1) == t.argmax(1)).double().mean())
                predictions[split]["pred"] = F.one_hot(p.argmax(1), self.num_classes).double().numpy()
            elif self.num_classes == 1:
                if self.threshold_rule.startswith("test_recall:"):  # each split its own: recall fixed on it
                    try:
                        here = threshold_at_recall(p[:, 0], t[:, 0], float(self.threshold_rule.split(":", 1)[1]))
                    except MetricInputError:  # a split without positives has no recall to fix: no rates
                        out[f"{prefix}threshold"] = math.nan
                        continue
                else:
                    threshold = self.choose_threshold(val) if threshold is None else threshold
                    here = threshold
                rates = confusion_rates(p, t, here)
                rep = weighted_report(p, t, here)
                out[f"{prefix}threshold"] = here
                predictions[split]["pred"] = (p >= here).double().numpy()  # the operating point's decision
                predictions[split]["threshold"] = np.full(len(p), here)
                for k in ("tpr", "fpr", "tnr", "fnr", "precision", "recall", "f1", "accuracy"):
                    out[f"{prefix}{k}"] = rates[k]
                for k in ("precision", "recall", "f1"):
                    out[f"{prefix}{k}/weighted"] = rep["weighted"][k]
                if split == "test":
                    curves.setdefault("roc", {})[self.class_names[0]] = roc_points(p, t)
        self.test_metrics, self.test_curves, self.test_predictions = out, curves, predictions
        for k, v in out.items():
            if not math.isnan(v):
                self.log(f"test/{k}", v)
