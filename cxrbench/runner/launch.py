"""Launchers: local (sequential subprocesses; DDP inside a cell) and SLURM (submitit).

A cell is skipped when its ``result.json`` exists and resumes from its checkpoint when it was
interrupted; a failed cell does not stop independent cells, and its dependents are skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from data_modules.io import atomic_write_text

from ..results import RESULT_FILE
from .spec import Cell, Spec, SpecError


def status(spec: Spec, cell: Cell) -> str:
    d = spec.runs_dir / cell.run_id
    if (d / RESULT_FILE).exists():
        return "done"
    if (d / "fit_done.json").exists() or (d / "checkpoints").exists():
        return "partial"
    return "pending"


def prepare_data(spec: Spec) -> None:
    """Generate declared twins that are absent; name every missing real dataset at once."""
    from data_modules.twin import generate

    missing = []
    for name, entry in spec.data.items():
        root = Path(entry["root"])
        if "twin" in entry:
            t = dict(entry["twin"])
            generate(t.pop("dataset", name), root, n=t.pop("n"), seed=t.pop("seed", 0), size=t.pop("size", None), **t)
        elif not root.is_dir():
            missing.append(f"{name} (expected at {root})")
    if missing:
        raise SpecError(f"{spec.path}: missing dataset(s): {', '.join(missing)}. Set CXR_DATA to the folder "
                        "holding them in the releases' layouts (see README), or run `make bench-smoke` for twins.")


def write_cell(spec: Spec, cell: Cell) -> Path:
    d = spec.runs_dir / cell.run_id
    d.mkdir(parents=True, exist_ok=True)
    meta = {"run_id": cell.run_id, "name": cell.name, "task": cell.task, "method": cell.method, "seed": cell.seed,
            "fraction": cell.fraction, "scale": cell.scale, "needs": cell.needs}
    atomic_write_text(d / "config.yaml", yaml.safe_dump(cell.config, sort_keys=True))
    atomic_write_text(d / "cell.json", json.dumps(meta, indent=1))
    return d


def run_local(spec: Spec, devices: int | None = None, log=print) -> list[str]:
    failed: set[str] = set()
    for cell in spec.cells:
        st = status(spec, cell)
        if st == "done":
            log(f"[done]    {cell.run_id}")
            continue
        if set(cell.needs.values()) & failed:
            log(f"[skipped] {cell.run_id}: a cell it needs failed")
            failed.add(cell.run_id)
            continue
        d = write_cell(spec, cell)
        log(f"[{'resume' if st == 'partial' else 'run'}]     {cell.run_id}")
        cmd = [sys.executable, "-m", "cxrbench.runner.cell", str(d)] + (["--devices", str(devices)] if devices else [])
        with open(d / "stdout.log", "a") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc != 0 or not (d / RESULT_FILE).exists():
            log(f"[failed]  {cell.run_id} (exit {rc}); see {d / 'stdout.log'}")
            failed.add(cell.run_id)
    return sorted(failed)


def run_slurm(spec: Spec, devices: int = 1, partition: str | None = None, timeout_min: int = 24 * 60,
              cpus_per_task: int = 8, cluster: str | None = None, log=print) -> list:
    """One submitit job per cell, with afterok dependencies along pipelines; Lightning reads SLURM's env."""
    import submitit

    from .cell import run_cell

    folder = spec.runs_dir / ".submitit" / "%j"
    jobs = {}
    for cell in spec.cells:
        if status(spec, cell) == "done":
            continue
        d = write_cell(spec, cell)
        ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params = dict(timeout_min=timeout_min, nodes=1, tasks_per_node=devices, gpus_per_node=devices,
                      cpus_per_task=cpus_per_task, name=cell.run_id[:60])
        deps = [jobs[r].job_id for r in cell.needs.values() if r in jobs]
        if ex.cluster == "slurm":
            params["slurm_partition"] = partition
            if deps:
                params["slurm_additional_parameters"] = {"dependency": "afterok:" + ":".join(deps)}
        else:  # submitit's local/debug executors take the generic names only
            params = {k: v for k, v in params.items() if k in ("timeout_min", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "name")}
        ex.update_parameters(**params)
        jobs[cell.run_id] = ex.submit(run_cell, str(d), devices if devices > 1 else None)
        log(f"[submitted] {cell.run_id} as job {jobs[cell.run_id].job_id}")
    return list(jobs.values())
