"""``cxrbench bench SPEC``: the sweep command's policy, in the order it applies — load and select the
spec, check every cell's config, then exactly one of: print the dry run, count the budget (FLOPs and
GPU-hours, device-free), estimate the cost from steps timed here, or launch
(locally or on SLURM) and build the leaderboards. ``cxrbench.cli`` only parses the arguments."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .spec import Spec, load_spec


@dataclass(frozen=True)
class BenchOptions:
    """What the command line asks of a sweep (``cxrbench bench --help`` says each)."""

    spec: str
    runs_dir: str | None = None
    only: tuple[str, ...] = ()
    dry_run: bool = False
    estimate: bool = False
    budget: bool = False
    gpu: str = "h100"
    mfu: float = 0.4
    budget_out: str | None = None
    budget_work: str | None = None
    launcher: str = "local"  # local | slurm | debug
    devices: int | None = None
    nodes: int = 1
    parallel: int = 1
    partition: str | None = None
    timeout_min: int = 24 * 60
    leaderboard: str | None = None


def bench(opts: BenchOptions) -> int:
    """Run the sweep as ``opts`` asks; the exit status: 0 done, 1 some cell failed, 2 refused."""
    from ..wandb_names import check_wandb_env

    if opts.budget:  # its options first: a wrong GPU name is said before the spec's checks run
        from .budget import check_gpu, use_full_scale_twins_unless_data_is_set

        check_gpu(opts.gpu, opts.mfu)
        use_full_scale_twins_unless_data_is_set()
    check_wandb_env()  # a malformed WANDB_PROJECT/WANDB_ENTITY stops the sweep before any data or run folder is made
    # at once, before the spec's checks import torch, Lightning and every method (seconds on a cold start)
    print(f"cxrbench bench {opts.spec}: checking the spec and every cell's config", flush=True)
    spec = select(load_spec(opts.spec, runs_dir=opts.runs_dir), opts.only)
    problem = launcher_problem(opts)
    if problem:
        print(f"cxrbench bench: error: {problem}", file=sys.stderr)
        return 2
    from .launch import check_configs

    errors = check_configs(spec)
    if opts.dry_run:
        print_cells(spec)
    if errors:
        print(f"{spec.path}: {len(errors)} cell config(s) the LightningCLI parser refuses; nothing was run:",
              file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 2
    if opts.dry_run:
        print_data_problems(spec)
        return 0
    if opts.budget:
        from .budget import budget

        budget(spec, gpu=opts.gpu, mfu=opts.mfu, out=opts.budget_out, work=opts.budget_work)
        return 0
    if opts.estimate:
        from .estimate import estimate
        from .launch import prepare_data

        blocked = prepare_data(spec)
        spec.cells = [c for c in spec.cells if c.run_id not in blocked]  # their data cannot be read: nothing to time
        estimate(spec, devices=opts.devices)
        return 0
    return launch(spec, opts)


def select(spec: Spec, only: tuple[str, ...]) -> Spec:
    if only:
        added = spec.select(list(only))
        if added:
            print(f"--only: also running the producers these cells need: {', '.join(added)}")
    return spec


def launcher_problem(opts: BenchOptions) -> str | None:
    """Launcher options that cannot go together, before anything is prepared."""
    if opts.nodes > 1 and opts.launcher == "local":
        return "--nodes > 1 needs --launcher slurm (a cell across nodes is a SLURM job)"
    if opts.parallel > 1 and opts.launcher != "local":
        return "--parallel is for the local launcher; SLURM runs every cell as its own job"
    return None


def print_cells(spec: Spec) -> None:
    """The dry run: every cell with its id, status, needs and products."""
    from .launch import status

    print(f"sweep {spec.name} ({spec.scale}): {len(spec.cells)} cells -> {spec.runs_dir}")
    for c in spec.cells:
        needs = "".join(f" needs {r}={n.cell}:{n.artifact}" for r, n in c.needs.items())
        makes = f" produces {','.join(c.produces)}" if c.produces else ""
        fold = "" if c.fold is None else f" fold={c.fold}"
        print(f"  [{status(spec, c):8s}] {c.run_id}  task={c.task or '-'} method={c.method} seed={c.seed} "
              f"fraction={c.fraction:g}{fold}{makes}{needs}")


def print_data_problems(spec: Spec) -> None:
    """Which data are twins and which real, then every problem of every dataset in one pass."""
    from .launch import data_kinds, data_problems, problem_line

    for line in data_kinds(spec):
        print(f"  data: {line}")
    for message, cells in data_problems(spec):
        print(f"  data: {problem_line(message, cells)}")


def launch(spec: Spec, opts: BenchOptions) -> int:
    """Prepare the data, run every cell (locally, or as SLURM jobs), then the leaderboards."""
    from .launch import prepare_data, run_local, run_slurm, submit_leaderboard

    blocked = prepare_data(spec)
    if opts.launcher == "local":
        failed = run_local(spec, opts.devices, parallel=opts.parallel, blocked=blocked)
    else:
        if blocked:  # SLURM: cells whose data cannot be read are not submitted (their consumers then miss a need)
            spec.cells = [c for c in spec.cells if c.run_id not in blocked]
        jobs = run_slurm(spec, opts.devices or 1, nodes=opts.nodes, partition=opts.partition,
                         timeout_min=opts.timeout_min, cluster="debug" if opts.launcher == "debug" else None)
        if opts.launcher == "slurm":
            if opts.leaderboard:  # built by a job that waits for every cell job, never from a half-finished sweep
                job = submit_leaderboard(spec, jobs, opts.leaderboard, partition=opts.partition)
                print(f"[submitted] leaderboards -> {opts.leaderboard} as job {job.job_id} (after every cell job)")
            return 0
        for j in jobs:
            j.result()
        failed = []
    if opts.leaderboard:
        write_boards(spec, opts.leaderboard)
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def write_boards(spec: Spec, out: str) -> None:
    from ..leaderboard import build_leaderboards
    from ..references import load_references

    for p in build_leaderboards(spec.runs_dir, out, references=load_references(spec.references)):
        print(f"wrote {p}")
