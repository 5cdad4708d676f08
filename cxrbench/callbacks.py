"""Lightning callbacks of cxrbench."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from .metrics.bootstrap import N_BOOT, interval, patient_resamples, run_boot
from .provenance import commit, data_provenance
from .recipe import data_identity, file_sha256, fingerprint
from .results import prediction_table, write_predictions, write_result


class WriteResult(L.Callback):
    """After ``test``, write the run's result record (``result.json``) that the leaderboards read, and
    beside it ``predictions.csv`` (every test image's index, image id, patient, labels and
    probabilities, or its per-image scores) with the record's patient-bootstrap CIs (``ci``).

    Args:
        task: the benchmark task the run belongs to (e.g. 'nih-cardiomegaly'); None (a config that names no
            writer, which ``cxrbench test`` gives one): ``<dataset>-<family>`` (``default_task``), e.g.
            'covidx-pretraining', a task no board shows.
        method: the leaderboard row's name (default: the module's registry name); a sweep sets its
            cell's method name, e.g. 'amm-densenet121', or 'simclr' for a probe of a SimCLR encoder.
        out_dir: folder of the record (default: the trainer's log_dir).
        run_id: defaults to the folder's name.
        scale: overrides the scale derived from the data (e.g. 'smoke').
        seed, fold: default to the run's global seed and the DataModule's fold (when it has folds).
        extra: more keys for the record (the runner adds ``resumed``: when the cell was resumed, and from which epoch).

    The record also says which experiment it is a sample of (``cxrbench.recipe``): ``recipe`` (the resolved
    config without seed, fraction, fold and paths, set by the CLI and the runner) with its ``fingerprint``,
    ``data_identity`` (dataset, twin spec or real, split seed) and ``checkpoint`` (the scored file's path
    and sha256, so a re-test of one checkpoint replaces its record on the boards instead of adding a seed),
    and ``artifacts``: each artifact the run consumed (path, sha256, producer run, commit and recipe).
    """

    recipe: dict | None = None

    def __init__(self, task: str | None = None, method: str | None = None, out_dir: str | None = None, run_id: str | None = None,
                 scale: str | None = None, seed: int | None = None, fold: int | None = None, extra: dict | None = None):
        self.task, self.method, self.out_dir, self.run_id, self.scale = task, method, out_dir, run_id, scale
        self.seed, self.fold, self.extra = seed, fold, dict(extra or {})

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        data = pl_module.data  # the data contract the DataModule handed the module
        if data is None:
            raise RuntimeError(f"WriteResult: {type(pl_module).__name__} was tested without a cxrbench DataModule "
                               "(no data contract): the record could not say which data it scored")
        check_finite(pl_module.test_predictions, type(pl_module).__name__)
        out = Path(self.out_dir or trainer.log_dir or ".")
        prov = data_provenance(data.root)
        if self.scale:
            prov["scale"] = self.scale
        prov["commit"] = commit()
        record = {
            "run_id": self.run_id or out.name,
            "method": self.method or pl_module.method_name,
            "module": type(pl_module).__name__,
            "task": self.task or default_task(pl_module),
            "family": pl_module.family,
            "seed": int(self.seed if self.seed is not None else os.environ.get("PL_GLOBAL_SEED", 0)),
            "fraction": float(data.fraction),
            "metrics": dict(pl_module.test_metrics),
            "provenance": prov,
            "curves": pl_module.test_curves,
            **self.extra,
        }
        if data.fold is not None:  # the contract has a fold under a cross-validation protocol only
            record["fold"] = int(self.fold if self.fold is not None else data.fold)
        if self.recipe is not None:
            record["recipe"] = {"fingerprint": fingerprint(self.recipe), "config": self.recipe}
        record["data_identity"] = data_identity(data)
        used = {**consumed_artifacts(pl_module), **record.get("artifacts", {})}
        if used:  # every artifact the run was built from: path, sha256, producer run (the sweep adds its needs)
            record["artifacts"] = used
        if trainer.ckpt_path and Path(trainer.ckpt_path).is_file():
            record["checkpoint"] = {"path": str(Path(trainer.ckpt_path).resolve()), "sha256": file_sha256(trainer.ckpt_path)}
        if pl_module.test_predictions:
            table = prediction_table(pl_module.test_predictions, data.images, list(pl_module.class_names))
            write_predictions(out, table)  # before the record: a finished record always has its predictions
            record["ci"] = run_ci(table)
        write_result(out, record)


def consumed_artifacts(pl_module) -> dict:
    """The artifacts a module was built from, by submodule (``encoder``, ``box_net``): each submodule loaded
    from an artifact carries its ``source_artifact`` (``cxrbench.artifacts.artifact_identity``)."""
    return {name or "model": m.source_artifact for name, m in pl_module.named_modules()
            if getattr(m, "source_artifact", None)}


def default_task(pl_module) -> str:
    """The task of a record whose config names none: its dataset and method family ('nih-pretraining')."""
    return f"{pl_module.data.dataset}-{pl_module.family}"


class ExportArtifacts(L.Callback):
    """After ``fit``, what a sweep cell exports, for a run of the per-method CLI: each kind of the method's
    ``artifacts`` (a pretraining's ``encoder``, stage 1's ``heatmaps``, the regressor's ``thorax_boxes``)
    from the kept weights (the ModelCheckpoint's best, else its last) into ``<log dir>/artifacts/``, with
    the producing run, seed and commit. A probe then takes it: ``--model.init_args.encoder_artifact PATH``."""

    def __init__(self, kinds: list[str] | None = None):
        self.kinds = kinds

    def on_fit_end(self, trainer, pl_module) -> None:
        import torch

        from .artifacts import artifact_path

        kinds = list(self.kinds if self.kinds is not None else getattr(pl_module, "artifacts", ()))
        if not kinds or not trainer.is_global_zero:
            return
        kept = trainer.checkpoint_callback
        path = (kept.best_model_path or kept.last_model_path) if kept is not None else ""
        if path:
            pl_module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        out = Path(trainer.log_dir or trainer.default_root_dir)
        producer = {"run_id": out.name, "run_dir": str(out.resolve()), "method": pl_module.method_name,
                    "seed": int(os.environ.get("PL_GLOBAL_SEED", 0)), "checkpoint": path or None, "commit": commit(),
                    "dataset_root": str(pl_module.data.root) if pl_module.data is not None else ""}
        stamps = [c for c in trainer.callbacks if isinstance(c, RecipeStamp)]
        if stamps:
            producer["recipe_fingerprint"] = stamps[0].fingerprint
        for kind in kinds:
            written = pl_module.export_artifact(kind, artifact_path(out, kind), producer)
            print(f"cxrbench: {kind} artifact written to {written}")


class RecipeStamp(L.Callback):
    """Writes the run's recipe fingerprint into every checkpoint (``cxrbench_recipe``), so that
    ``--ckpt_path best|last`` takes this config's checkpoint and never another config's in the same folder."""

    def __init__(self, fingerprint: str):
        self.fingerprint = fingerprint

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["cxrbench_recipe"] = {"fingerprint": self.fingerprint}


class DivergedRun(RuntimeError):
    pass


def check_finite(predictions: dict, who: str) -> None:
    """A run whose test outputs hold NaN or inf diverged, and one whose probabilities are one value for
    every image (no ranking: an AUC of 0.500 by construction) has collapsed: either raises here, before
    ``result.json`` exists, so it never reaches a board (an AUC over NaN or constant probabilities is a
    number, not a result)."""
    import numpy as np

    for split, arrays in (predictions or {}).items():
        for name, values in arrays.items():
            if name in ("index", "label", "threshold"):
                continue
            v = np.asarray(values, dtype=np.float64)
            bad = int((~np.isfinite(v)).any(axis=tuple(range(1, v.ndim))).sum()) if v.ndim > 1 else int((~np.isfinite(v)).sum())
            if bad and name in ("prob", "pred"):
                raise DivergedRun(f"{who}: {bad} of {len(v)} {split} images have a NaN or infinite {name}: the run "
                                  "diverged (check the learning rate and the loss curve); no result.json is written")
            if name == "prob" and len(v) > 1 and bool((np.ptp(v.reshape(len(v), -1), axis=0) == 0).all()):
                raise DivergedRun(f"{who}: all {len(v)} {split} images get the same probability for every class "
                                  f"({np.unique(v.reshape(len(v), -1)[0]).round(4).tolist()}): the model predicts a "
                                  "constant (collapsed or dead), which ranks nothing; no result.json is written")


class StopOnNonFiniteLoss(L.Callback):
    """A training loss that is NaN or infinite stops the run with ``DivergedRun``, naming the epoch and the
    first bad step, so nothing is exported, tested or written from it (a sweep cell then fails). Checked
    without a host sync on every step: a device flag collects the steps' verdicts, read every
    ``check_every`` steps and at each epoch's end (a NaN loss leaves NaN weights, so it persists), and
    agreed across processes so that every rank stops together."""

    def __init__(self, check_every: int = 25):
        self.check_every = int(check_every)
        self._first_bad = None

    def on_train_start(self, trainer, pl_module) -> None:
        import torch

        self._first_bad = torch.tensor(-1, device=pl_module.device)  # on every rank: each check is collective

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import torch

        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # a step the method skipped (None) has nothing to check
            bad = ~torch.isfinite(loss.detach()).all()
            step = torch.full_like(self._first_bad, trainer.global_step)
            self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)
        if (batch_idx + 1) % self.check_every == 0:
            self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer, pl_module)

    def _check(self, trainer, pl_module) -> None:
        if self._first_bad is None:
            return
        first = int(trainer.strategy.reduce(self._first_bad.float(), reduce_op="max"))  # -1 everywhere: all finite
        if first >= 0:
            raise DivergedRun(f"{type(pl_module).__name__}: the training loss became NaN or infinite by step {first} "
                              f"(epoch {trainer.current_epoch}): the run diverged (check the learning rate); it stops "
                              "here, and nothing is exported, tested or written from it")


def run_ci(table, n_boot: int = N_BOOT) -> dict:
    """95% patient-bootstrap CIs of the run's headline metrics on its test split."""
    test = table[table["split"] == "test"]
    out = {"resampling": "patients", "n_boot": n_boot}
    if test.empty:
        return out
    resamples = patient_resamples(test["patient_id"].to_numpy(), n_boot)
    probs = [c for c in test.columns if c.startswith("prob/")]
    if probs:
        labels = [f"label/{c[5:]}" for c in probs]
        out["auc/mean"] = list(interval(run_boot("auc", test[probs].to_numpy(float), test[labels].to_numpy(float), resamples)))
    if "dice" in test:
        out["dice/mean"] = list(interval(run_boot("mean", test["dice"].to_numpy(float), None, resamples)))
    return out


class WritePredictions(BasePredictionWriter):
    """``cxrbench predict``: every image's outputs, written once at the end into ``out_dir`` (default:
    the run's log folder; on N processes, rank 0 writes every process's share, each image once): ``predictions.csv`` (index, image, patient, ``prob/<class>`` or
    ``embedding/<k>``) and, for maps, ``<name>.npy`` (float16, [N, …], rows in ``index.npy`` order)."""

    def __init__(self, out_dir: str | None = None):
        super().__init__(write_interval="epoch")
        self.out_dir = out_dir

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        import numpy as np
        import torch

        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        merged = {k: torch.cat([b[k] for b in batches]) for k in batches[0]} if batches else {}
        if trainer.world_size > 1:  # every process predicted its share: rank 0 writes them all, once each
            import torch.distributed as dist

            from .metrics.store import _first_occurrence

            shares = [None] * trainer.world_size
            dist.all_gather_object(shares, merged)
            shares = [sh for sh in shares if sh]
            if not shares:
                return
            merged = {k: torch.cat([sh[k] for sh in shares]) for k in shares[0]}
            index, first = _first_occurrence(merged["index"])  # DistributedSampler's padding repeats images
            merged = {k: (index if k == "index" else v[first]) for k, v in merged.items()}
        if not trainer.is_global_zero or not merged:
            return
        out = Path(self.out_dir or trainer.log_dir or ".")
        out.mkdir(parents=True, exist_ok=True)
        vectors = {k: v.numpy() for k, v in merged.items() if k != "index" and v.ndim <= 2}
        table = prediction_table({"predict": {"index": merged["index"].numpy(), **vectors}},
                                 pl_module.data.images, list(pl_module.class_names))
        write_predictions(out, table)
        np.save(out / "index.npy", merged["index"].numpy())
        for name, value in merged.items():
            if value.ndim > 2:
                tmp = out / f".{name}.tmp.npy"
                np.save(tmp, value.numpy().astype(np.float16))
                os.replace(tmp, out / f"{name}.npy")


class WandbTestMedia(L.Callback):
    """At the end of ``test``, when a WandbLogger is attached: the ROC curves, a few heatmaps over their
    images with the true boxes (methods with heatmaps, on the ``loc`` split), and a table of per-sample
    predictions (the first ``max_rows``). Nothing happens without W&B."""

    def __init__(self, n_heatmaps: int = 8, max_rows: int = 2000):
        self.n_heatmaps, self.max_rows = n_heatmaps, max_rows

    def on_test_end(self, trainer, pl_module) -> None:
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or not trainer.is_global_zero:
            return
        import wandb

        media = {}
        for cls, pts in (pl_module.test_curves.get("roc") or {}).items():
            media[f"test/roc/{cls}"] = wandb.plot.line_series(xs=pts["fpr"], ys=[pts["tpr"]], keys=[cls],
                                                              title=f"ROC {cls}", xname="FPR")
        if pl_module.test_predictions and pl_module.data is not None:
            table = prediction_table(pl_module.test_predictions, pl_module.data.images,
                                     list(pl_module.class_names)).head(self.max_rows)
            media["test/predictions"] = wandb.Table(dataframe=table)
        overlays = self._heatmaps(trainer, pl_module, wandb)
        if overlays:
            media["test/heatmaps"] = overlays
        if media:
            loggers[0].experiment.log(media)

    def _heatmaps(self, trainer, pl_module, wandb) -> list:
        """Overlays of the ``loc`` images the method kept while it scored them (``loc_examples``)."""
        got = getattr(pl_module, "loc_examples", None) or {}
        if got.get("image") is None or not len(got["image"]):
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = []
        meta = pl_module.data.images if pl_module.data is not None else None
        for i in range(len(got["image"])):
            labels = got["box_labels"][i]
            k = int(labels[labels >= 0][0]) if (labels >= 0).any() else 0
            index = int(got["index"][i])
            row = meta.iloc[index] if meta is not None else {}
            image_id = row["image"] if "image" in row else Path(str(row.get("path", index))).name
            label = got["label"][i, k].item() if got["label"].ndim > 1 else float("nan")
            prob = float(got["prob"][i, k])
            fig, ax = plt.subplots(figsize=(3.4, 3.6))
            ax.imshow(got["image"][i, 0], cmap="gray")
            ax.imshow(got["map"][i, k], cmap="jet", alpha=0.35)
            drawn = False
            for (x0, y0, x1, y1), c in zip(got["boxes"][i].tolist(), labels.tolist()):
                if c == k:  # only the scored class's boxes: another finding's box is not this map's target
                    ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime",
                                               label=None if drawn else f"true {pl_module.class_names[k]} box"))
                    drawn = True
            if drawn:
                ax.legend(loc="lower right", fontsize=6)
            ax.set_title(f"{image_id}\n{pl_module.class_names[k]}: p={prob:.2f}, label={label:g}", fontsize=7)
            ax.axis("off")
            out.append(wandb.Image(fig, caption=f"{image_id} {pl_module.class_names[k]} p={prob:.2f} label={label:g}"))
            plt.close(fig)
        return out


class SpeedSettings(L.Callback):
    """GPU efficiency switches a config opts into (issue 33), under ``trainer.callbacks``. Each can change
    the numbers a little, so each is part of the recipe (a run with them is its own leaderboard row); the
    paper configs leave them off.

    - ``tf32``: ``True`` runs fp32 matmuls and cuDNN convolutions in TF32 on Ampere and later
      (``torch.set_float32_matmul_precision("high")``, ``cudnn.allow_tf32``); ``False`` keeps both in full
      fp32; ``None`` (default) leaves PyTorch's own defaults: fp32 matmuls, but TF32 cuDNN convolutions
      (``cudnn.allow_tf32`` is True in PyTorch) — so a CNN config "in fp32" already convolves in TF32 on
      an H100 unless ``tf32: false`` says otherwise. No CPU kernel uses TF32: on the CPU only the switches
      can be checked (tests/test_precision.py).
    - ``channels_last``: the model's 4-d weights in NHWC, which cuDNN's tensor-core convolutions prefer
      (a convolution takes the weight's layout when the input is plain NCHW); state dicts are unchanged.
    - ``compile``: every child module with parameters compiled in place (``nn.Module.compile``: its state
      dict keeps its keys, so checkpoints load with or without it), with ``compile_backend`` (``inductor``;
      the CPU test uses ``aot_eager``, which traces the same graphs without generating kernels).

    The process-wide switches are put back as they were when the run ends.
    """

    def __init__(self, tf32: bool | None = None, channels_last: bool = False, compile: bool = False,
                 compile_backend: str = "inductor"):
        self.tf32, self.channels_last, self.compile, self.compile_backend = tf32, channels_last, compile, compile_backend
        self._saved = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        import torch

        if self.tf32 is not None and self._saved is None:
            self._saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
            torch.set_float32_matmul_precision("high" if self.tf32 else "highest")
            torch.backends.cudnn.allow_tf32 = bool(self.tf32)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        import torch

        if self._saved is not None:
            torch.set_float32_matmul_precision(self._saved[0])
            torch.backends.cudnn.allow_tf32 = self._saved[1]
            self._saved = None

    def _apply(self, pl_module) -> None:
        """After the strategy has put the model on its device (the ``on_*_start`` hooks); idempotent."""
        import torch

        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile:
            for child in pl_module.children():
                if getattr(child, "_compiled_call_impl", None) is None and any(True for _ in child.parameters()):
                    child.compile(backend=self.compile_backend)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._apply(pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self._apply(pl_module)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._apply(pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._apply(pl_module)
