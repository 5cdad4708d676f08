"""Lightning callbacks of cxrbench."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from .provenance import commit, data_provenance
from .results import write_result


class WriteResult(L.Callback):
    """After ``test``, write the run's result record (``result.json``) that the leaderboards read.

    Args:
        task: the benchmark task the run belongs to (e.g. 'nih-cardiomegaly').
        out_dir: folder of the record (default: the trainer's log_dir).
        run_id: defaults to the folder's name.
        scale: overrides the scale derived from the data (e.g. 'smoke').
    """

    def __init__(self, task: str, out_dir: str | None = None, run_id: str | None = None, scale: str | None = None):
        self.task, self.out_dir, self.run_id, self.scale = task, out_dir, run_id, scale

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        out = Path(self.out_dir or trainer.log_dir or ".")
        prov = data_provenance(dm.root)
        if self.scale:
            prov["scale"] = self.scale
        prov["commit"] = commit()
        seed = int(getattr(trainer, "_cxrbench_seed", None) or _env_seed())
        record = {
            "run_id": self.run_id or out.name,
            "method": pl_module.method_name,
            "task": self.task,
            "seed": seed,
            "fraction": float(getattr(dm, "fraction", 1.0)),
            "metrics": dict(pl_module.test_metrics),
            "provenance": prov,
            "curves": pl_module.test_curves,
        }
        write_result(out, record)


def _env_seed() -> int:
    import os

    return int(os.environ.get("PL_GLOBAL_SEED", 0))
