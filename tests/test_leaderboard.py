"""Leaderboards rendered from a small set of run results, checked cell by cell."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cxrbench.leaderboard import build_leaderboards
from cxrbench.results import ResultError, read_results, write_result


RECIPE = {"model": {"class_path": "cxrbench.methods.AMM", "init_args": {"lr": 0.01}}, "trainer": {"max_epochs": 2}}
TWIN = {"dataset": "NIH", "data": "twin", "split_seed": 0, "twin": {"dataset": "nih", "n": 900, "seed": 2, "size": 128,
                                                                   "difficulty": 0.5, "options": {}, "format": 1}}


def _rec(method, task, seed, metrics, fraction=1.0, data="twin", commit="abc1234def", recipe=RECIPE, scale="smoke"):
    from cxrbench.recipe import fingerprint

    rec = {"run_id": f"{method}-{task}-{seed}-{fraction}", "method": method, "task": task, "seed": seed,
           "fraction": fraction, "metrics": metrics,
           "provenance": {"data": data, "scale": scale, "commit": commit},
           "data_identity": {**TWIN, "data": data} if data == "twin" else {"dataset": "NIH", "data": "real", "split_seed": 0}}
    if recipe is not None:
        rec["recipe"] = {"fingerprint": fingerprint(recipe), "config": recipe}
    return rec


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


def _all_rows(md: str, task: str) -> list:
    """[(row label, cells)] of the table under ``## task``."""
    part = md.split(f"## {task}\n", 1)[1].split("\n## ", 1)[0]
    return [(line.split("|")[1].strip(), [c.strip() for c in line.split("|")[2:-1]])
            for line in part.splitlines() if line.startswith("| ") and not line.startswith("| row ")]


def _rows(md: str, task: str) -> dict:
    return dict(_all_rows(md, task))


def test_a_run_from_uncommitted_changes_keeps_its_dirty_mark_on_the_board():
    from cxrbench.leaderboard import provenance

    recs = [_rec("amm", "nih-cardiomegaly", 0, {"auc/mean": 0.5}, commit="fe6872fb8fdf133e0c8c9b2b4811eb388e416465+dirty"),
            _rec("amm", "nih-cardiomegaly", 1, {"auc/mean": 0.5})]
    assert "commits abc1234def, fe6872fb8f+dirty ·" in provenance(recs)[0]


def test_leaderboard_cells(runs, tmp_path):
    out = tmp_path / "results"
    written = build_leaderboards(runs, out)
    auc_md = (out / "leaderboard_auc.md").read_text()
    assert "data **twin**" in auc_md and "not* comparable" in auc_md and "commits abc1234def" in auc_md
    assert "A row is one recipe" in auc_md and "## nih-cardiomegaly" in auc_md and "## nih8-cls" not in auc_md
    header = next(l for l in auc_md.splitlines() if l.startswith("| row"))
    assert [c.strip() for c in header.split("|")[1:-1]] == ["row", "data", "fraction", "AUC", "F1 (weighted)"]
    rows = _rows(auc_md, "nih-cardiomegaly")
    data = "twin n=900 size=128 seed=2 difficulty=0.5 split_seed=0"
    # mean ± sample std over the two seeds, n; one seed: its value alone, no "± 0.000"; no paper number on the twin
    assert rows["amm"] == [data, "1", "0.850 ± 0.071 (n=2)", "0.710 ± 0.014 (n=2)"]
    assert rows["gap"][2] == "0.750 (n=1)"
    assert "[paper" not in auc_md and "Paper numbers are not shown beside these rows" in auc_md

    iou_md = (out / "leaderboard_iou.md").read_text()
    assert _rows(iou_md, "nih-cardiomegaly")["amm"][2:] == ["0.600 ± 0.141 (n=2)", "0.300 ± 0.141 (n=2)"]

    dice = pd.read_csv(out / "leaderboard_dice.csv")
    row = dice[(dice.metric == "dice/mean") & (dice.fraction == 0.1)].iloc[0]
    assert row["mean"] == pytest.approx(0.6) and np.isnan(row["paper"]) and row["paper_hidden"] and row["provenance"] == "twin"
    assert (out / "fractions_siim-seg_dice_mean.png").is_file()
    assert (out / "iou_vs_threshold_nih-cardiomegaly.png").is_file()
    assert (out / "roc_nih-cardiomegaly_Cardiomegaly.png").is_file()
    assert all(p.exists() for p in written)


def test_the_papers_number_stands_only_beside_full_scale_runs_on_real_data(tmp_path):
    d = tmp_path / "runs"
    for seed in (0, 1):
        write_result(d / f"real{seed}", {**_rec("amm", "nih-cardiomegaly", seed, {"auc/mean": 0.88}, data="real",
                                                scale="full"), "run_id": f"real{seed}"})
    write_result(d / "smoke", {**_rec("amm", "nih-cardiomegaly", 0, {"auc/mean": 0.7}, data="real"), "run_id": "smoke"})
    build_leaderboards(d, tmp_path / "r")
    md = (tmp_path / "r" / "leaderboard_auc.md").read_text()
    rows = _rows(md, "nih-cardiomegaly")
    assert rows["amm"][0] == "real split_seed=0" and len(rows) == 1  # the smoke run's data identity is the same...
    board = pd.read_csv(tmp_path / "r" / "leaderboard_auc.csv")
    assert len(board) == 1 and board["n"].iloc[0] == 3 and np.isnan(board["paper"].iloc[0])  # ...a smoke run among them


def test_two_recipes_under_one_method_name_are_two_rows_labelled_by_what_differs(tmp_path):
    """A CLI run (lr 1e-4) and sweep runs (lr 0.01) of 'amm', or runs of two twin specs, never share a cell."""
    d = tmp_path / "runs"
    cli_recipe = {**RECIPE, "model": {"class_path": "cxrbench.methods.AMM", "init_args": {"lr": 1e-4}}}
    for seed in (0, 1):
        write_result(d / f"sweep{seed}", {**_rec("amm", "nih-cardiomegaly", seed, {"auc/mean": 0.8 + seed / 10}),
                                          "run_id": f"sweep{seed}"})
    write_result(d / "cli", {**_rec("amm", "nih-cardiomegaly", 0, {"auc/mean": 0.6}, recipe=cli_recipe), "run_id": "cli"})
    other = _rec("amm", "nih-cardiomegaly", 0, {"auc/mean": 0.5})
    other["data_identity"]["twin"] = {**TWIN["twin"], "n": 300}
    write_result(d / "small", {**other, "run_id": "small"})
    write_result(d / "old", {**_rec("amm", "nih-cardiomegaly", 0, {"auc/mean": 0.4}, recipe=None), "run_id": "old"})
    build_leaderboards(d, tmp_path / "r")
    md = (tmp_path / "r" / "leaderboard_auc.md").read_text()
    rows = _rows(md, "nih-cardiomegaly")
    big = [v for k, v in _all_rows(md, "nih-cardiomegaly") if k == "amm (lr=0.01)" and v[0].startswith("twin n=900")]
    assert len(big) == 1 and big[0][2] == "0.850 ± 0.071 (n=2)"
    assert rows["amm (lr=0.0001)"][2] == "0.600 (n=1)"
    small = [v for k, v in _all_rows(md, "nih-cardiomegaly") if v[0].startswith("twin n=300")]
    assert len(small) == 1 and small[0][2] == "0.500 (n=1)"
    assert rows["amm (older record without a recipe: old)"][2] == "0.400 (n=1)"
    assert len(_all_rows(md, "nih-cardiomegaly")) == 4
    assert "older record without a recipe" in md.split("## nih-cardiomegaly")[0]  # flagged in the header too


def test_testing_one_checkpoint_twice_leaves_one_record(tmp_path):
    import os

    d = tmp_path / "runs"
    for version, auc in (("version_0", 0.70), ("version_1", 0.75)):
        rec = {**_rec("stn", "chexpert-abnormal", 0, {"auc/mean": auc}), "run_id": version,
               "checkpoint": {"path": "/x/best.ckpt", "sha256": "ab" * 32}}
        write_result(d / version, rec)
    os.utime(d / "version_0" / "result.json", (1, 1))  # the older test
    build_leaderboards(d, tmp_path / "r")
    board = pd.read_csv(tmp_path / "r" / "leaderboard_auc.csv")
    assert list(board["n"]) == [1] and board["mean"].iloc[0] == pytest.approx(0.75)


def test_real_and_twin_runs_are_labelled(runs, tmp_path):
    write_result(runs / "real-run", _rec("amm", "nih-cardiomegaly", 2, {"auc/mean": 0.88}, data="real"))
    build_leaderboards(runs, tmp_path / "r")
    md = (tmp_path / "r" / "leaderboard_auc.md").read_text()
    assert "data **real + twin**" in md
    amm = [v for k, v in _all_rows(md, "nih-cardiomegaly") if k == "amm"]
    assert sorted(v[0].split()[0] for v in amm) == ["real", "twin"]  # real and twin: two rows, never one cell


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
    comparisons = (out / "comparisons.md").read_text()
    assert "[CI " in (out / "leaderboard_auc.md").read_text() and "| coin | good |" in comparisons
    # three rows, three pairs in the family: Holm-adjusted, paired per seed, p never printed as 0.000
    assert real["family_size"] == 3 and real["paired_seeds"] == 2 and real["p_holm"] >= real["p"]
    assert "(3 comparisons in the family)" in comparisons and "p (Holm)" in comparisons
    assert "| 2 | < 0.001 | < 0.001 |" in comparisons and "| 0.000 |" not in comparisons


def test_a_cells_interval_covers_the_spread_of_its_seeds(tmp_path):
    """Seed 0 ranks well (AUC ~0.9), seed 1 is a coin (~0.5), on the same 120 test images: the cell's CI
    resamples the seeds as well as the patients, so it is at least as wide as the seeds' spread (a CI of
    the test patients alone would be ~0.1 wide around 0.7)."""
    from cxrbench.metrics.bootstrap import score

    rng = np.random.default_rng(0)
    labels = np.repeat(rng.integers(0, 2, 60), 2).astype(float)
    patients = np.repeat([f"p{k}" for k in range(60)], 2)
    preds = {0: labels * 0.5 + rng.random(120) * 0.6, 1: rng.random(120)}
    d = tmp_path / "runs"
    for seed, probs in preds.items():
        rec = _rec("amm", "nih-cardiomegaly", seed, {"auc/mean": score("auc", probs[:, None], labels[:, None])})
        write_result(d / rec["run_id"], rec)
        _write_predictions(d / rec["run_id"], probs, labels, patients)
    build_leaderboards(d, tmp_path / "r")
    row = pd.read_csv(tmp_path / "r" / "leaderboard_auc.csv").set_index("metric").loc["auc/mean"]
    seeds = [score("auc", p[:, None], labels[:, None]) for p in preds.values()]
    assert max(seeds) - min(seeds) > 0.3
    assert row["ci_high"] - row["ci_low"] >= max(seeds) - min(seeds), (row["ci_low"], row["ci_high"], seeds)
    assert row["ci_low"] <= min(seeds) and row["ci_high"] >= max(seeds)


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


def test_the_stn_board_shows_table_iis_rates_and_thorax_crops_uncropped_share_beside_the_paper(tmp_path):
    """STN Table II's precision and TP/FP/TN/FN rates keyed and shown beside full-scale real rows, with
    thorax-crop's share of test images its regressor left uncropped; the regressor has a board of its own."""
    from cxrbench.references import load_references
    from pathlib import Path

    d = tmp_path / "runs"
    rates = {"auc/mean": 0.84, "pr_auc/mean": 0.95, "precision": 0.85, "tp_share": 0.76, "fp_share": 0.13,
             "tn_share": 0.07, "fn_share": 0.04, "recall": 0.95, "threshold": 0.3}
    recs = [_rec("stn", "chexpert-abnormal", 0, rates, data="real", scale="full"),
            _rec("thorax-crop", "chexpert-abnormal", 0, {**rates, "crop/fallback_share": 0.25}, data="real", scale="full"),
            _rec("thorax-box", "lung-thorax-box", 0, {"box_iou/mean": 0.81, "box_iou@0.5": 0.97, "box_iou@0.75": 0.7,
                                                       "confident_share": 0.4, "confidence/mean": 0.85},
                 data="real", scale="full")]
    for r in recs:
        write_result(d / r["run_id"], r)
    refs = load_references([Path(__file__).resolve().parents[1] / "benchmarks/stn/references.yaml"])
    build_leaderboards(d, tmp_path / "r", references=refs)
    md = (tmp_path / "r" / "leaderboard_stn.md").read_text()
    header = next(l for l in md.splitlines() if l.startswith("| row"))
    assert [c.strip() for c in header.split("|")[4:-1]] == ["AUC", "PR-AUC", "Precision", "TP rate", "FP rate", "TN rate",
                                                            "FN rate", "recall", "threshold", "uncropped share"]
    rows = _rows(md, "chexpert-abnormal")
    assert "[paper 0.853]" in rows["stn"][4] and "[paper 0.761]" in rows["stn"][5] and "[paper 0.067]" in rows["stn"][7]
    assert rows["thorax-crop"][-1].startswith("0.250") and rows["stn"][-1] == "–"
    thorax = _rows((tmp_path / "r" / "leaderboard_thorax.md").read_text(), "lung-thorax-box")
    assert thorax["thorax-box"][2].startswith("0.810")
