"""Run results -> the AUC, IoU-accuracy and Dice leaderboards (markdown + csv) and their plots.

    cxrbench leaderboard RUNS_DIR [--out results/]

Each cell is the mean ± std over seeds (and folds, where a protocol has them) with n, the
patient-bootstrap 95% CI of that mean where the runs left per-sample predictions (``[CI lo–hi]``),
and the paper's number beside it where the paper has one. ``comparisons.md`` holds the paired
bootstrap of every two methods tested on identical images (difference, CI, p). Rows are the sweep's method names (``result.json``'s
``method``: e.g. ``amm-densenet121``, or ``simclr`` for the probes of a SimCLR encoder). Every file
opens with the provenance of the numbers it holds: twin or real data, scale, seeds,
commits.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_modules.io import atomic_write_text

from .localization import THRESHOLDS
from .metrics.bootstrap import N_BOOT, paired_difference, patient_resamples, seed_mean_boot, seed_mean_ci
from .papers import NOTES, reference
from .results import read_results


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    tasks: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...]  # (metric key, column label)
    row_by_task: bool = False  # rows (task, method, fraction) instead of (method, fraction)


BOARDS = (
    Board("auc", "Classification: AUC (mean over classes)",
          ("nih8-cls", "nih-cardiomegaly", "chexpert-abnormal", "nih14-linear"),
          (("auc/mean", "AUC"), ("pr_auc/mean", "PR-AUC"), ("f1/weighted", "F1 (weighted)"))),
    # SS-CXR Tables 1–4: one row per fine-tune (method-task); shift/ = the held-out sources (COHEN, ACTMED).
    # The paper's binary "TPR" column is the recall of the non-disease class: our TNR (see papers.py).
    Board("covidx", "COVIDx (SS-CXR Tables 1–4): in-distribution test and held-out sources (shift/)", ("covidx",),
          (("auc/mean", "AUC"), ("pr_auc/mean", "PR-AUC"), ("accuracy", "ACC"), ("tnr", "TNR (paper's TPR)"),
           ("fpr", "FPR"), ("fnr", "FNR"), ("shift/auc/mean", "shift AUC"), ("shift/accuracy", "shift ACC"))),
    Board("iou", "Weakly supervised localization: IoU-accuracy (mean over classes)",
          ("nih8-loc", "nih-cardiomegaly"),
          (*((f"iou_acc@{t}/mean", f"T={t}") for t in THRESHOLDS), ("loc/boxes_per_image", "boxes/map")),
          row_by_task=True),
    Board("dice", "Segmentation: per-image Dice (empty vs empty = 1), IoU, HD95",
          ("lung-seg", "siim-seg"),
          (("dice/mean", "Dice"), ("dice_pos/mean", "Dice (positives)"), ("iou/mean", "IoU"), ("hd95/mean", "HD95 px"))),
)


def _fmt(values: list[float]) -> tuple[float, float, int]:
    v = np.array([x for x in values if not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


#: A classification run on the NIH box diseases also scores its heatmaps on the 880 box images:
#: those numbers belong to the localization task.
LOC_TASK = {"nih8-cls": "nih8-loc"}


def aggregate(records: list[dict]) -> pd.DataFrame:
    """Long table: task, method, fraction, metric, mean, std, n, paper, paper_source, seeds (seed/kFOLD)."""
    groups: dict = defaultdict(list)
    for r in records:
        for metric, value in r["metrics"].items():
            task = LOC_TASK.get(r["task"], r["task"]) if metric.startswith(("iou_acc", "loc/")) else r["task"]
            # folds (CheXpert CV) are aggregated like seeds: n = seeds × folds
            run = str(r["seed"]) if r.get("fold") is None else f"{r['seed']}/k{r['fold']}"
            groups[(task, r["method"], float(r["fraction"]), metric)].append((run, value))
    rows = []
    for (task, method, fraction, metric), items in sorted(groups.items()):
        mean, std, n = _fmt([v for _, v in items])
        ref = reference(task, method, metric, fraction)
        rows.append({"task": task, "method": method, "fraction": fraction, "metric": metric, "mean": mean,
                     "std": std, "n": n, "paper": ref[0] if ref else math.nan, "paper_source": ref[1] if ref else "",
                     "seeds": " ".join(str(s) for s, _ in sorted(items))})
    return pd.DataFrame(rows, columns=["task", "method", "fraction", "metric", "mean", "std", "n", "paper",
                                       "paper_source", "seeds"])


#: headline metric -> how the bootstrap scores it from predictions.csv
BOOTSTRAP = {"auc/mean": "auc", "dice/mean": "mean"}


def _test_predictions(record: dict, kind: str):
    """(index, patients, values, targets) of a run's test split from its predictions.csv, or None."""
    from .results import read_predictions

    table = read_predictions(record.get("_dir", "")) if record.get("_dir") else None
    if table is None:
        return None
    test = table[table["split"] == "test"].sort_values("index")
    if kind == "auc":
        probs = [c for c in test.columns if c.startswith("prob/")]
        if not probs:
            return None
        values, target = test[probs].to_numpy(float), test[[f"label/{c[5:]}" for c in probs]].to_numpy(float)
    else:
        if "dice" not in test:
            return None
        values, target = test["dice"].to_numpy(float), None
    return test["index"].to_numpy(), test["patient_id"].to_numpy(), values, target


def bootstrap(records: list[dict], n_boot: int = N_BOOT) -> tuple[dict, pd.DataFrame]:
    """Patient-bootstrap 95% CIs of each (task, method, fraction)'s seed-averaged headline metric, and
    the paired A − B comparison of every two methods scored on identical test images.

    Runs are grouped like the leaderboard's cells; a group whose runs were tested on different images
    (CV folds) gets no CI, and only groups on one identical test set are compared."""
    groups: dict = defaultdict(list)
    for r in records:
        for metric, kind in BOOTSTRAP.items():
            if metric in r["metrics"]:
                got = _test_predictions(r, kind)
                if got is not None:
                    groups[(r["task"], r["method"], float(r["fraction"]), metric)].append(got)
    cis, by_set, resamples = {}, defaultdict(dict), {}
    for key, runs in groups.items():
        if any(not np.array_equal(runs[0][0], run[0]) for run in runs):
            continue  # different test images (folds): no common resampling
        task, method, fraction, metric = key
        test_set = (task, fraction, metric, hash(runs[0][0].tobytes()))
        if test_set not in resamples:
            resamples[test_set] = patient_resamples(runs[0][1], n_boot)
        pairs = [(v, t) for _, _, v, t in runs]
        boot = seed_mean_boot(BOOTSTRAP[metric], pairs, resamples[test_set])
        cis[key] = seed_mean_ci(BOOTSTRAP[metric], pairs, resamples[test_set], boot=boot)
        by_set[test_set][method] = (pairs, boot)
    rows = []
    for (task, fraction, metric, _), methods in sorted(by_set.items(), key=lambda kv: kv[0][:3]):
        names = sorted(methods)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (pa, ba), (pb, bb) = methods[a], methods[b]
                d = paired_difference(BOOTSTRAP[metric], pa, pb, resamples[(task, fraction, metric, _)],
                                      boot_a=ba, boot_b=bb)
                rows.append({"task": task, "fraction": fraction, "metric": metric, "a": a, "b": b, **d})
    return cis, pd.DataFrame(rows, columns=["task", "fraction", "metric", "a", "b", "diff", "ci_low", "ci_high", "p",
                                            "n_boot"])


def render_comparisons(comparisons: pd.DataFrame, records: list[dict]) -> str:
    lines = ["# Paired comparisons: method A − method B on identical test images", ""]
    if comparisons.empty:
        return "\n".join(lines + ["No two methods share a test set with per-sample predictions yet.", ""])
    lines += [*provenance(records), "",
              "Patient-level paired bootstrap (both methods' seed-averaged metric on the same resampled "
              f"patients, {int(comparisons['n_boot'].max())} resamples); p is two-sided. A difference whose "
              "CI holds 0 is not distinguishable from noise on this test set.", "",
              "| task | fraction | metric | A | B | A − B | 95% CI | p |", "|---|---|---|---|---|---|---|---|"]
    for r in comparisons.itertuples(index=False):
        lines.append(f"| {r.task} | {r.fraction:g} | {r.metric} | {r.a} | {r.b} | {r.diff:+.3f} | "
                     f"{r.ci_low:+.3f} … {r.ci_high:+.3f} | {r.p:.3f} |")
    return "\n".join(lines + [""])


def cell(row: pd.Series | None) -> str:
    if row is None or row["n"] == 0:
        return "–"
    text = f"{row['mean']:.3f} ± {row['std']:.3f} (n={int(row['n'])})"
    if not math.isnan(row.get("ci_low", math.nan)):
        text += f" [CI {row['ci_low']:.3f}–{row['ci_high']:.3f}]"
    if not math.isnan(row["paper"]):
        text += f" [paper {row['paper']:.3f}]"
    return text


def provenance(records: list[dict]) -> list[str]:
    data = sorted({r["provenance"]["data"] for r in records})
    scale = sorted({str(r["provenance"]["scale"]) for r in records})
    commits = sorted({str(r["provenance"]["commit"])[:10] for r in records})
    seeds = sorted({r["seed"] for r in records})
    lines = [
        f"Provenance: data **{' + '.join(data)}** · scale {', '.join(scale)} · seeds {', '.join(map(str, seeds))} · "
        f"commits {', '.join(commits)} · {len(records)} runs · generated {_dt.date.today().isoformat()}",
    ]
    if "twin" in data:
        lines.append("These numbers come from the **twin** (real metadata, synthetic pixels): they check that "
                     "the pipeline works end to end and are *not* comparable to the papers' numbers.")
    return lines


def render_board(board: Board, table: pd.DataFrame, records: list[dict]) -> tuple[str, pd.DataFrame]:
    sub = table[table["task"].isin(board.tasks) & table["metric"].isin([m for m, _ in board.metrics])]
    recs = [r for r in records if r["task"] in board.tasks or LOC_TASK.get(r["task"]) in board.tasks]
    header = [f"# {board.title}", ""]
    if sub.empty:
        return "\n".join(header + ["No runs on these tasks yet.", ""]), sub
    header += [*provenance(recs), ""]
    notes = [f"Note ({t}): {NOTES[t]}" for t in board.tasks if t in NOTES and t in set(sub["task"])]
    if notes:
        header += [*notes, ""]
    index = {(r.task, r.method, r.fraction, r.metric): r for r in sub.itertuples(index=False)}

    def get(task, method, fraction, metric):
        r = index.get((task, method, fraction, metric))
        return None if r is None else pd.Series(r._asdict())

    present = sorted({(r.task, r.metric) for r in sub.itertuples()})
    if board.row_by_task:
        cols = [label for m, label in board.metrics if any(pm == m for _, pm in present)]
        keys = [m for m, label in board.metrics if label in cols]
        lines = ["| task | method | fraction | " + " | ".join(cols) + " |", "|---" * (3 + len(cols)) + "|"]
        for task, method, fraction in sorted({(r.task, r.method, r.fraction) for r in sub.itertuples()}):
            cells = [cell(get(task, method, fraction, m)) for m in keys]
            lines.append(f"| {task} | {method} | {fraction:g} | " + " | ".join(cells) + " |")
    else:
        colspec = [(t, m, f"{t} {label}") for t in board.tasks for m, label in board.metrics if (t, m) in present]
        lines = ["| method | fraction | " + " | ".join(c[2] for c in colspec) + " |", "|---" * (2 + len(colspec)) + "|"]
        for method, fraction in sorted({(r.method, r.fraction) for r in sub.itertuples()}):
            cells = [cell(get(t, method, fraction, m)) for t, m, _ in colspec]
            lines.append(f"| {method} | {fraction:g} | " + " | ".join(cells) + " |")
    return "\n".join(header + lines + [""]), sub


def plots(table: pd.DataFrame, records: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    tag = " / ".join(sorted({r["provenance"]["data"] for r in records})) + " data"
    # Label-fraction curves: every (task, metric) measured at more than one fraction.
    for (task, metric), g in table.groupby(["task", "metric"]):
        if g["fraction"].nunique() < 2 or not metric.endswith("/mean") or metric.startswith("iou_acc"):
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, m in g.groupby("method"):
            m = m.sort_values("fraction")
            ax.errorbar(m["fraction"] * 100, m["mean"], yerr=m["std"], marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set(xlabel="labelled fraction (%)", ylabel=metric, title=f"{task} ({tag})")
        ax.legend(fontsize=7)
        made.append(_save(fig, out / f"fractions_{task}_{metric.replace('/', '_')}.png"))
    # IoU-accuracy vs threshold.
    iou = table[table["metric"].str.match(r"iou_acc@[0-9.]+/mean")]
    for task, g in iou.groupby("task"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for (method, fraction), m in g.groupby(["method", "fraction"]):
            t = m["metric"].str.extract(r"@([0-9.]+)/")[0].astype(float)
            order = np.argsort(t.to_numpy())
            ax.errorbar(t.to_numpy()[order], m["mean"].to_numpy()[order], yerr=m["std"].to_numpy()[order],
                        marker="o", capsize=3, label=f"{method} @{fraction:g}")
        ax.set(xlabel="T(IoU)", ylabel="IoU-accuracy", title=f"{task} ({tag})", ylim=(0, 1))
        ax.legend(fontsize=7)
        made.append(_save(fig, out / f"iou_vs_threshold_{task}.png"))
    # ROC curves (first seed of each method) where runs kept them.
    by_task: dict = defaultdict(dict)
    for r in sorted(records, key=lambda r: r["seed"]):
        for cls, pts in (r.get("curves") or {}).get("roc", {}).items():
            by_task[(r["task"], cls)].setdefault((r["method"], r["fraction"]), pts)
    for (task, cls), curves in by_task.items():
        fig, ax = plt.subplots(figsize=(4, 4))
        for (method, fraction), pts in sorted(curves.items()):
            ax.plot(pts["fpr"], pts["tpr"], label=f"{method} @{fraction:g}")
        ax.plot([0, 1], [0, 1], ":", color="gray")
        ax.set(xlabel="FPR", ylabel="TPR", title=f"{task}: {cls} ({tag})")
        ax.legend(fontsize=7)
        made.append(_save(fig, out / f"roc_{task}_{cls.replace(' ', '_')}.png"))
    return made


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def build_leaderboards(runs_dir: str | Path, out: str | Path = "results") -> list[Path]:
    records = read_results(runs_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(records)
    cis, comparisons = bootstrap(records)
    table["ci_low"] = [cis.get((r.task, r.method, r.fraction, r.metric), (math.nan,))[0] for r in table.itertuples()]
    table["ci_high"] = [cis.get((r.task, r.method, r.fraction, r.metric), (math.nan, math.nan))[1]
                        for r in table.itertuples()]
    written = []
    for board in BOARDS:
        md, sub = render_board(board, table, records)
        atomic_write_text(out / f"leaderboard_{board.name}.md", md)
        recs = [r for r in records if r["task"] in board.tasks]
        csv = sub.assign(
            data=" + ".join(sorted({r["provenance"]["data"] for r in recs})) if recs else "",
            scale=" ".join(sorted({str(r["provenance"]["scale"]) for r in recs})),
            commits=" ".join(sorted({str(r["provenance"]["commit"])[:10] for r in recs})),
        )
        atomic_write_text(out / f"leaderboard_{board.name}.csv", csv.to_csv(index=False))
        written += [out / f"leaderboard_{board.name}.md", out / f"leaderboard_{board.name}.csv"]
    atomic_write_text(out / "comparisons.md", render_comparisons(comparisons, records))
    atomic_write_text(out / "comparisons.csv", comparisons.to_csv(index=False))
    written += [out / "comparisons.md", out / "comparisons.csv"]
    return written + plots(table, records, out)
