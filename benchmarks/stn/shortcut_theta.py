"""What the STN's θ did on the shortcut twin: the mean (s_x, s_y, t_x, t_y) over each STN run's test images
(the ``affine/*`` metrics its result records), beside the initial band and the row window it samples.

    cxrbench bench benchmarks/stn/shortcut.yaml --leaderboard results/stn_shortcut
    python -m benchmarks.stn.shortcut_theta            # -> results/stn_shortcut/theta.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path, as the module form has it
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cxrbench.files import atomic_write_text  # noqa: E402

PARAMS = ("s_x", "s_y", "t_x", "t_y")


def rows(runs: Path) -> list[dict]:
    out = []
    for path in sorted(runs.glob("stn*/result.json")):
        rec = json.loads(path.read_text())
        m = rec["metrics"]
        twin = (rec["provenance"].get("twin_spec") or {}).get("options", {})
        out.append({"run": path.parent.name, "shortcut": twin.get("shortcut"), "seed": rec["seed"],
                    "auc": m["auc/mean"], "commit": rec["provenance"]["commit"],
                    **{p: m[f"affine/{p}/mean"] for p in PARAMS}})
    return out


def table(found: list[dict]) -> str:
    lines = ["# STN θ on the shortcut twin (benchmarks/stn/shortcut.yaml)", "",
             f"Provenance: data **twin** · commits {', '.join(sorted({r['commit'][:10] for r in found}))} · "
             f"{len(found)} runs · made by `python -m benchmarks.stn.shortcut_theta` from each run's result.json.", "",
             "θ starts at (1, 0.1, 0, 0): the full width and the rows within ±0.1 of the centre (normalised), "
             "i.e. rows 45–55% of the image; the shortcut's lettering lies below the lungs (from at least 76% of the height down). "
             "The sampled rows are (t_y ± s_y + 1) / 2 of the height.", "",
             "| run | shortcut | seed | test AUC | s_x | s_y | t_x | t_y | rows sampled |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        top, bottom = (r["t_y"] - r["s_y"] + 1) / 2, (r["t_y"] + r["s_y"] + 1) / 2
        lines.append(f"| {r['run']} | {r['shortcut']} | {r['seed']} | {r['auc']:.3f} | {r['s_x']:.3f} | {r['s_y']:.3f} | "
                     f"{r['t_x']:.4f} | {r['t_y']:.4f} | {100 * top:.1f}–{100 * bottom:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/stn_shortcut")
    ap.add_argument("--out", default="results/stn_shortcut/theta.md")
    args = ap.parse_args(argv)
    found = rows(Path(args.runs))
    if not found:
        raise SystemExit(f"{args.runs}: no stn*/result.json; run `cxrbench bench benchmarks/stn/shortcut.yaml` first")
    atomic_write_text(Path(args.out), table(found))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
