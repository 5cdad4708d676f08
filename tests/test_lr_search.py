"""The per-method learning-rate search (issue 29; CAMContrast §4.2 and Table A.1: a grid per method and task,
chosen on the validation split): a cell's ``lr_grid`` runs one run per grid point for each seed × fraction,
each record says its grid point's validation score, and the board keeps the best one and names its lr."""

from __future__ import annotations

import json

import pytest

from cxrbench.leaderboard import assign_rows, choose_lr
from cxrbench.runner.spec import SpecError, load_spec

from test_runner import TOY, _bench, _spec


def _cell(**extra) -> dict:
    return {"name": "a", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", **extra}


def test_an_lr_grid_expands_to_one_run_per_learning_rate_of_each_seed_and_fraction(tmp_path):
    spec = load_spec(_spec(tmp_path, tmp_path, [_cell(seeds=[0, 1], fractions=[0.5, 1.0], lr_grid=[0.1, 0.001])]))
    assert len(spec.cells) == 2 * 2 * 2 and len({c.run_id for c in spec.cells}) == 8
    first = spec.cells[:2]
    assert [c.config["model"]["init_args"]["lr"] for c in first] == [0.001, 0.1]  # sorted
    assert [c.lr_search for c in first] == [{"grid": [0.001, 0.1], "lr": 0.001}, {"grid": [0.001, 0.1], "lr": 0.1}]
    assert "-lr0.001-" in first[0].run_id and "-lr0.1-" in first[1].run_id


@pytest.mark.parametrize("extra,message", [
    ({"lr_grid": []}, "lr_grid must be a non-empty list of learning rates"),
    ({"lr_grid": [0.1, -1]}, "distinct positive learning rates"),
    ({"lr_grid": [0.1, 0.1]}, "distinct positive learning rates"),
    ({"lr_grid": "0.1"}, "non-empty list"),
    ({"lr_grid": [0.1], "overrides": {"model.init_args.lr": 0.5}}, "the grid sets the lr of each run"),
    ({"lr_grid": [0.1], "produces": ["encoder"]}, "produces nothing"),
    ({"lr_gird": [0.1]}, r"unknown key\(s\) \['lr_gird'\] \(did you mean 'lr_grid'\?\)"),
])
def test_a_bad_lr_grid_is_refused_before_anything_runs(tmp_path, extra, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_spec(tmp_path, tmp_path, [_cell(**extra)]))


def _record(method, lr, score, seed=0, mode="max"):
    return {"task": "nih8-cls", "method": method, "seed": seed, "fraction": 1.0, "run_id": f"{method}-{lr}-{seed}",
            "recipe": {"fingerprint": f"fp-{method}", "config": {}}, "data_identity": {"dataset": "nih"},
            "metrics": {"auc/mean": score}, "lr_search": {"grid": [0.01, 1.0, 100.0], "lr": lr, "score": score,
                                                          "monitor": "val/auc", "mode": mode}}


def test_the_board_keeps_each_seeds_best_grid_point_and_never_a_diverged_one():
    records = [_record("a", 0.01, 0.9), _record("a", 1.0, 0.6), _record("a", 100.0, None),
               _record("b", 0.01, 0.55), _record("b", 1.0, 0.8), _record("b", 100.0, None),
               _record("a", 0.01, 0.7, seed=1), _record("a", 1.0, 0.75, seed=1),
               _record("c", 0.01, None), _record("c", 1.0, None)]  # a search none of whose points scored
    kept = {(r["method"], r["seed"]): r["_lr"] for r in choose_lr(records)}
    assert kept == {("a", 0): 0.01, ("b", 0): 1.0, ("a", 1): 1.0}
    low = [_record("d", 0.01, 0.3, mode="min"), _record("d", 1.0, 0.1, mode="min")]  # a loss: lowest wins
    assert [r["_lr"] for r in choose_lr(low)] == [1.0]
    assert len(assign_rows(records)) == 3  # one record per seed, not one per grid point


def test_a_sweep_searches_two_encoders_lr_and_the_board_names_each_ones_choice(twin_factory, tmp_path):
    """Two toy encoders whose best rates differ (0.01 and 1), searched over [0.01, 1, 100], where 100
    diverges for both (NaN loss): the diverged points are skipped with a message and never chosen, the
    sweep succeeds, and the board shows one run per encoder with the lr it chose."""
    root = twin_factory("nih", n=90, size=64)
    cells = [_cell(name=name, method=method, lr_grid=[0.01, 1.0, 100.0],
                   overrides={"model.class_path": "toy_methods.ToyLR", "model.init_args.best_lr": best,
                              "model.init_args.diverge_above": 10.0, "trainer.max_epochs": 1,
                              "trainer.callbacks": []})
             for name, method, best in (("enc-a", "toy-a", 0.01), ("enc-b", "toy-b", 1.0))]
    spec = load_spec(_spec(tmp_path, root, cells))
    res = _bench(spec.path, tmp_path, "--leaderboard", str(tmp_path / "board"))
    assert res.returncode == 0, res.stdout + res.stderr
    runs = {(c.name, c.lr_search["lr"]): spec.runs_dir / c.run_id for c in spec.cells}
    for name in ("enc-a", "enc-b"):
        assert (runs[name, 100.0] / "diverged.json").is_file() and not (runs[name, 100.0] / "result.json").exists()
        assert "diverged" in (runs[name, 100.0] / "stdout.log").read_text()
        for lr in (0.01, 1.0):
            rec = json.loads((runs[name, lr] / "result.json").read_text())
            assert rec["lr_search"]["lr"] == lr and rec["lr_search"]["monitor"] == "val/score"
            assert rec["recipe"]["config"]["model"]["init_args"]["lr"] == "searched on validation (lr_grid)"
            assert rec["lr_search"]["grid"] == [0.01, 1.0, 100.0]
    assert json.loads((runs["enc-a", 0.01] / "result.json").read_text())["lr_search"]["score"] == pytest.approx(0)
    board = (tmp_path / "board" / "leaderboard_auc.md").read_text()
    assert "- toy-a @ 1: seed 0: 0.01" in board and "- toy-b @ 1: seed 0: 1" in board, board
    assert board.count("(n=1)") >= 2  # each row one run, not its grid points pooled
    again = _bench(spec.path, tmp_path)
    assert again.returncode == 0 and again.stdout.count("[done]") == 6  # diverged points are done, not rerun
