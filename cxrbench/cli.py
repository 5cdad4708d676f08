"""The ``cxrbench`` command. Subcommands:

  twin DATASET --out DIR --n N --seed S [--size PX] [--difficulty D] [--release R] [--shortcut S]   write a twin dataset
  summary DIR                                                          describe a twin dataset
  cache DATASET --root R --size S [--workers W]                        build the image cache
  leaderboard RUNS_DIR [--out results] [--references FILE ...]         AUC / IoU / Dice leaderboards
  fit|validate|test|predict --config CONFIG.yaml [...]                 LightningCLI of a method
  bench SPEC [--dry-run] [--estimate] [--devices N] [--parallel N] [--launcher local|slurm] [--nodes K]   run a sweep spec
  bench SPEC --budget [--gpu h100] [--mfu 0.4] [--budget-out FILE]     its FLOPs and GPU-hours, on any machine
"""

from __future__ import annotations

import argparse
import sys


def _twin(args: argparse.Namespace) -> int:
    from data_modules.twin import generate
    from data_modules.twin.summary import summarize

    options = {"release": args.release} if args.release else {}
    if args.dataset == "covidx" and (args.vocabulary or not args.release):
        options["vocabulary"] = args.vocabulary or "3class"
    if args.shortcut is not None:
        options["shortcut"] = args.shortcut
    out = generate(args.dataset, args.out, n=args.n, seed=args.seed, size=args.size,
                   difficulty=args.difficulty, workers=args.workers, force=args.force, **options)
    print(summarize(out))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from data_modules.twin.summary import summarize

    print(summarize(args.root))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from data_modules import DATAMODULES

    dm = DATAMODULES[args.dataset](root=args.root, cache_size=args.size, cache_dir=args.cache_dir,
                                   on_missing=args.on_missing, image_size=min(args.size, 224))
    cache = dm.image_cache()
    fresh = cache.is_valid()
    cache.ensure(workers=args.workers)
    state = "valid, reused" if fresh else "built"
    print(f"cache {cache.data_path} ({len(cache.paths)} images at {args.size}²): {state}")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from .leaderboard import build_leaderboards
    from .references import load_references

    # None: every benchmarks/*/references.yaml under the current folder
    for path in build_leaderboards(args.runs_dir, args.out, references=load_references(args.references)):
        print(f"wrote {path}")
    return 0


def _parallel(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--parallel takes a number of cells (1 or more) or 'auto', got {value!r}")
    return n


def _bench(args: argparse.Namespace) -> int:
    from .runner.bench import BenchOptions, bench

    if args.parallel == "auto":  # every GPU of the node busy: one cell per slot of --devices GPUs
        import torch

        args.parallel = max(1, torch.cuda.device_count() // max(1, args.devices or 1))
        print(f"cxrbench bench: --parallel auto: {args.parallel} cell(s) at once "
              f"({torch.cuda.device_count()} GPU(s), {args.devices or 1} per cell)", flush=True)

    return bench(BenchOptions(
        spec=args.spec, runs_dir=args.runs_dir, only=tuple(args.only or ()), dry_run=args.dry_run,
        estimate=args.estimate, budget=args.budget, gpu=args.gpu, mfu=args.mfu, budget_out=args.budget_out,
        budget_work=args.budget_work,
        launcher=args.launcher, devices=args.devices, nodes=args.nodes,
        parallel=args.parallel, partition=args.partition, timeout_min=args.timeout_min, leaderboard=args.leaderboard))


def registered_method_names() -> list[str]:
    """The names ``@register("...")`` gives the methods, read from the method files' text: the help lists
    them without importing torch (tests/test_cli_runs.py checks them against the imported registry)."""
    import re
    from pathlib import Path

    found = set()
    for f in sorted((Path(__file__).parent / "methods").glob("*.py")):
        found |= set(re.findall(r'^@register\("([^"]+)"\)', f.read_text(), flags=re.M))
    return sorted(found)


def build_parser() -> argparse.ArgumentParser:
    """The parser, built from declarations only (no torch, Lightning or numpy import): help in a blink."""
    from data_modules.twin import DATASETS, DEFAULT_SIZE

    from .boards import known_tasks

    epilog = (f"methods: {', '.join(registered_method_names())}\ntasks: {', '.join(sorted(known_tasks()))}\n"
              "LightningCLI: cxrbench fit|validate|test|predict --config benchmarks/<paper>/configs/<method>_<task>.yaml")
    p = argparse.ArgumentParser(prog="cxrbench", description="Chest X-ray paper benchmarks on shared data.",
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("twin", help="write a twin dataset (real metadata, synthetic pixels, real layout)")
    t.add_argument("dataset", choices=sorted(DATASETS))
    t.add_argument("--out", required=True, help="output folder (created atomically)")
    t.add_argument("--n", type=int, required=True, help="number of images (train rows for chexpert)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--size", type=int, default=None,
                   help="image side in pixels (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_SIZE.items()) + ")")
    t.add_argument("--difficulty", type=float, default=0.5, help="0 = obvious lesions, 1 = nearly invisible")
    t.add_argument("--vocabulary", choices=["3class", "binary"], default=None,
                   help="covidx labels: normal/pneumonia/COVID-19 (default) or positive/negative")
    t.add_argument("--release", default=None,
                   help="the release variant to write (default: the layout each twin always wrote): covidx cxr4, "
                        "cxr3, cxr2, v7a; chexpert small, full, both, chexlocalize; siim stage1, stage2, png; "
                        "lungs separate, combined")
    t.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    t.add_argument("--shortcut", type=float, default=None, metavar="S",
                   help="chexpert only: burn a 'PORTABLE' label below the lungs, tied to the abnormal label with "
                        "strength S in [0, 1] in train.csv and to nothing in valid.csv (STN paper's shortcut)")
    t.add_argument("--force", action="store_true", help="replace an earlier twin of another spec at --out")
    t.set_defaults(func=_twin)
    s = sub.add_parser("summary", help="describe a twin dataset")
    s.add_argument("root")
    s.set_defaults(func=_summary)
    c = sub.add_parser("cache", help="build (or validate) the uint8 memmap cache of a dataset at one size")
    c.add_argument("dataset", choices=["nih", "chexpert", "covidx", "siim", "lungs"])
    c.add_argument("--root", required=True)
    c.add_argument("--size", type=int, default=256)
    c.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    c.add_argument("--cache-dir", default=None, help="default: $CXRBENCH_CACHE/images or ~/.cache/cxrbench/images")
    c.add_argument("--on-missing", choices=["error", "skip"], default="error")
    c.set_defaults(func=_cache)
    lb = sub.add_parser("leaderboard", help="turn run results into the leaderboards (md + csv) and plots")
    lb.add_argument("runs_dir", help="folder searched recursively for result.json files")
    lb.add_argument("--out", default="results")
    lb.add_argument("--references", nargs="+", default=None, metavar="FILE",
                    help="the papers' printed numbers (references.yaml files; default: every "
                         "benchmarks/*/references.yaml under the current folder)")
    lb.set_defaults(func=_leaderboard)
    b = sub.add_parser("bench", help="run a sweep spec (benchmarks/all.yaml, smoke.yaml, <paper>/paper.yaml, "
                                     "<paper>/twin.yaml): tasks x methods x seeds x fractions")
    b.add_argument("spec")
    b.add_argument("--dry-run", action="store_true", help="list the cells, their ids and status; run nothing")
    b.add_argument("--devices", type=int, default=None, help="devices per cell (DDP through Lightning when > 1)")
    b.add_argument("--launcher", choices=["local", "slurm", "debug"], default="local",
                   help="local subprocesses, or one SLURM job per cell through submitit ('debug' runs submitit's local debug executor)")
    b.add_argument("--partition", default=None, help="SLURM partition")
    b.add_argument("--parallel", type=_parallel, default=1,
                   help="local launcher: cells at once (one GPU slot of --devices GPUs each on a GPU node); "
                        "'auto': as many as the node has GPUs ÷ --devices (1 without a GPU)")
    b.add_argument("--nodes", type=int, default=1, help="SLURM: nodes per cell (large pretrainings)")
    b.add_argument("--timeout-min", type=int, default=24 * 60,
                   help="SLURM: job time limit; a timed-out or preempted cell is requeued and resumes")
    b.add_argument("--runs-dir", default=None, help="override the spec's runs_dir")
    b.add_argument("--estimate", action="store_true",
                   help="measure a few training steps of each distinct config on this device and print the "
                        "device-hours of every cell and the total; runs nothing else")
    b.add_argument("--budget", action="store_true",
                   help="on any machine, no GPU or real image needed: the training and evaluation FLOPs, image "
                        "passes and GPU-hours of every cell and the total (cxrbench/runner/budget.py); runs nothing else")
    b.add_argument("--gpu", default="h100", help="--budget: the GPU whose peak the hours are projected on "
                                                  "(h100, h200, a100, l40s, v100)")
    b.add_argument("--mfu", type=float, default=0.4, help="--budget: the share of the GPU's peak a step reaches")
    b.add_argument("--budget-out", default=None, metavar="FILE", help="--budget: also write the table (markdown)")
    b.add_argument("--budget-work", default=None, metavar="DIR",
                   help="--budget: keep the FLOP probe's runs in DIR; a rerun with it counts only what is missing")
    b.add_argument("--only", nargs="+", default=None,
                   help="cell names to run (with the producer cells they need)")
    b.add_argument("--leaderboard", default=None, metavar="OUT",
                   help="write the leaderboards to OUT afterwards, beside the papers' numbers the spec's "
                        "references: name")
    b.set_defaults(func=_bench)
    return p


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from .files import describe_os_error

    if argv and argv[0] in LIGHTNING_COMMANDS:
        from .lightning_cli import run

        try:
            run(argv)
        except OSError as err:  # a read-only, full or missing folder: the user's to fix, so one line
            print(f"cxrbench {argv[0]}: error: {describe_os_error(err)}", file=sys.stderr)
            return 2
        return 0
    args = build_parser().parse_args(argv)  # --help and a bad option end here, before the heavy imports
    from data_modules.io import DataError
    from data_modules.twin.io import TwinError
    from data_modules.twin.sources import MissingSourceError

    from .artifacts import ArtifactError
    from .references import ReferencesError
    from .results import ResultError
    from .runner.spec import SpecError
    from .wandb_names import WandbNameError

    try:
        return args.func(args)
    except (TwinError, MissingSourceError, DataError, ResultError, SpecError, ArtifactError, WandbNameError,
            ReferencesError) as err:
        print(f"cxrbench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only, full or missing folder (``files.writing`` names the path written)
        print(f"cxrbench {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
