"""Run one cell in this process: fit (resuming from its last checkpoint), then test, then result.json.

    python -m cxrbench.runner.cell RUN_DIR [--devices N]

RUN_DIR holds ``config.yaml`` (the resolved LightningCLI config) and ``cell.json`` (task, method,
seed, fraction, scale, run id), both written by the launcher. Markers make every step idempotent:
``fit_done.json`` after training (with the best checkpoint, copied to ``model.ckpt``: the artifact a
pipeline's next cell consumes) and ``result.json`` (written atomically) when the cell is finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch

from data_modules.io import atomic_write_text

from ..results import RESULT_FILE


def _loadable(ckpt: Path) -> bool:
    try:
        torch.load(ckpt, map_location="cpu", weights_only=False)
        return True
    except Exception:  # a checkpoint cut by a kill: start that cell's training again
        warnings.warn(f"checkpoint {ckpt} is unreadable; training this cell from the start", stacklevel=2)
        return False


def make_loggers(run_dir: Path, meta: dict) -> list:
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(str(run_dir), name="", version="")]  # the source of truth: metrics.csv
    if os.environ.get("CXRBENCH_WANDB", "1") != "0":
        from lightning.pytorch.loggers import WandbLogger

        # Offline unless the user configured a key; the key itself is never written anywhere by us.
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        loggers.append(WandbLogger(
            project=os.environ.get("WANDB_PROJECT", "cxrbench"), group=meta["task"], job_type=meta["method"],
            tags=[f"seed={meta['seed']}", f"fraction={meta['fraction']:g}", f"scale={meta['scale']}"],
            name=meta["run_id"], id=meta["run_id"][-40:], resume="allow", save_dir=str(run_dir), mode=mode,
        ))
    return loggers


def run_cell(run_dir: str | Path, devices: int | None = None) -> Path:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ..callbacks import WriteResult
    from ..lightning_cli import build_cli

    run_dir = Path(run_dir).resolve()
    result = run_dir / RESULT_FILE
    if result.exists():
        return result
    meta = json.loads((run_dir / "cell.json").read_text())
    args = ["--config", str(run_dir / "config.yaml"), "--trainer.default_root_dir", str(run_dir),
            "--trainer.enable_progress_bar", "false"]
    if devices:
        args += ["--trainer.devices", str(devices)]
        if devices > 1:
            args += ["--trainer.strategy", "ddp"]
    cli = build_cli(args, run=False)
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    trainer.loggers = make_loggers(run_dir, meta)
    ckpts = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    if not ckpts:
        ckpts = [ModelCheckpoint(save_last=True)]
        trainer.callbacks.append(ckpts[0])
    for c in ckpts:
        c.dirpath = str(run_dir / "checkpoints")
        c.save_last = True
    writers = [c for c in trainer.callbacks if isinstance(c, WriteResult)]
    if not writers:
        writers = [WriteResult(task=meta["task"])]
        trainer.callbacks.append(writers[0])
    for w in writers:
        w.task, w.out_dir, w.run_id, w.scale = meta["task"], str(run_dir), meta["run_id"], meta["scale"]
    trainer._cxrbench_seed = meta["seed"]

    done = run_dir / "fit_done.json"
    if not done.exists():
        last = run_dir / "checkpoints" / "last.ckpt"
        trainer.fit(model, dm, ckpt_path=str(last) if last.exists() and _loadable(last) else None)
        best = ckpts[0].best_model_path or str(last)
        if trainer.is_global_zero:
            tmp = run_dir / f".model.ckpt.tmp{os.getpid()}"
            shutil.copyfile(best, tmp)
            os.replace(tmp, run_dir / "model.ckpt")
            atomic_write_text(done, json.dumps({"best": best}, indent=1))
    trainer.test(model, dm, ckpt_path=str(run_dir / "model.ckpt"), verbose=False)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--devices", type=int, default=None)
    args = ap.parse_args(argv)
    run_cell(args.run_dir, args.devices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
