"""Launchers: local (sequential subprocesses; DDP inside a cell) and SLURM (submitit).

A cell is skipped when it is done (its ``result.json``, and its artifacts if it produces any) and
resumes from its checkpoint when it was interrupted; a failed cell does not stop independent cells,
and its consumers are skipped. A cell another launcher is running (its lock is held) is skipped with
a message, never trained twice. A consumer starts only once every artifact it needs is on disk and
of the right kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..files import atomic_write_text

from ..artifacts import ArtifactError, check_artifact
from ..files import writing
from ..results import RESULT_FILE
from .cell import cell_done
from .resume import BUSY_EXIT
from .spec import Cell, Spec, SpecError


def _meta(spec: Spec, cell: Cell) -> dict:
    return {"run_id": cell.run_id, "name": cell.name, "task": cell.task, "method": cell.method, "seed": cell.seed,
            "fraction": cell.fraction, "fold": cell.fold, "scale": cell.scale, "produces": list(cell.produces),
            "lr_search": cell.lr_search,
            "needs": {r: {"cell": n.cell, "artifact": n.artifact, "run_id": n.run_id,
                          "path": str(cell.artifact(r, spec.runs_dir))} for r, n in cell.needs.items()}}


def status(spec: Spec, cell: Cell) -> str:
    d = spec.runs_dir / cell.run_id
    if cell_done(d, {"task": cell.task, "produces": cell.produces, "lr_search": cell.lr_search}):
        return "done"
    if (d / "fit_done.json").exists() or (d / "checkpoints").exists():
        return "partial"
    return "pending"


def prepare_data(spec: Spec, log=None) -> set[str]:
    """Generate declared twins that are absent, then read every dataset the cells use, as they will, in one
    pass (``data_problems``). Each problem is one line on stderr naming the cells it stops; those cells
    (their run ids, returned) are not run and the rest of the sweep is — the tables the data on disk
    permit. Nothing at all runnable is an error naming every problem."""
    from data_modules.twin import generate

    used = {c.data_name for c in spec.cells}
    for name, entry in spec.data.items():
        if name in used and "twin" in entry:
            t = dict(entry["twin"])
            generate(t.pop("dataset", name), Path(entry["root"]), n=t.pop("n"), seed=t.pop("seed", 0),
                     size=t.pop("size", None), **t)
    problems = data_problems(spec)
    stopped = {name for _, names in problems for name in names}
    blocked = {c.run_id for c in spec.cells if c.name in stopped}
    lines = [problem_line(msg, names) for msg, names in problems]
    if blocked and len(blocked) == len(spec.cells):
        advice = (" Set CXR_DATA to the folder holding the datasets in the releases' layouts (see README), or run "
                  "`make bench-smoke` for twins.") if any("missing dataset" in m for m, _ in problems) else ""
        raise SpecError(f"{spec.path}: {len(problems)} dataset problem(s), found before anything trains; no cell can "
                        f"run:{advice}\n  " + "\n  ".join(lines))
    for line in lines:
        print(f"cxrbench bench: data: {line}; those cells are skipped", file=sys.stderr)
    return blocked


def problem_line(message: str, cells: list[str]) -> str:
    names = sorted(set(cells))
    return f"{message} (cells: {', '.join(names[:4])}{' …' if len(names) > 4 else ''})"


def data_problems(spec: Spec) -> list[tuple[str, list[str]]]:
    """Every problem of every dataset the cells use, found in one pass: a missing dataset root (its
    cells), and for each present real dataset every distinct data config read as its cells will read it
    (``check_layouts``). Each (message, cell names), one entry per distinct message."""
    used: dict[str, list[str]] = {}
    for c in spec.cells:
        used.setdefault(c.data_name, []).append(c.name)
    out = [(f"missing dataset {n} (expected at {e['root']})", used[n]) for n, e in spec.data.items()
           if n in used and "twin" not in e and not Path(e["root"]).is_dir()]
    return out + check_layouts(spec, with_cells=True)


def data_kinds(spec: Spec) -> list[str]:
    """One line per dataset the cells use: twin or real, and where (a CXR_DATA folder can hold twins)."""
    from ..provenance import data_provenance

    used = {c.data_name for c in spec.cells}
    lines = []
    for n, e in spec.data.items():
        if n not in used:
            continue
        root = Path(e["root"])
        if "twin" in e:
            lines.append(f"{n}: TWIN (real metadata, synthetic pixels), generated at {root}")
        elif root.is_dir():
            kind = data_provenance(root).get("data")
            lines.append(f"{n}: TWIN (real metadata, synthetic pixels) at {root}: its numbers are not the papers'"
                         if kind == "twin" else f"{n}: real release at {root}")
    return lines


def missing_roots(spec: Spec) -> list[str]:
    """The real datasets (no twin) used by the spec's cells whose root folder is absent."""
    used = {c.data_name for c in spec.cells}
    return [f"{n} (expected at {e['root']})" for n, e in spec.data.items()
            if n in used and "twin" not in e and not Path(e["root"]).is_dir()]


def check_layouts(spec: Spec, with_cells: bool = False) -> list:
    """Every present real dataset as its cells will read it: the index (label files, images present, the
    box file RGT's class box prior needs) and the splits (official lists, protocols), once per distinct
    data config. One line per distinct problem, naming the cells and what is missing (``with_cells``:
    (message, cell names) pairs)."""
    import importlib

    from data_modules import DataError

    real = {n for n, e in spec.data.items() if "twin" not in e and Path(e["root"]).is_dir()}
    seen: dict[str, str | None] = {}
    problems: dict[str, list[str]] = {}
    for cell in spec.cells:
        if cell.data_name not in real:
            continue
        data = cell.resolved_config(spec.runs_dir).get("data", {})
        args = {k: v for k, v in data.get("init_args", {}).items() if k not in ("fraction", "subset_seed")}
        key = json.dumps([data.get("class_path"), args], sort_keys=True, default=str)
        if key not in seen:
            error = None
            try:
                module, _, name = str(data["class_path"]).rpartition(".")
                dm = getattr(importlib.import_module(module), name)(**args)
                dm.make_splits(dm.prepare_index())
            except (DataError, OSError, ValueError) as err:
                error = str(err)
            seen[key] = error
        if seen[key]:
            problems.setdefault(seen[key], []).append(cell.name)  # one line per problem, however many configs
    pairs = list(problems.items())
    return pairs if with_cells else [problem_line(m, c) for m, c in pairs]


def write_cell(spec: Spec, cell: Cell) -> Path:
    d = spec.runs_dir / cell.run_id
    with writing(d):  # a read-only or full runs folder stops the sweep with one line naming it
        d.mkdir(parents=True, exist_ok=True)
    for name, text in (("config.yaml", yaml.safe_dump(cell.resolved_config(spec.runs_dir), sort_keys=True)),
                       ("cell.json", json.dumps(_meta(spec, cell), indent=1))):
        with writing(d / name):
            atomic_write_text(d / name, text)
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


CELL_ERROR = "cxrbench cell: error: "


def cell_error(run_dir: Path) -> str:
    """The one-line reason a cell process gave for stopping (the last such line of its stdout.log), or ""."""
    try:
        lines = (run_dir / "stdout.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    said = [line[len(CELL_ERROR):] for line in lines if line.startswith(CELL_ERROR)]
    return said[-1] if said else ""


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


def gpu_slots(parallel: int, devices: int | None) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each parallel slot: ``devices`` GPUs each on a GPU node, none on a CPU."""
    import torch

    n_gpus = torch.cuda.device_count()
    if n_gpus == 0:
        return [None] * parallel
    per = devices or 1
    if parallel * per > n_gpus:
        raise SpecError(f"--parallel {parallel} × --devices {per} needs {parallel * per} GPUs; this node has {n_gpus}")
    return [",".join(str(g) for g in range(i * per, (i + 1) * per)) for i in range(parallel)]


def run_local(spec: Spec, devices: int | None = None, parallel: int = 1, log=print,
              blocked: set[str] = frozenset()) -> list[str]:
    """Run the cells as subprocesses, ``parallel`` at a time (one GPU slot each on a GPU node); a
    consumer starts once its producers have finished; ``blocked`` cells (their data cannot be read) are
    skipped, and so are their consumers. Progress: n/N, elapsed, estimated remaining time, each finished
    cell's headline metric."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    if parallel < 1:
        raise SpecError(f"--parallel must be >= 1, got {parallel}")
    slots = gpu_slots(parallel, devices)
    failed: set[str] = set()
    busy: set[str] = set()  # cells another launcher is running right now
    finished: set[str] = set()
    total, start, durations = len(spec.cells), time.time(), []
    pending = list(spec.cells)
    running: dict = {}  # future -> (cell, slot, t0, run dir, resumed)

    def tag(k: int) -> str:
        elapsed = time.time() - start
        left = len(pending) + len(running)
        eta = f", ~{left * sum(durations) / len(durations) / parallel / 60:.0f} min left" if durations and left else ""
        return f"[{k}/{total} {elapsed / 60:.1f} min{eta}]"

    def launch(cell: Cell, slot: str | None, d: Path) -> int:
        cmd = [sys.executable, "-m", "cxrbench.runner.cell", str(d)] + (["--devices", str(devices)] if devices else [])
        env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": slot} if slot is not None else {}))
        with writing(d / "stdout.log"):
            out = open(d / "stdout.log", "a")
        with out:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while pending or running:
            free = [s for s in range(parallel) if s not in {v[1] for v in running.values()}]
            for cell in list(pending):
                deps = {n.run_id for n in cell.needs.values()}
                unfinished = {c.run_id for c in pending} | {v[0].run_id for v in running.values()}
                if deps & unfinished:
                    continue  # a producer has not finished yet
                k = total - len(pending) - len(running) + 1
                st = status(spec, cell)
                if st == "done":
                    pending.remove(cell)
                    finished.add(cell.run_id)
                    log(f"{tag(k)} [done]    {cell.run_id}")
                    continue
                if cell.run_id in blocked:
                    pending.remove(cell)
                    failed.add(cell.run_id)
                    log(f"{tag(k)} [skipped] {cell.run_id}: its data cannot be read (named above)")
                    continue
                reason = ("a cell it needs failed" if deps & failed else
                          "a cell it needs is being run by another launcher; rerun afterwards" if deps & busy else None)
                if reason:
                    pending.remove(cell)
                    (busy if deps & busy else failed).add(cell.run_id)
                    log(f"{tag(k)} [skipped] {cell.run_id}: {reason}")
                    continue
                why = missing_needs(spec, cell)
                if why:
                    pending.remove(cell)
                    failed.add(cell.run_id)
                    log(f"{tag(k)} [failed]  {cell.run_id}: {why}")
                    continue
                if not free:
                    break
                slot = free.pop(0)
                pending.remove(cell)
                d = write_cell(spec, cell)
                log(f"{tag(k)} [{'resume' if st == 'partial' else 'run'}]     {cell.run_id}"
                    + (f" on GPU {slots[slot]}" if slots[slot] is not None else ""))
                running[pool.submit(launch, cell, slots[slot], d)] = (cell, slot, time.time(), d)
            if not running:
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                cell, _, t0, d = running.pop(fut)
                rc = fut.result()
                k = total - len(pending) - len(running)
                if rc == BUSY_EXIT:
                    busy.add(cell.run_id)
                    log(f"{tag(k)} [busy]    {cell.run_id}: another launcher is running it; not run twice")
                elif rc != 0 or status(spec, cell) != "done":
                    failed.add(cell.run_id)
                    why = cell_error(d)
                    log(f"{tag(k)} [failed]  {cell.run_id} (exit {rc}){': ' + why if why else ''}; "
                        f"see {d / 'stdout.log'}")
                else:
                    durations.append(time.time() - t0)
                    finished.add(cell.run_id)
                    log(f"{tag(k)} [finished] {cell.run_id} in {durations[-1]:.0f} s{headline(d)}")
    return sorted(failed)


def run_slurm(spec: Spec, devices: int = 1, nodes: int = 1, partition: str | None = None, timeout_min: int = 24 * 60,
              cpus_per_task: int = 8, cluster: str | None = None, max_num_timeout: int = 3, signal_delay_s: int = 120,
              log=print) -> list:
    """One submitit job per cell (``nodes`` × ``devices`` GPUs), with afterok dependencies along
    pipelines; Lightning reads SLURM's environment. A job that times out or is preempted is requeued
    by submitit (up to ``max_num_timeout`` times) and resumes from its newest readable checkpoint."""
    import submitit

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
        deps = [jobs[r].job_id for r in pending_producers]
        if cluster == "local":  # submitit's local executor, with SLURM's timeout signal signal_delay_s before the limit
            ex = submitit.LocalExecutor(folder=str(folder), max_num_timeout=max_num_timeout)
            ex.update_parameters(timeout_min=timeout_min, tasks_per_node=devices, gpus_per_node=0,
                                 signal_delay_s=signal_delay_s)
        else:
            ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster, slurm_max_num_timeout=max_num_timeout)
            params = dict(timeout_min=timeout_min, nodes=nodes, tasks_per_node=devices, gpus_per_node=devices,
                          cpus_per_task=cpus_per_task, name=cell.run_id[:60])
            if ex.cluster == "slurm":
                params.update(slurm_partition=partition, slurm_signal_delay_s=signal_delay_s)
                if deps:
                    params["slurm_additional_parameters"] = {"dependency": "afterok:" + ":".join(deps)}
            ex.update_parameters(**params)
        jobs[cell.run_id] = ex.submit(CellJob(), str(d), devices if devices * nodes > 1 else None, nodes)
        log(f"[submitted] {cell.run_id} as job {jobs[cell.run_id].job_id}")
    return list(jobs.values())


def submit_leaderboard(spec: Spec, jobs: list, out: str, partition: str | None = None) -> object | None:
    """A SLURM job that builds the leaderboards once every cell job has ended (afterany), so the boards
    are never built from a half-finished sweep."""
    import submitit

    from ..leaderboard import build_leaderboards

    ex = submitit.AutoExecutor(folder=str(spec.runs_dir / ".submitit" / "%j"))
    params = {"timeout_min": 60, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 2, "name": f"{spec.name}-leaderboard"}
    if ex.cluster == "slurm":
        params["slurm_partition"] = partition
        if jobs:
            params["slurm_additional_parameters"] = {"dependency": "afterany:" + ":".join(j.job_id for j in jobs)}
    ex.update_parameters(**{k: v for k, v in params.items() if ex.cluster == "slurm" or not k.startswith("slurm")})
    from ..references import load_references

    return ex.submit(build_leaderboards, str(spec.runs_dir), out, load_references(spec.references))


class CellJob:
    """What a SLURM (or submitit local) job runs: one cell. submitit calls ``checkpoint`` on a timeout or
    a preemption and requeues what it returns — the same cell, which then resumes from its newest
    readable checkpoint (``run_cell``)."""

    def __call__(self, run_dir: str, devices: int | None = None, nodes: int = 1) -> str:
        from .cell import run_cell

        return str(run_cell(run_dir, devices, nodes))

    def checkpoint(self, run_dir: str, devices: int | None = None, nodes: int = 1):
        import submitit

        return submitit.helpers.DelayedSubmission(CellJob(), run_dir, devices, nodes)
