"""Run results -> the AUC, IoU-accuracy and Dice leaderboards (markdown + csv) and their plots.

    cxrbench leaderboard RUNS_DIR [--out results/] [--references FILE ...]

Each cell is the mean ± std over seeds (and folds, where a protocol has them) with n, the
patient-bootstrap 95% CI of that mean where the runs left per-sample predictions (``[CI lo–hi]``),
and the paper's number beside it where the paper has one (``cxrbench.references``: the papers'
printed numbers, from the references.yaml files a spec or ``--references`` names; by default every
``benchmarks/*/references.yaml`` under the current folder). ``comparisons.md`` holds the paired
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
from pathlib import Path

import numpy as np
import pandas as pd

from .files import atomic_write_text

from .boards import BOARDS, Board  # noqa: F401  (Board re-exported: the boards' declarations live there)
from .files import CannotWrite, remove_interrupted_writes, remove_own_partial_writes, remove_stale_outputs, writing
from .metrics.bootstrap import (N_BOOT, format_p, holm, interval, paired_seed_difference, patient_resamples, run_boot,
                                score, two_level_boot)
from .recipe import data_key, differences
from .references import References, load_references
from .results import read_results


def _fmt(values: list[float]) -> tuple[float, float, int]:
    v = np.array([x for x in values if not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


#: A classification run on the NIH box diseases also scores its heatmaps on the 880 box images:
#: those numbers belong to the localization task.
LOC_TASK = {"nih8-cls": "nih8-loc"}
UNFINGERPRINTED = "older record without a recipe"


def _run_key(r: dict) -> str:
    """A run's place among a cell's samples: its seed, and its fold where the protocol has folds."""
    return str(r["seed"]) if r.get("fold") is None else f"{r['seed']}/k{r['fold']}"


def _data_of(r: dict) -> str:
    ident = r.get("data_identity")
    if ident:
        return data_key(ident)
    prov = r.get("provenance") or {}
    return f"{prov.get('data', '?')} {prov.get('scale', '?')} (no data identity)"


def _comparable(r: dict) -> bool:
    """A paper's number stands beside a run only when the run is the paper's recipe on the real data."""
    prov = r.get("provenance") or {}
    return prov.get("data") == "real" and str(prov.get("scale")) == "full"


def assign_rows(records: list[dict]) -> list[dict]:
    """Each record's board row (``_row``) and data identity (``_data``), re-tests removed.

    - A row is one recipe: runs of one method name whose recipe fingerprints differ are separate rows,
      labelled by what differs (``amm (lr=0.01, transforms=amm)``); a record without a fingerprint (written
      before recipes were recorded) is a row of its own, flagged, never pooled with any other.
    - A re-test of one checkpoint (same recipe, data, seed, fraction, fold and checkpoint sha256)
      replaces the earlier record: the newest result.json is kept, the rest dropped.
    """
    newest: dict = {}
    kept = []
    for r in records:
        ckpt = (r.get("checkpoint") or {}).get("sha256")
        if ckpt is None:
            kept.append(r)
            continue
        key = (r["task"], r["method"], (r.get("recipe") or {}).get("fingerprint"), _data_of(r), _run_key(r),
               float(r["fraction"]), ckpt)
        if key not in newest or r.get("_mtime", 0) >= newest[key].get("_mtime", 0):
            newest[key] = r
    kept = choose_lr(kept + list(newest.values()))
    recipes: dict = defaultdict(dict)
    for r in kept:
        if r.get("recipe"):
            recipes[(r["task"], r["method"])][r["recipe"]["fingerprint"]] = r["recipe"].get("config") or {}
    labels = {key: (differences(fps) if len(fps) > 1 else {}) for key, fps in recipes.items()}
    out = []
    for r in kept:
        fp = (r.get("recipe") or {}).get("fingerprint")
        if fp is None:  # its recipe is unknown: it cannot be a seed of anything, so it is a row of its own
            row = f"{r['method']} ({UNFINGERPRINTED}: {r['run_id']})"
        else:
            label = labels[(r["task"], r["method"])].get(fp)
            row = f"{r['method']} ({label})" if label else r["method"]
        out.append({**r, "_row": row, "_data": _data_of(r), "_fingerprint": fp or ""})
    return out


def choose_lr(records: list[dict]) -> list[dict]:
    """The records of an lr search (``lr_search`` in result.json: one run per grid point) reduced to the run
    best on validation per recipe, data, seed (and fold) and fraction — the paper's protocol (CAMContrast
    Table A.1) — its lr kept as ``_lr``. A grid point without a finite validation score is never chosen; a
    search none of whose points scored leaves no record. Other records pass unchanged."""
    best: dict = {}
    out = []
    for r in records:
        search = r.get("lr_search")
        if not search:
            out.append(r)
            continue
        if search.get("score") is None:
            continue
        key = (r["task"], r["method"], (r.get("recipe") or {}).get("fingerprint"), _data_of(r), _run_key(r),
               float(r["fraction"]))
        sign = 1.0 if search.get("mode", "max") == "max" else -1.0
        if key not in best or sign * search["score"] > sign * best[key]["lr_search"]["score"]:
            best[key] = r
    return out + [{**r, "_lr": float(r["lr_search"]["lr"])} for r in best.values()]


def _references(references: References | None) -> References:
    """The references given, or (None) every benchmarks/*/references.yaml under the current folder."""
    return load_references() if references is None else references


def aggregate(records: list[dict], references: References | None = None) -> pd.DataFrame:
    """Long table: task, row, method, data, fraction, metric, mean, std, n, paper, paper_source, seeds,
    recipe. One group = one recipe on one data identity at one fraction (``assign_rows``). ``paper`` is
    the reference's number (``references``; None: the default files, ``load_references()``)."""
    reference = _references(references).reference
    if not records or "_row" not in records[0]:
        records = assign_rows(records)
    groups: dict = defaultdict(list)
    for r in records:
        for metric, value in r["metrics"].items():
            task = LOC_TASK.get(r["task"], r["task"]) if metric.startswith(("iou_acc", "loc/")) else r["task"]
            # folds (CheXpert CV) are aggregated like seeds: n = seeds × folds
            groups[(task, r["_row"], r["method"], r["_data"], float(r["fraction"]), metric)].append((_run_key(r), value, r))
    rows = []
    for (task, row, method, data, fraction, metric), items in sorted(groups.items()):
        mean, std, n = _fmt([v for _, v, _ in items])
        ref = reference(task, method, metric, fraction) if all(_comparable(r) for _, _, r in items) else None
        rows.append({"task": task, "row": row, "method": method, "data": data, "fraction": fraction, "metric": metric,
                     "mean": mean, "std": std, "n": n, "paper": ref[0] if ref else math.nan,
                     "paper_source": ref[1] if ref else "",
                     "paper_hidden": ref is None and reference(task, method, metric, fraction) is not None,
                     "seeds": " ".join(sorted(k for k, _, _ in items)),
                     "recipe": " ".join(sorted({r["_fingerprint"] for _, _, r in items if r["_fingerprint"]})),
                     "lr": ", ".join(f"seed {k}: {r['_lr']:g}" for k, _, r in sorted(items, key=lambda i: i[0]) if "_lr" in r)})
    return pd.DataFrame(rows, columns=["task", "row", "method", "data", "fraction", "metric", "mean", "std", "n", "paper",
                                       "paper_source", "paper_hidden", "seeds", "recipe", "lr"])


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
    """95% CIs of each cell's seed-averaged headline metric that cover seeds *and* test patients
    (``two_level_boot``), and the paired A − B comparison of every two rows scored on identical test
    images, per seed pair where seeds match, Holm-adjusted within each family (task, data, fraction,
    metric). Each test set is resampled once and shared by every run on it."""
    if records and "_row" not in records[0]:
        records = assign_rows(records)
    resamples: dict = {}
    groups: dict = defaultdict(dict)  # cell -> run key -> (test-set key, run_boot, point score)
    for r in records:
        for metric, kind in BOOTSTRAP.items():
            if metric not in r["metrics"]:
                continue
            got = _test_predictions(r, kind)
            if got is None:
                continue
            index, patients, values, target = got
            test_set = (r["task"], hash(index.tobytes()))
            if test_set not in resamples:
                resamples[test_set] = patient_resamples(patients, n_boot)
            boot = run_boot(kind, values, target, resamples[test_set])
            groups[(r["task"], r["_row"], r["_data"], float(r["fraction"]), metric)][_run_key(r)] = (
                test_set, boot, score(kind, values, target))
    cis = {}
    families: dict = defaultdict(dict)
    for (task, row, data, fraction, metric), runs in groups.items():
        boot = two_level_boot([b for _, b, _ in runs.values()])
        cis[(task, row, data, fraction, metric)] = interval(boot)
        families[(task, data, fraction, metric)][row] = runs
    out = []
    for (task, data, fraction, metric), rows in sorted(families.items()):
        family = []
        names = sorted(rows)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                ra, rb = rows[a], rows[b]
                common = set(ra) & set(rb)
                sets_a, sets_b = {t for t, _, _ in ra.values()}, {t for t, _, _ in rb.values()}
                if common and all(ra[k][0] == rb[k][0] for k in common):
                    pass  # paired per seed (and fold) on the same test images
                elif not (len(sets_a) == 1 and sets_a == sets_b):
                    continue  # no shared test images: no paired comparison
                d = paired_seed_difference({k: v[1] for k, v in ra.items()}, {k: v[1] for k, v in rb.items()})
                diff = np.mean([v[2] for v in ra.values()]) - np.mean([v[2] for v in rb.values()])
                family.append({"task": task, "data": data, "fraction": fraction, "metric": metric, "a": a, "b": b,
                               "diff": float(diff), **d})
        adjusted = holm([f["p"] for f in family])
        for f, p in zip(family, adjusted):
            f.update(p_holm=float(p), family_size=len(family))
        out += family
    return cis, pd.DataFrame(out, columns=["task", "data", "fraction", "metric", "a", "b", "diff", "ci_low", "ci_high",
                                           "p", "p_holm", "family_size", "paired_seeds", "n_boot"])


def render_comparisons(comparisons: pd.DataFrame, records: list[dict]) -> str:
    lines = ["# Paired comparisons: row A − row B on identical test images", ""]
    if comparisons.empty:
        return "\n".join(lines + ["No two rows share a test set with per-sample predictions yet.", ""])
    n_boot = int(comparisons["n_boot"].max())
    lines += [*provenance(records), "",
              f"Two-level paired bootstrap ({n_boot} replicates): each replicate draws the seeds both rows share "
              "(their per-seed differences; unpaired draws of each row's seeds where none are shared) and the test "
              "patients. p is two-sided; **p (Holm)** is adjusted for the family of comparisons it belongs to "
              "(every pair of rows on one task, data, fraction and metric: `family` comparisons), and only it "
              "supports a claim. A difference whose CI holds 0 is not distinguishable from noise.", ""]
    for (task, data, fraction, metric), g in comparisons.groupby(["task", "data", "fraction", "metric"], sort=True):
        lines += [f"## {task} · {metric} · fraction {fraction:g} · {data} ({len(g)} comparisons in the family)", "",
                  "| A | B | A − B | 95% CI | paired seeds | p | p (Holm) |", "|---|---|---|---|---|---|---|"]
        for r in g.itertuples(index=False):
            lines.append(f"| {r.a} | {r.b} | {r.diff:+.3f} | {r.ci_low:+.3f} … {r.ci_high:+.3f} | {r.paired_seeds} | "
                         f"{format_p(r.p, r.n_boot)} | {format_p(r.p_holm, r.n_boot)} |")
        lines.append("")
    return "\n".join(lines)


def cell(row: pd.Series | None) -> str:
    if row is None or row["n"] == 0:
        return "–"
    if int(row["n"]) == 1:  # one run: its value and the test-set interval alone, no spread to show
        text = f"{row['mean']:.3f} (n=1)"
        if not math.isnan(row.get("ci_low", math.nan)):
            text += f" [test CI {row['ci_low']:.3f}–{row['ci_high']:.3f}]"
    else:
        text = f"{row['mean']:.3f} ± {row['std']:.3f} (n={int(row['n'])})"
        if not math.isnan(row.get("ci_low", math.nan)):
            text += f" [CI {row['ci_low']:.3f}–{row['ci_high']:.3f}]"
    if not math.isnan(row["paper"]):
        text += f" [paper {row['paper']:.3f}]"
    return text


def short_commit(commit: str) -> str:
    """A commit's first 10 characters, keeping the ``+dirty`` of a run made from uncommitted changes (a
    board must not pass such a run off as the commit's)."""
    commit = str(commit)
    return commit[:10] + ("+dirty" if commit.endswith("+dirty") else "")


def provenance(records: list[dict]) -> list[str]:
    data = sorted({r["provenance"]["data"] for r in records})
    scale = sorted({str(r["provenance"]["scale"]) for r in records})
    commits = sorted({short_commit(r["provenance"]["commit"]) for r in records})
    seeds = sorted({r["seed"] for r in records})
    lines = [
        f"Provenance: data **{' + '.join(data)}** · scale {', '.join(scale)} · seeds {', '.join(map(str, seeds))} · "
        f"commits {', '.join(commits)} · {len(records)} runs · generated {_dt.date.today().isoformat()}",
    ]
    if "twin" in data:
        lines.append("These numbers come from the **twin** (real metadata, synthetic pixels): they check that "
                     "the pipeline works end to end and are *not* comparable to the papers' numbers.")
    return lines


ROW_RULE = ("A row is one recipe (the resolved config without seed, fraction, fold and paths) on one data identity "
            "(dataset, twin spec or real release, split seed): mean ± std over its seeds (and folds), n, and a 95% CI "
            "that resamples both the seeds and the test patients (n=1: the test-set CI alone). Two recipes under one "
            "method name are two rows, labelled by what differs; a re-test of a checkpoint replaces its record.")


def render_board(board: Board, table: pd.DataFrame, records: list[dict],
                 notes: dict[str, str] | None = None) -> tuple[str, pd.DataFrame]:
    """One table per task: rows = (recipe row, data, fraction), columns = that task's metrics; ``notes``
    (task -> text, the references' notes; None: the default files') stand under the header."""
    notes = _references(None).notes if notes is None else notes
    sub = table[table["task"].isin(board.tasks) & table["metric"].isin([m for m, _ in board.metrics])]
    recs = [r for r in records if r["task"] in board.tasks or LOC_TASK.get(r["task"]) in board.tasks]
    header = [f"# {board.title}", ""]
    if sub.empty:
        return "\n".join(header + ["No runs on these tasks yet.", ""]), sub
    header += [*provenance(recs), "", ROW_RULE, ""]
    if sub["paper_hidden"].any():
        kinds = sorted({f"data {r['provenance']['data']}, scale {r['provenance']['scale']}" for r in recs
                        if not _comparable(r)})
        header += [f"**Paper numbers are not shown beside these rows: they are not the papers' recipes** "
                   f"({'; '.join(kinds)}). A paper's number appears only beside runs of full scale on the real data.", ""]
    if sub["row"].str.contains(UNFINGERPRINTED, regex=False).any():
        header += [f"Rows marked *{UNFINGERPRINTED}* come from result.json files written before recipes were "
                   "recorded: each run stands alone (n=1), whatever its method name, since nothing says which "
                   "runs share a recipe.", ""]
    shown = [f"Note ({t}): {notes[t]}" for t in board.tasks if t in notes and t in set(sub["task"])]
    if shown:
        header += [*shown, ""]
    index = {(r.task, r.row, r.data, r.fraction, r.metric): r for r in sub.itertuples(index=False)}
    lines = []
    for task in [t for t in board.tasks if t in set(sub["task"])]:
        here = sub[sub["task"] == task]
        keys = [(m, label) for m, label in board.metrics if m in set(here["metric"])]
        lines += [f"## {task}", "", "| row | data | fraction | " + " | ".join(label for _, label in keys) + " |",
                  "|---" * (3 + len(keys)) + "|"]
        for row, data, fraction in sorted({(r.row, r.data, r.fraction) for r in here.itertuples()}):
            cells = []
            for m, _ in keys:
                got = index.get((task, row, data, fraction, m))
                cells.append(cell(None if got is None else pd.Series(got._asdict())))
            lines.append(f"| {row} | {data} | {fraction:g} | " + " | ".join(cells) + " |")
        lines.append("")
        chosen = sorted({(r.row, r.fraction, r.lr) for r in here.itertuples() if getattr(r, "lr", "")})
        if chosen:
            lines += ["Learning rate chosen on the validation split per seed (the cell's lr_grid: one run per grid "
                      "point, the best kept):", ""]
            lines += [f"- {row} @ {fraction:g}: {lrs}" for row, fraction, lrs in chosen] + [""]
    return "\n".join(header + lines), sub


def plots(table: pd.DataFrame, records: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    made = []
    tag = " / ".join(sorted({r["provenance"]["data"] for r in records})) + " data"

    def errors(m, lo=0.0, hi=1.0):  # ± std, clipped to the metric's range (no Dice error bar below 0)
        std = m["std"].fillna(0).to_numpy()
        mean = m["mean"].to_numpy()
        return np.stack([np.minimum(std, mean - lo), np.minimum(std, hi - mean)]).clip(min=0)

    # Label-fraction curves: every (task, metric) measured at more than one fraction.
    for (task, metric), g in table.groupby(["task", "metric"]):
        if g["fraction"].nunique() < 2 or not metric.endswith("/mean") or metric.startswith("iou_acc"):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for (row, data), m in g.groupby(["row", "data"]):
            m = m.sort_values("fraction")
            ax.errorbar(m["fraction"] * 100, m["mean"], yerr=errors(m), marker="o", capsize=3,
                        label=f"{row} (n={int(m['n'].max())})")
        ax.set_xscale("log")
        ticks = sorted(g["fraction"].unique() * 100)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.set(xlabel="labelled fraction (%)", ylabel=f"{metric} (mean ± std over seeds)")
        ax.set_title(f"{task} ({tag})", fontsize=9)
        ax.legend(fontsize=6)
        made.append(_save(fig, out / f"fractions_{task}_{metric.replace('/', '_')}.png"))
    # IoU-accuracy vs threshold.
    iou = table[table["metric"].str.match(r"iou_acc@[0-9.]+/mean")]
    for task, g in iou.groupby("task"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for (row, data, fraction), m in g.groupby(["row", "data", "fraction"]):
            t = m["metric"].str.extract(r"@([0-9.]+)/")[0].astype(float)
            order = np.argsort(t.to_numpy())
            ax.errorbar(t.to_numpy()[order], m["mean"].to_numpy()[order], yerr=errors(m)[:, order],
                        marker="o", capsize=3, label=f"{row} @{fraction:g}")
        ax.set(xlabel="T(IoU)", ylabel="IoU-accuracy (mean ± std)", ylim=(0, 1))
        ax.set_title(f"{task} ({tag})", fontsize=9)
        ax.legend(fontsize=6)
        made.append(_save(fig, out / f"iou_vs_threshold_{task}.png"))
    # ROC curves: the first seed of each row, labelled with its seed/fold and AUC.
    by_task: dict = defaultdict(dict)
    for r in sorted(records, key=lambda r: (r["seed"], r.get("fold") or 0)):
        for cls, pts in (r.get("curves") or {}).get("roc", {}).items():
            by_task[(r["task"], cls)].setdefault((r.get("_row", r["method"]), r["fraction"]), (pts, r))
    for (task, cls), curves in by_task.items():
        fig, ax = plt.subplots(figsize=(5, 5))
        for (row, fraction), (pts, r) in sorted(curves.items()):
            a = r["metrics"].get(f"auc/{cls}", r["metrics"].get("auc/mean", math.nan))
            ax.plot(pts["fpr"], pts["tpr"], label=f"{row} @{fraction:g}, {_run_key(r)}: AUC {a:.3f}")
        ax.plot([0, 1], [0, 1], ":", color="gray")
        ax.set(xlabel="FPR", ylabel="TPR")
        ax.set_title(f"{task}: {cls} ({tag})", fontsize=9)
        ax.legend(fontsize=6)
        made.append(_save(fig, out / f"roc_{task}_{cls.replace(' ', '_')}.png"))
    return made


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    try:
        with writing(path):
            fig.savefig(tmp, dpi=100)
            os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path


def build_leaderboards(runs_dir: str | Path, out: str | Path = "results",
                       references: References | None = None) -> list[Path]:
    """Every board of the runs under ``runs_dir`` into ``out``, the papers' numbers from ``references``
    (None: every benchmarks/*/references.yaml under the current folder). Rebuilt into a folder of an
    earlier build, the files that build made and this one does not (the plot of a task that is gone)
    are removed, nothing else; a folder that cannot be written is ``files.CannotWrite`` naming the path."""
    references = _references(references)
    records = assign_rows(read_results(runs_dir))
    out = Path(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    remove_interrupted_writes(out)  # a killed earlier build's half-written files
    table = aggregate(records, references)
    cis, comparisons = bootstrap(records)
    key = lambda r: (r.task, r.row, r.data, r.fraction, r.metric)  # noqa: E731
    table["ci_low"] = [cis.get(key(r), (math.nan, math.nan))[0] for r in table.itertuples()]
    table["ci_high"] = [cis.get(key(r), (math.nan, math.nan))[1] for r in table.itertuples()]
    files = {}
    for board in BOARDS:
        md, sub = render_board(board, table, records, references.notes)
        recs = [r for r in records if r["task"] in board.tasks]
        csv = sub.assign(
            provenance=" + ".join(sorted({r["provenance"]["data"] for r in recs})) if recs else "",
            scale=" ".join(sorted({str(r["provenance"]["scale"]) for r in recs})),
            commits=" ".join(sorted({short_commit(r["provenance"]["commit"]) for r in recs})),
        )
        files[out / f"leaderboard_{board.name}.md"] = md
        files[out / f"leaderboard_{board.name}.csv"] = csv.to_csv(index=False)
    files[out / "comparisons.md"] = render_comparisons(comparisons, records)
    files[out / "comparisons.csv"] = comparisons.to_csv(index=False)
    try:
        for path, text in files.items():
            with writing(path):
                atomic_write_text(path, text)
        written = list(files) + plots(table, records, out)
    except CannotWrite:
        remove_own_partial_writes(out)  # a full disk: no half-written temporary left beside the boards
        raise
    remove_stale_outputs(out, written, owned=BOARD_OUTPUTS)
    return written


#: the names of what ``build_leaderboards`` writes: in a folder built before it recorded its outputs,
#: files of these names that a rebuild does not make are an earlier build's stale ones
BOARD_OUTPUTS = ("leaderboard_*.md", "leaderboard_*.csv", "comparisons.md", "comparisons.csv", "fractions_*.png",
                 "iou_vs_threshold_*.png", "roc_*.png")
