"""The ``cxrbench`` command. Subcommands:

  twin DATASET --out DIR --n N --seed S [--size PX] [--difficulty D]   write a twin dataset
  summary DIR                                                          describe a twin dataset
"""

from __future__ import annotations

import argparse
import sys


def _twin(args: argparse.Namespace) -> int:
    from data_modules.twin import generate
    from data_modules.twin.summary import summarize

    options = {"vocabulary": args.vocabulary} if args.dataset == "covidx" else {}
    out = generate(args.dataset, args.out, n=args.n, seed=args.seed, size=args.size,
                   difficulty=args.difficulty, workers=args.workers, force=args.force, **options)
    print(summarize(out))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from data_modules.twin.summary import summarize

    print(summarize(args.root))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from data_modules.twin import DEFAULT_SIZE, WRITERS

    p = argparse.ArgumentParser(prog="cxrbench", description="Chest X-ray paper benchmarks on shared data.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("twin", help="write a twin dataset (real metadata, synthetic pixels, real layout)")
    t.add_argument("dataset", choices=sorted(WRITERS))
    t.add_argument("--out", required=True, help="output folder (created atomically)")
    t.add_argument("--n", type=int, required=True, help="number of images (train rows for chexpert)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--size", type=int, default=None,
                   help="image side in pixels (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_SIZE.items()) + ")")
    t.add_argument("--difficulty", type=float, default=0.5, help="0 = obvious lesions, 1 = nearly invisible")
    t.add_argument("--vocabulary", choices=["3class", "binary"], default="3class",
                   help="covidx labels: normal/pneumonia/COVID-19 or positive/negative")
    t.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    t.add_argument("--force", action="store_true", help="replace an earlier twin of another spec at --out")
    t.set_defaults(func=_twin)
    s = sub.add_parser("summary", help="describe a twin dataset")
    s.add_argument("root")
    s.set_defaults(func=_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    from data_modules.twin.io import TwinError
    from data_modules.twin.sources import MissingSourceError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (TwinError, MissingSourceError, FileNotFoundError) as err:
        print(f"cxrbench {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
