"""Launchers: local (sequential subprocesses; DDP inside a cell) and SLURM (submitit).

A cell is skipped when it is done (its ``result.json``, and its artifacts if it produces any) and
resumes from its checkpoint when it was interrupted; a failed cell does not stop independent cells,
and its consumers are skipped. A cell another launcher is running (its lock is held) is skipped with
a message, never trained twice. A consumer starts only once every artifact it needs is on disk and
of the right kind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from data_modules.io import atomic_write_text

from ..artifacts import ArtifactError, check_artifact
from ..results import RESULT_FILE
from .cell import cell_done
from .resume import BUSY_EXIT
from .spec import Cell, Spec, SpecError


def _meta(spec: Spec, cell: Cell) -> dict:
    return {"run_id": cell.run_id, "name": cell.name, "task": cell.task, "method": cell.method, "seed": cell.seed,
            "fraction": cell.fraction, "fold": cell.fold, "scale": cell.scale, "produces": list(cell.produces),
            "needs": {r: {"cell": n.cell, "artifact": n.artifact, "run_id": n.run_id,
                          "path": str(cell.artifact(r, spec.runs_dir))} for r, n in cell.needs.items()}}


def status(spec: Spec, cell: Cell) -> str:
    d = spec.runs_dir / cell.run_id
    if cell_done(d, {"task": cell.task, "produces": cell.produces}):
        return "done"
    if (d / "fit_done.json").exists() or (d / "checkpoints").exists():
        return "partial"
    return "pending"


def prepare_data(spec: Spec) -> None:
    """Generate declared twins that are absent; name every missing real dataset at once."""
    from data_modules.twin import generate

    missing = []
    used = {c.data_name for c in spec.cells}
    for name, entry in spec.data.items():
        if name not in used:
            continue
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
    atomic_write_text(d / "config.yaml", yaml.safe_dump(cell.resolved_config(spec.runs_dir), sort_keys=True))
    atomic_write_text(d / "cell.json", json.dumps(_meta(spec, cell), indent=1))
    return d


def check_configs(spec: Spec) -> list[str]:
    """Every cell's config through the parser its run will use (unknown keys, types, classes), before
    anything trains; configs that differ only in seed, fraction or fold are parsed once."""
    from ..lightning_cli import check_config

    errors, seen = [], {}
    for cell in spec.cells:
        config = cell.resolved_config(spec.runs_dir)
        key = json.dumps({**config, "seed_everything": None,
                          "data": {**config.get("data", {}), "init_args": {
                              k: v for k, v in config.get("data", {}).get("init_args", {}).items()
                              if k not in ("fraction", "fold")}}}, sort_keys=True, default=str)
        if key not in seen:
            try:
                check_config(config)
                seen[key] = None
            except ValueError as err:
                seen[key] = str(err)
        if seen[key]:
            errors.append(f"{cell.run_id}: {seen[key]}")
    return errors


def missing_needs(spec: Spec, cell: Cell) -> str | None:
    """Why a consumer cannot start (a needed artifact absent or of another kind), or None."""
    for role, n in cell.needs.items():
        try:
            check_artifact(cell.artifact(role, spec.runs_dir), n.artifact, consumer=f"{cell.run_id} ({role})")
        except ArtifactError as err:
            return str(err)
    return None


def headline(run_dir: Path) -> str:
    """The finished cell's first leaderboard number, for the progress line."""
    f = run_dir / RESULT_FILE
    if not f.exists():
        return ""
    metrics = json.loads(f.read_text()).get("metrics", {})
    for key in ("auc/mean", "dice/mean", "accuracy"):
        if metrics.get(key) is not None:
            return f" {key}={metrics[key]:.3f}"
    return ""


def run_local(spec: Spec, devices: int | None = None, log=print) -> list[str]:
    failed: set[str] = set()
    busy: set[str] = set()  # cells another launcher is running right now
    total, start = len(spec.cells), time.time()
    for k, cell in enumerate(spec.cells, 1):
        elapsed = time.time() - start
        tag = f"[{k}/{total} {elapsed / 60:.1f} min]"
        st = status(spec, cell)
        if st == "done":
            log(f"{tag} [done]    {cell.run_id}")
            continue
        if {n.run_id for n in cell.needs.values()} & failed:
            log(f"{tag} [skipped] {cell.run_id}: a cell it needs failed")
            failed.add(cell.run_id)
            continue
        if {n.run_id for n in cell.needs.values()} & busy:
            log(f"{tag} [skipped] {cell.run_id}: a cell it needs is being run by another launcher; rerun afterwards")
            busy.add(cell.run_id)
            continue
        why = missing_needs(spec, cell)
        if why:
            log(f"{tag} [failed]  {cell.run_id}: {why}")
            failed.add(cell.run_id)
            continue
        d = write_cell(spec, cell)
        log(f"{tag} [{'resume' if st == 'partial' else 'run'}]     {cell.run_id}")
        t0 = time.time()
        cmd = [sys.executable, "-m", "cxrbench.runner.cell", str(d)] + (["--devices", str(devices)] if devices else [])
        with open(d / "stdout.log", "a") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc == BUSY_EXIT:
            log(f"{tag} [busy]    {cell.run_id}: another launcher is running it; not run twice")
            busy.add(cell.run_id)
        elif rc != 0 or status(spec, cell) != "done":
            log(f"{tag} [failed]  {cell.run_id} (exit {rc}); see {d / 'stdout.log'}")
            failed.add(cell.run_id)
        else:
            log(f"{tag} [finished] {cell.run_id} in {time.time() - t0:.0f} s{headline(d)}")
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
        pending_producers = [n.run_id for n in cell.needs.values() if n.run_id in jobs]
        if not pending_producers:
            why = missing_needs(spec, cell)
            if why:
                log(f"[failed]  {cell.run_id}: {why}")
                continue
        d = write_cell(spec, cell)
        ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params = dict(timeout_min=timeout_min, nodes=1, tasks_per_node=devices, gpus_per_node=devices,
                      cpus_per_task=cpus_per_task, name=cell.run_id[:60])
        deps = [jobs[r].job_id for r in pending_producers]
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
