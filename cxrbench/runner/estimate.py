"""``cxrbench bench SPEC --estimate``: device hours per cell from a step time measured here.

For each distinct training config of a spec (seeds and label fractions share one), a few real
training steps run through Lightning on this machine's device (images decoded from the dataset, no
cache built, no checkpoint or log written); the mean time of the steps after the first is the step
time. A cell's hours are that step time × its training steps: ``max_steps`` when the config sets
it, else ``max_epochs`` × ⌈training images × fraction / batch⌉. Validation and test passes are not
counted, and early stopping can only shorten a run: the figure is the training budget's upper bound.
A cell whose producer's artifact is not on disk yet is measured with its needs left out where the
model can be built without them (a random-init encoder of the same architecture), else reported
as not measurable until its producer has run.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
import time

from lightning.pytorch.callbacks import Callback

from .spec import PLACEHOLDER, Cell, Spec


class StepTimer(Callback):
    """Lightning callback: wall time of every full training step after the run's first (device
    synchronised). Counted over the run, not per epoch: on an epoch of one or two batches a per-epoch
    "skip batch 0" timed only the short last batch; a batch smaller than the loader's (an epoch's
    remainder) is not timed either."""

    def __init__(self):
        self.times: list[float] = []
        self._t0 = 0.0
        self._seen = 0

    def _sync(self, trainer):
        import torch

        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(trainer)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(trainer)
        elapsed = time.perf_counter() - self._t0
        self._seen += 1
        full = len(batch["image"]) >= trainer.datamodule.batch_size if isinstance(batch, dict) else True
        if self._seen > 1 and full:  # the first step pays for lazy initialisation, cuDNN autotuning, loader start
            self.times.append(elapsed)


def _without_needs(value):
    """The config with every option that names an artifact dropped (the model then starts at random)."""
    if isinstance(value, dict):
        return {k: _without_needs(v) for k, v in value.items()
                if not (isinstance(v, str) and PLACEHOLDER.search(v))}
    if isinstance(value, list):
        return [_without_needs(v) for v in value]
    return value


def measure(config: dict, steps: int = 3, devices: int | None = None) -> dict:
    """Seconds per training step, training images and the global batch for ``config`` on one device of
    this machine. A cell the sweep runs on ``devices`` N > 1 (``--devices``) is timed as one of its N
    processes: one device with the batch / N each process gets (the gradient all-reduce is not
    counted); a config's own ``devices: auto`` would take every GPU with DDP, which no sweep cell does,
    and Lightning's DDP launcher would re-run the whole command in each process."""
    n = int(devices or 1)
    import yaml

    from ..lightning_cli import build_cli

    cfg = copy.deepcopy(config)
    data = cfg.setdefault("data", {}).setdefault("init_args", {})
    data.update(cache=False, fraction=1.0)
    if n > 1 and "batch_size" in data:
        data["batch_size"] = max(1, int(data["batch_size"]) // n)  # one process's share of the global batch
    trainer = cfg.setdefault("trainer", {})
    scratch = tempfile.mkdtemp(prefix="cxrbench-estimate-")  # LightningCLI's config copy lands here, then goes
    trainer.update(devices=1, max_steps=2 * steps + 2, max_epochs=-1, limit_val_batches=0,
                   num_sanity_val_steps=0, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=None,
                   default_root_dir=scratch)
    trainer.pop("strategy", None)
    try:
        timer = StepTimer()
        cli = build_cli(["--config", yaml.safe_dump(cfg)], run=False,
                        trainer_setup=lambda cli, callbacks: {"callbacks": [*callbacks, timer]})
        cli.trainer.fit(cli.model, cli.datamodule)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    dm = cli.datamodule
    if not timer.times:
        raise RuntimeError("no full training batch to time (the training split holds fewer than two batches)")
    return {"step_s": sum(timer.times) / len(timer.times), "n_train": len(dm.splits["train"]),
            "batch": int(dm.batch_size) * n, "device": str(cli.trainer.strategy.root_device)}


def training_steps(cell: Cell, n_train: int, batch: int) -> int:
    trainer = cell.config.get("trainer", {})
    if int(trainer.get("max_steps") or -1) > 0:
        return int(trainer["max_steps"])
    epochs = int(trainer.get("max_epochs") or 1000)  # Lightning's default when unset
    return epochs * math.ceil(max(1, round(n_train * cell.fraction)) / batch)


def step_key(config: dict) -> str:
    """What a step's time depends on: the config without its seed, label fraction, fold and learning rate
    (the 15 STN fold cells, a fraction sweep and an lr grid are one measurement each)."""
    key_cfg = copy.deepcopy(config)
    key_cfg.pop("seed_everything", None)
    for section, name in (("data", "fraction"), ("data", "fold"), ("model", "lr")):
        key_cfg.get(section, {}).get("init_args", {}).pop(name, None)
    return json.dumps(key_cfg, sort_keys=True, default=str)


def estimate(spec: Spec, log=print, steps: int = 3, devices: int | None = None) -> list[dict]:
    """One row per cell (run id, steps, step seconds, hours or why not measured); logs a table and the total."""
    measured: dict[str, dict | str] = {}
    rows = []
    for cell in spec.cells:
        config = _without_needs(cell.config)
        key = step_key(config)
        if key not in measured:
            try:
                measured[key] = measure(config, steps, devices)
            except (Exception, SystemExit) as err:  # a config that cannot run without its producer's artifact
                why = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
                measured[key] = f"not measured ({', '.join(cell.needs) or 'error'}: {why})"
        m = measured[key]
        if isinstance(m, str):
            rows.append({"run_id": cell.run_id, "hours": math.nan, "why": m})
            continue
        n = training_steps(cell, m["n_train"], m["batch"])
        rows.append({"run_id": cell.run_id, "steps": n, "step_s": m["step_s"],
                     "hours": n * m["step_s"] * int(devices or 1) / 3600, "device": m["device"]})
    known = [r["hours"] for r in rows if not math.isnan(r["hours"])]
    for r in rows:
        if math.isnan(r["hours"]):
            log(f"  {r['run_id']}: {r['why']}")
        else:
            log(f"  {r['run_id']}: {r['steps']} steps × {r['step_s']:.3f} s = {r['hours']:.2f} h on {r['device']}")
    log(f"{spec.name}: {sum(known):.1f} device-hours for {len(known)} of {len(rows)} cells (training steps only, "
        "an upper bound where early stopping applies)")
    return rows
