"""What makes a killed cell resume as if it had never stopped, and two launchers never run one cell twice.

- ``CellLock``: an exclusive ``flock`` on ``RUN_DIR/.lock`` held by the process running the cell. The
  kernel drops it when that process dies (even by SIGKILL), so a dead launcher never blocks a cell.
  ``flock`` works on local filesystems and on NFS (Linux emulates it with POSIX locks); on a
  filesystem without locks (Lustre mounted without ``flock``) it raises, and the cell runs unlocked
  with a warning: run one launcher per spec there.
- ``newest_readable_checkpoint``: the newest ``last*.ckpt`` that loads with ``weights_only=True``;
  unreadable ones (cut by a kill, or a pickle that is more than tensors) are moved to
  ``checkpoints/unreadable/`` with a message, so Lightning writes the next ``last.ckpt`` in place and
  every later interruption still resumes.
- ``ResumableCSVLogger``: Lightning's CSVLogger deletes ``metrics.csv`` when its folder is not empty;
  this one keeps the rows of the epochs a resumed run will not repeat (epoch ≤ the checkpoint's, and
  the rows without an epoch, LearningRateMonitor's, logged before the checkpoint's step), so the log
  holds every row exactly once. ``FlushOnCheckpoint`` writes the log before each
  checkpoint, so the rows a checkpoint covers are on disk whenever the checkpoint is.
- ``remove_litter``: what interrupted writes left in a cell's folder (temporaries of dead writers,
  checkpoints cut short), removed when the cell runs again.
- ``RNGState``: the torch, numpy, Python and CUDA RNG states and the method's own generators saved
  in every checkpoint (as tensors and plain lists: ``weights_only``-loadable), each DDP process's own,
  and restored on resume by each process: the next epoch's shuffle, augmentations and GMML
  corruptions are those of the uninterrupted run.
"""

from __future__ import annotations

import csv
import fcntl
import os
import random
import shutil
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

BUSY_EXIT = 75  # EX_TEMPFAIL: another process holds the cell


class CellBusy(RuntimeError):
    pass


class CellLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "CellLock":
        if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("SLURM_PROCID", "0") != "0":
            return self  # a DDP worker Lightning started for this cell: its rank-0 process holds the lock
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text().strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise CellBusy(f"{self.path.parent.name} is being run by {holder}") from None
        except OSError as err:  # no lock support on this filesystem
            warnings.warn(f"cannot lock {self.path} ({err}); running unlocked: run one launcher per spec here",
                          stacklevel=2)
            return self
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock


def readable(ckpt: Path) -> dict | None:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception:
        return None


def newest_readable_checkpoint(folder: Path, log=print) -> tuple[Path, dict] | None:
    """The newest loadable ``last*.ckpt`` in ``folder`` and its contents; unreadable ones moved aside."""
    found = sorted(Path(folder).glob("last*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for ckpt in found:
        state = readable(ckpt)
        if state is not None:
            return ckpt, state
        aside = Path(folder) / "unreadable" / f"{ckpt.name}.{int(time.time())}"
        aside.parent.mkdir(exist_ok=True)
        shutil.move(str(ckpt), aside)
        log(f"checkpoint {ckpt} is unreadable with weights_only=True (cut by a kill, or not plain tensors); "
            f"moved to {aside}")
    return None


def remove_litter(run_dir: Path, log=print) -> None:
    """What interrupted writes left in a cell's folder, removed before the cell runs again (its lock held,
    so nothing else writes there): temporaries of writers that are gone (``.encoder.pt.tmp<pid>``,
    ``.heatmaps.tmp<pid>/``, ``.model.ckpt.tmp<pid>``, ``.result.json.tmp<pid>``) and checkpoints a kill
    cut short (also those set aside in ``checkpoints/unreadable/``)."""
    from ..files import remove_interrupted_writes, remove_truncated_checkpoints

    for folder in (run_dir, run_dir / "artifacts", run_dir / "checkpoints"):
        remove_interrupted_writes(folder, log=log)
    remove_truncated_checkpoints(run_dir / "checkpoints", log=log)


def resumed_step(checkpoint: dict) -> int:
    """The logging step a resumed fit starts at (Lightning's ``_batches_that_stepped``, the ``step`` of
    ``metrics.csv``): every row logged at that step or later is logged again."""
    loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    return int((loop.get("epoch_loop.state_dict") or {}).get("_batches_that_stepped", checkpoint.get("global_step", 0)))


class ResumableCSVLogger(CSVLogger):
    """A CSVLogger that, resuming after ``keep_until_epoch``, keeps the earlier rows of ``metrics.csv``:
    those of the epochs up to it, and the rows logged without an epoch (LearningRateMonitor's) before
    ``keep_until_step`` (``resumed_step``: the resumed fit logs the later ones again)."""

    def __init__(self, save_dir: str, keep_until_epoch: float | None = None, keep_until_step: float | None = None,
                 **kwargs):
        super().__init__(save_dir, **kwargs)
        self._kept: list[dict] = []
        metrics = Path(save_dir) / "metrics.csv"
        if keep_until_epoch is not None and metrics.is_file():
            with open(metrics, newline="") as f:
                self._kept = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)
                              if _kept_row(row, keep_until_epoch, keep_until_step)]

    @property
    def experiment(self):
        created = self._experiment is None
        exp = super().experiment
        if not isinstance(getattr(exp, "metrics", None), list):
            return exp  # a process other than rank 0 gets Lightning's DummyExperiment: only rank 0 writes
        if created and self._kept:
            exp.metrics = self._kept + exp.metrics  # written with the first save, before any new row
            self._kept = []
        return exp


def _kept_row(row: dict, keep_until_epoch: float, keep_until_step: float | None) -> bool:
    epoch, step = row.get("epoch") or "", row.get("step") or ""
    if epoch != "":
        return float(epoch) <= keep_until_epoch
    # no epoch: a row a callback logged by step (the learning rate at each epoch's start)
    return keep_until_step is not None and step != "" and float(step) < keep_until_step


class FlushOnCheckpoint(L.Callback):
    """Write every logger's buffered rows before a checkpoint is written."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()


class RNGState(L.Callback):
    """Save the RNG states in each checkpoint and restore them on resume, each process its own.

    Saved: the CPU generators of torch, numpy and Python, this process's CUDA generator (when CUDA is in
    use), and every ``torch.Generator`` the method holds as an attribute (GMML's corruption generators).
    Under DDP every process runs ``on_save_checkpoint`` but only rank 0's dictionary is written, so the
    states of all processes are gathered into it (``rng_states["ranks"]``, in rank order) and each
    process restores its own entry: a resumed rank then draws what it would have drawn uninterrupted,
    never rank 0's sequence. One process writes and restores exactly what it always did (rank 0's entry
    at the top level). Restoring runs after the method's ``on_load_checkpoint`` (Lightning's order), so
    a generator the method restored from rank 0's copy is overwritten by this process's own state. A
    checkpoint of another world size: ranks that had no entry keep their fresh state (warned).
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        world, rank = self._world()
        mine = self._rng_state(pl_module)
        if world == 1:
            checkpoint["rng_states"] = mine
            return
        import torch.distributed as dist

        everyone: list = [None] * world
        dist.all_gather_object(everyone, mine)  # every process runs this hook, in the same order
        checkpoint["rng_states"] = {**everyone[0], "ranks": everyone}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        from ..losses import own_rank_state

        states = own_rank_state(states, "RNG states")
        if states is not None:
            self._set_rng_state(states, pl_module)

    @staticmethod
    def _world() -> tuple[int, int]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    @staticmethod
    def _rng_state(pl_module) -> dict:
        """This process's RNG states as tensors and plain lists (``weights_only``-loadable)."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, py_state, py_gauss = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()  # this process's device
        generators = {name: {"device": str(g.device), "state": g.get_state()}
                      for name, g in sorted(vars(pl_module).items() if pl_module is not None else ())
                      if isinstance(g, torch.Generator)}
        if generators:
            state["generators"] = generators
        return state

    @staticmethod
    def _set_rng_state(state: dict, pl_module) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
        for name, g in (state.get("generators") or {}).items():
            if pl_module is None:
                break
            current = getattr(pl_module, name, None)
            if not isinstance(current, torch.Generator):
                current = torch.Generator(device=g["device"])
                setattr(pl_module, name, current)
            current.set_state(g["state"])
