"""Run one cell in this process: fit (resuming from its last checkpoint), export its artifacts, test.

    python -m cxrbench.runner.cell RUN_DIR [--devices N]

The process holds the cell's lock (``RUN_DIR/.lock``) throughout: a second launcher on the same
spec gets exit status 75 and skips the cell. RUN_DIR holds ``config.yaml`` (the resolved LightningCLI config, artifact paths absolute) and
``cell.json`` (task, method, seed, fraction, fold, needs, produces, run id), both written by the
launcher. Every step is idempotent:

0. what an interrupted earlier process of the cell left is removed (``resume.remove_litter``: temporaries
   of dead writers, checkpoints cut short);
1. the artifacts the cell needs are checked before anything is built (a clear error names them);
2. fit, resumed from the newest readable ``checkpoints/last*.ckpt`` (``weights_only=True``; unreadable
   ones moved aside), with the RNG states and the earlier rows of ``metrics.csv`` kept
   (``resume.py``); each resume is recorded in ``resumes.json`` and the result; without a configured
   ModelCheckpoint, one watches the method family's own monitor (pretraining: ``val/loss``;
   classification: ``val/auc``; segmentation: ``val/dice``);
3. ``model.ckpt`` = the kept checkpoint; each kind in ``produces`` exported from it into
   ``artifacts/`` (atomically); ``fit_done.json``;
4. with a task: ``trainer.test`` on ``model.ckpt`` → ``result.json`` (atomically). A cell without a
   task is done when its artifacts are written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ..files import atomic_write_text

from ..artifacts import ArtifactError, artifact_path
from ..callbacks import DivergedRun, WriteResult
from ..files import describe_os_error, writing
from ..results import RESULT_FILE
from ..wandb_names import WandbNameError, check_wandb_env
from .resume import (BUSY_EXIT, CellBusy, CellLock, FlushOnCheckpoint, ResumableCSVLogger, RNGState,
                     newest_readable_checkpoint, remove_litter, resumed_step)


def wandb_config(meta: dict, config: dict) -> dict:
    """What a W&B run should say about itself: the benchmark task (``benchmark_task``: Lightning logs the
    model's hyperparameters into the same config, whose ``task`` is the label kind), the cell, its data and
    trainer arguments, the twin spec (so smoke and paper runs cannot be mistaken), the code and packages."""
    from importlib.metadata import PackageNotFoundError, version

    from data_modules.twin.io import read_manifest

    from ..provenance import commit
    from ..recipe import DATA_VOLATILE, TRAINER_VOLATILE

    data = (config.get("data") or {}).get("init_args") or {}
    trainer = config.get("trainer") or {}
    versions = {}
    for pkg in ("cxrbench", "torch", "lightning", "timm", "torchmetrics", "monai", "torchvision"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"task": meta.get("task"), "benchmark_task": meta.get("task"), "method": meta["method"],
            "cell": meta.get("name"), "run_id": meta["run_id"],
            "seed": meta["seed"], "fraction": meta["fraction"], "fold": meta.get("fold"), "scale": meta["scale"],
            "split_seed": data.get("split_seed", 0), "subset_seed": data.get("subset_seed", 0),
            "dataset": (config.get("data") or {}).get("class_path"), "commit": commit(), "versions": versions,
            "model": (config.get("model") or {}).get("class_path"),
            "data_args": {k: v for k, v in data.items() if k not in DATA_VOLATILE or k in ("fraction", "split_seed")},
            "trainer_args": {k: v for k, v in trainer.items() if k not in TRAINER_VOLATILE and k != "callbacks"},
            "twin_spec": read_manifest(data["root"]) if data.get("root") else None}


def make_loggers(run_dir: Path, meta: dict, resume_epoch: float | None = None, config: dict | None = None,
                 resume_step: float | None = None) -> list:
    # the source of truth: metrics.csv, its earlier epochs (and the step-logged rows before them) kept
    # when the cell resumes
    loggers = [ResumableCSVLogger(str(run_dir), keep_until_epoch=resume_epoch, keep_until_step=resume_step,
                                  name="", version="")]
    if os.environ.get("CXRBENCH_WANDB", "1") != "0":
        from lightning.pytorch.loggers import WandbLogger

        # Offline unless the user configured a key; the key itself is never written anywhere by us.
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        tags = [f"seed={meta['seed']}", f"fraction={meta['fraction']:g}", f"scale={meta['scale']}"]
        if meta.get("fold") is not None:
            tags.append(f"fold={meta['fold']}")
        # group = task/method: the W&B UI averages a group's runs into one line, so methods stay apart
        loggers.append(WandbLogger(
            project=os.environ.get("WANDB_PROJECT", "cxrbench"), entity=os.environ.get("WANDB_ENTITY"),
            group=f"{meta.get('task') or 'pretraining'}/{meta['method']}", job_type=meta["method"], tags=tags,
            name=meta["run_id"], id=meta["run_id"][-40:], resume="allow", save_dir=str(run_dir), mode=mode,
            config=wandb_config(meta, config or {}),
        ))
    return loggers


def check_needs(meta: dict) -> dict:
    """Every artifact the cell consumes exists, is of its kind, is intact (its sha256) and comes from the
    producer run the sweep expects, before any training starts; returns what the result records of each."""
    from ..artifacts import check_artifact

    used = {}
    for role, need in (meta.get("needs") or {}).items():
        used[role] = check_artifact(need["path"], need["artifact"], expect_run=need["run_id"],
                                    consumer=f"cell {meta['run_id']} ({role} from {need['cell']}, run {need['run_id']})")
    return used


def run_cell(run_dir: str | Path, devices: int | None = None, nodes: int = 1) -> Path:
    """Run the cell in ``run_dir`` holding its lock (``CellBusy`` if another process holds it) on
    ``devices`` per node × ``nodes``; the config's batch_size stays the global batch (``lightning_cli``)."""
    check_wandb_env()  # before the lock, the Trainer and any file of the cell (the launcher checked it too)
    run_dir = Path(run_dir).resolve()
    with CellLock(run_dir):
        return _run_cell(run_dir, devices, nodes)


def cell_trainer(cli, callbacks: list, run_dir: Path, meta: dict, config: dict, keep, resumes: list,
                 keep_step=None, used: dict | None = None) -> dict:
    """The cell's Trainer arguments, given to LightningCLI when it builds the Trainer: its loggers
    (``metrics.csv`` kept up to epoch ``keep`` and step ``keep_step`` on a resume, W&B), the runner's
    callbacks, the checkpoint policy
    (without a configured ModelCheckpoint, one watching the method family's own monitor; every one saving
    into ``checkpoints/`` with a ``last``) and the result writer of a cell with a task."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from ..callbacks import RecipeStamp, StopOnNonFiniteLoss, WandbTestMedia
    from ..recipe import fingerprint

    callbacks = [c for c in callbacks if not isinstance(c, RecipeStamp)]  # the fit subcommand's; one per trainer
    callbacks += [FlushOnCheckpoint(), RNGState(), LearningRateMonitor(logging_interval="epoch"),
                  WandbTestMedia(), RecipeStamp(fingerprint(cli.recipe)), StopOnNonFiniteLoss()]
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        # Lightning's default ModelCheckpoint watches nothing: watch the family's own quantity
        monitor, mode = cli.model.monitor
        callbacks.append(ModelCheckpoint(monitor=monitor, mode=mode, save_last=True))
    for c in callbacks:
        if isinstance(c, ModelCheckpoint):
            c.dirpath = str(run_dir / "checkpoints")
            c.save_last = True
    if meta.get("task"):
        writers = [c for c in callbacks if isinstance(c, WriteResult)]
        if not writers:
            writers = [WriteResult(task=meta["task"])]
            callbacks.append(writers[0])
        for w in writers:
            w.task, w.method, w.out_dir, w.run_id, w.scale = meta["task"], meta["method"], str(run_dir), meta["run_id"], meta["scale"]
            w.seed, w.fold, w.recipe = meta["seed"], meta.get("fold"), cli.recipe
            w.extra = {"resumed": resumes} if resumes else {}
            if used:  # the artifacts it consumed: path, sha256 and producer run of each
                w.extra["artifacts"] = dict(used)
    return {"callbacks": callbacks,
            "logger": make_loggers(run_dir, meta, resume_epoch=keep, config=config, resume_step=keep_step)}


def searched_recipe(recipe: dict, search: dict | None) -> dict:
    """The recipe a grid point of an lr search is a sample of: its lr is "searched on validation" (every
    grid point of one cell is one recipe; the board keeps the point best on validation,
    ``leaderboard.choose_lr``). The grid itself stays out of the recipe (each record keeps it under
    ``lr_search``): a grid extended later adds points to the same search instead of starting a second
    row beside the points already run."""
    if not search:
        return recipe
    import copy

    out = copy.deepcopy(recipe)
    out.setdefault("model", {}).setdefault("init_args", {})["lr"] = LR_SEARCHED
    return out


LR_SEARCHED = "searched on validation (lr_grid)"


def validation_score(trainer, model, dm, kept: Path) -> dict:
    """The kept checkpoint scored on the validation split by the family's own monitor (``val/auc``,
    ``val/dice``): what an lr search chooses by (CAMContrast Table A.1: the optimal parameters selected on
    the validation set). NaN when the run produced no finite score."""
    import math

    monitor, mode = model.monitor
    got = trainer.validate(model, dm, ckpt_path=str(kept), verbose=False, weights_only=True)
    value = float((got[0] if got else {}).get(monitor, math.nan))
    return {"monitor": monitor, "mode": mode, "score": value if math.isfinite(value) else None}


def _record_divergence(run_dir: Path, meta: dict, err: Exception) -> Path:
    """An lr-search grid point whose run diverged: recorded (``diverged.json``), never chosen, and the
    cell done; the search goes on with its other points."""
    path = run_dir / DIVERGED_FILE
    if rank_zero_only.rank == 0:
        with writing(path):
            atomic_write_text(path, json.dumps({"lr_search": meta["lr_search"], "error": str(err)}, indent=1))
        print(f"cxrbench cell: lr {meta['lr_search']['lr']:g} of the grid {meta['lr_search']['grid']} diverged "
              f"({err}); this grid point is skipped, never chosen", flush=True)
    return path


DIVERGED_FILE = "diverged.json"


def _run_cell(run_dir: Path, devices: int | None, nodes: int = 1) -> Path:
    meta = json.loads((run_dir / "cell.json").read_text())
    if not meta.get("lr_search"):
        return _run_cell_once(run_dir, meta, devices, nodes)
    try:
        return _run_cell_once(run_dir, meta, devices, nodes)
    except DivergedRun as err:
        return _record_divergence(run_dir, meta, err)


def _run_cell_once(run_dir: Path, meta: dict, devices: int | None, nodes: int = 1) -> Path:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ..lightning_cli import build_cli
    from ..recipe import fingerprint

    result = run_dir / RESULT_FILE
    produces = list(meta.get("produces") or [])
    if rank_zero_only.rank == 0:  # the lock is held: whatever a killed process of this cell left is litter
        remove_litter(run_dir)
    if cell_done(run_dir, meta):
        return result
    used = check_needs(meta)
    done = run_dir / "fit_done.json"
    resume = None if done.exists() else newest_readable_checkpoint(run_dir / "checkpoints")
    args = ["--config", str(run_dir / "config.yaml"), "--trainer.default_root_dir", str(run_dir),
            "--trainer.enable_progress_bar", "false"]
    if devices:
        args += ["--trainer.devices", str(devices)]
    if nodes > 1:
        args += ["--trainer.num_nodes", str(nodes)]
    if (devices or 1) * nodes > 1:
        args += ["--trainer.strategy", "ddp"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    resumes = json.loads((run_dir / "resumes.json").read_text()) if (run_dir / "resumes.json").exists() else []
    if resume is not None:
        resumes.append({"checkpoint": resume[0].name, "epoch": int(resume[1]["epoch"]),
                        "global_step": int(resume[1]["global_step"]), "at": time.strftime("%Y-%m-%d %H:%M:%S")})
        if rank_zero_only.rank == 0:  # every DDP process runs this function; one of them records the resume
            with writing(run_dir / "resumes.json"):
                atomic_write_text(run_dir / "resumes.json", json.dumps(resumes, indent=1))
    # metrics.csv keeps: every row once fit is done (only the test is left), the checkpoint's epochs (and
    # the step-logged rows before its step) on a resume, nothing on a fresh start (all is trained again)
    keep = float("inf") if done.exists() else (resume[1]["epoch"] if resume else None)
    keep_step = float("inf") if done.exists() else (resumed_step(resume[1]) if resume else None)
    setup = lambda cli, callbacks: cell_trainer(cli, callbacks, run_dir, meta, config, keep, resumes,  # noqa: E731
                                                keep_step, used)
    cli = build_cli(args, run=False, trainer_setup=setup)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    for w in (c for c in trainer.callbacks if isinstance(c, WriteResult)):  # after the CLI has set each one's
        w.recipe = searched_recipe(cli.recipe, meta.get("lr_search"))  # a grid point's recipe is its grid's
    ckpts = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]

    kept = run_dir / "model.ckpt"
    if not done.exists():
        trainer.fit(model, dm, ckpt_path=str(resume[0]) if resume else None, weights_only=True)
        best = ckpts[0].best_model_path or ckpts[0].last_model_path
        if trainer.is_global_zero:
            tmp = run_dir / f".model.ckpt.tmp{os.getpid()}"
            with writing(kept):
                shutil.copyfile(best, tmp)
                os.replace(tmp, kept)
    if produces and trainer.is_global_zero and not all(artifact_path(run_dir, k).exists() for k in produces):
        model.load_state_dict(torch.load(kept, map_location="cpu", weights_only=True)["state_dict"])
        producer = {k: meta.get(k) for k in ("run_id", "name", "method", "seed", "fraction", "fold", "scale")}
        producer["dataset_root"] = str(dm.root)
        producer["recipe_fingerprint"] = fingerprint(cli.recipe)
        if model.data is None:  # fit was done by an earlier process: the DataModule hands the contract here
            model.bind_data(dm.contract())
        for kind in produces:
            path = artifact_path(run_dir, kind)
            if not path.exists():
                with writing(path):
                    model.export_artifact(kind, path, producer)
    if trainer.is_global_zero and not done.exists():
        with writing(done):
            atomic_write_text(done, json.dumps({"kept": str(kept)}, indent=1))
    if meta.get("task"):
        if meta.get("lr_search"):
            for w in trainer.callbacks:
                if isinstance(w, WriteResult):  # the record says how its grid point scored on validation
                    w.extra["lr_search"] = {**meta["lr_search"], **validation_score(trainer, model, dm, kept)}
        trainer.test(model, dm, ckpt_path=str(kept), verbose=False, weights_only=True)
    return result


def cell_done(run_dir: Path, meta: dict) -> bool:
    """A cell with a task is done when its result is written; every cell, when its artifacts are; an
    lr-search grid point also when its run diverged (``diverged.json``: never chosen)."""
    if meta.get("lr_search") and (run_dir / DIVERGED_FILE).exists():
        return True
    if meta.get("task") and not (run_dir / RESULT_FILE).exists():
        return False
    return all(artifact_path(run_dir, k).exists() for k in meta.get("produces") or [])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument("--nodes", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        run_cell(args.run_dir, args.devices, args.nodes)
    except (ArtifactError, WandbNameError, DivergedRun) as err:  # one line: what stopped the cell, and why
        print(f"cxrbench cell: error: {err}", file=sys.stderr)
        return 2
    except CellBusy as err:
        print(f"cxrbench cell: {err}; not run twice", file=sys.stderr)
        return BUSY_EXIT
    except OSError as err:  # a read-only or full runs folder, or one removed under the cell: the path, in one line
        print(f"cxrbench cell: error: {describe_os_error(err, args.run_dir)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
