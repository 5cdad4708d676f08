"""Leaderboards rendered from a small set of run results, checked cell by cell."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from cxrbench.leaderboard import build_leaderboards
from cxrbench.results import ResultError, read_results, write_result


def _rec(method, task, seed, metrics, fraction=1.0, data="twin", commit="abc1234def"):
    return {"run_id": f"{method}-{task}-{seed}-{fraction}", "method": method, "task": task, "seed": seed,
            "fraction": fraction, "metrics": metrics,
            "provenance": {"data": data, "scale": "smoke", "commit": commit}}


@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    recs = [
        _rec("amm", "nih-cardiomegaly", 0, {"auc/mean": 0.80, "f1/weighted": 0.70, "iou_acc@0.1/mean": 0.5,
                                             "iou_acc@0.5/mean": 0.2}),
        _rec("amm", "nih-cardiomegaly", 1, {"auc/mean": 0.90, "f1/weighted": 0.72, "iou_acc@0.1/mean": 0.7,
                                             "iou_acc@0.5/mean": 0.4}),
        _rec("gap", "nih-cardiomegaly", 0, {"auc/mean": 0.75, "f1/weighted": 0.60}),
        _rec("random", "siim-seg", 0, {"dice/mean": 0.60, "dice_pos/mean": 0.30}, fraction=0.1),
        _rec("random", "siim-seg", 0, {"dice/mean": 0.70, "dice_pos/mean": 0.40}, fraction=1.0),
    ]
    for r in recs:
        r["curves"] = {"roc": {"Cardiomegaly": {"fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1]}}} if r["task"] == "nih-cardiomegaly" else {}
        write_result(d / r["run_id"], r)
    return d


def test_leaderboard_cells(runs, tmp_path):
    out = tmp_path / "results"
    written = build_leaderboards(runs, out)
    auc_md = (out / "leaderboard_auc.md").read_text()
    assert "data **twin**" in auc_md and "not* comparable" in auc_md and "commits abc1234def" in auc_md
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:-1]]
            for line in auc_md.splitlines() if line.startswith("| amm") or line.startswith("| gap")}
    header = [c.strip() for c in next(l for l in auc_md.splitlines() if l.startswith("| method")).split("|")[3:-1]]
    assert header == ["nih-cardiomegaly AUC", "nih-cardiomegaly F1 (weighted)"]
    # mean ± sample std over the two seeds, n, and the paper's number
    assert rows["amm"][0] == "0.850 ± 0.071 (n=2) [paper 0.890]"
    assert rows["amm"][1] == "0.710 ± 0.014 (n=2) [paper 0.860]"
    assert rows["gap"][0] == "0.750 ± 0.000 (n=1) [paper 0.850]"

    iou_md = (out / "leaderboard_iou.md").read_text()
    line = next(l for l in iou_md.splitlines() if l.startswith("| nih-cardiomegaly | amm"))
    cells = [c.strip() for c in line.split("|")[4:-1]]
    assert cells == ["0.600 ± 0.141 (n=2)", "0.300 ± 0.141 (n=2)"]

    dice = pd.read_csv(out / "leaderboard_dice.csv")
    row = dice[(dice.metric == "dice/mean") & (dice.fraction == 0.1)].iloc[0]
    assert row["mean"] == pytest.approx(0.6) and row["paper"] == pytest.approx(0.7029) and row["data"] == "twin"
    assert (out / "fractions_siim-seg_dice_mean.png").is_file()
    assert (out / "iou_vs_threshold_nih-cardiomegaly.png").is_file()
    assert (out / "roc_nih-cardiomegaly_Cardiomegaly.png").is_file()
    assert all(p.exists() for p in written)


def test_real_and_twin_runs_are_labelled(runs, tmp_path):
    write_result(runs / "real-run", _rec("amm", "nih-cardiomegaly", 2, {"auc/mean": 0.88}, data="real"))
    build_leaderboards(runs, tmp_path / "r")
    assert "data **real + twin**" in (tmp_path / "r" / "leaderboard_auc.md").read_text()


def test_bad_results_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultError, match="holds no result.json"):
        read_results(empty)
    bad = tmp_path / "bad" / "x"
    bad.mkdir(parents=True)
    rec = _rec("amm", "nih-cardiomegaly", 0, {"auc/mean": 0.8})
    del rec["provenance"]["commit"]
    (bad / "result.json").write_text(json.dumps(rec))
    with pytest.raises(ResultError, match=r"x/result.json: provenance lacks \['commit'\]"):
        read_results(tmp_path / "bad")
    res = subprocess.run([sys.executable, "-m", "cxrbench.cli", "leaderboard", str(empty)], capture_output=True, text=True)
    assert res.returncode == 2 and "holds no result.json" in res.stderr


def _write_predictions(folder, probs, labels, patients):
    from cxrbench.results import PREDICTIONS_FILE

    pd.DataFrame({"split": "test", "index": range(len(probs)), "image": [f"i{k}.png" for k in range(len(probs))],
                  "patient_id": patients, "label/Cardiomegaly": labels, "prob/Cardiomegaly": probs}
                 ).to_csv(folder / PREDICTIONS_FILE, index=False)


def test_bootstrap_cis_and_paired_comparisons_from_per_sample_predictions(tmp_path):
    """A method that ranks every positive first vs a coin flip, on 120 images of 60 patients: the
    paired difference's CI excludes 0; two seeds of the same predictions compared with themselves do not."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(rng.integers(0, 2, 60), 2).astype(float)  # two films per patient, same label
    patients = np.repeat([f"p{k}" for k in range(60)], 2)
    good = labels * 0.5 + rng.random(120) * 0.6
    coin = rng.random(120)
    d = tmp_path / "runs"
    for method, probs in (("good", good), ("coin", coin), ("coin-again", coin)):
        for seed in (0, 1):
            rec = _rec(method, "nih-cardiomegaly", seed, {"auc/mean": 0.0})
            write_result(d / rec["run_id"], rec)
            _write_predictions(d / rec["run_id"], probs, labels, patients)
    out = tmp_path / "results"
    build_leaderboards(d, out)
    comp = pd.read_csv(out / "comparisons.csv").set_index(["a", "b"])
    real = comp.loc[("coin", "good")]
    assert real["diff"] < -0.2 and real["ci_high"] < 0 and real["p"] < 0.01
    null = comp.loc[("coin", "coin-again")]
    assert null["diff"] == 0 and null["ci_low"] <= 0 <= null["ci_high"] and null["p"] == 1.0
    board = pd.read_csv(out / "leaderboard_auc.csv").set_index("method")
    assert board.loc["good", "ci_low"] < board.loc["good", "ci_high"]
    assert "[CI " in (out / "leaderboard_auc.md").read_text() and "| nih-cardiomegaly | 1 | auc/mean | coin | good |" in (
        out / "comparisons.md").read_text()


def test_auc_by_ranks_equals_sklearn_and_resampling_keeps_patients_whole():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from cxrbench.metrics.bootstrap import auc_by_ranks, patient_resamples

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (50, 3)).astype(float)
    s = np.round(rng.random((50, 3)), 1)  # ties
    y[0, 2] = np.nan
    got = auc_by_ranks(s, y)
    for k in range(3):
        known = ~np.isnan(y[:, k])
        assert got[k] == pytest.approx(roc_auc_score(y[known, k], s[known, k]))
    patients = np.array(["a", "a", "b", "c", "c", "c"])
    for idx in patient_resamples(patients, n=20):
        drawn = patients[idx]
        for p in set(drawn):
            assert (drawn == p).sum() % (patients == p).sum() == 0  # a patient comes with all its images
        assert len(set(map(str, idx))) <= len(idx)
