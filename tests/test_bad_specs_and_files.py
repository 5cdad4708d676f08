"""Issue 34, "nothing silent", for specs and files: a spec mistake stops the sweep when it loads (and in
``--dry-run``) naming the file, the cell and the key; a read-only, full or missing folder is one line
naming the path; what interrupted writes leave is removed on the next run; a rebuilt board loses the
plots it no longer makes; a resumed log keeps its learning-rate rows."""

from __future__ import annotations

import csv
import errno
import json
import os
import pathlib
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cxrbench.runner.launch import write_cell
from cxrbench.runner.spec import SpecError, load_spec

from test_leaderboard import _rec
from test_runner import TOY, _spec

CKPT_ALL = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
             "init_args": {"save_last": True, "save_top_k": -1}}]


def _cell(**change) -> dict:
    return {"name": "a", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", **change}


def _dead_pid() -> int:
    """The pid of a process that has exited (what a killed writer leaves in its temporary's name)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# ------------------------------------------------------------------------------------ spec validation
def test_a_misspelled_method_is_refused_at_load_with_a_did_you_mean(tmp_path):
    with pytest.raises(SpecError, match=r"spec.yaml: cells\[0\] \(a\): method 'toyy' is no registered method.*"
                                        r"did you mean 'toy'"):
        load_spec(_spec(tmp_path, tmp_path, [_cell(method="toyy")]))
    # a registered name, a registered name with a variant (a backbone, a task), and `random` are rows
    spec = load_spec(_spec(tmp_path, tmp_path, [_cell(name=m, method=m) for m in ("toy", "toy-wide", "random")]))
    assert [c.method for c in spec.cells] == ["toy", "toy-wide", "random"]


def test_dry_run_refuses_a_misspelled_consumer_before_its_producer_trains(tmp_path, capsys):
    from cxrbench.cli import main

    cells = [{"name": "pre", "method": "toy", "config": TOY, "data": "nih", "produces": ["encoder"]},
             _cell(name="probe", method="simclrr", needs={"encoder": "pre"})]
    path = _spec(tmp_path, tmp_path, cells)
    for extra in (["--dry-run"], []):
        assert main(["bench", str(path), *extra]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"{path}: cells[1] (probe): method 'simclrr'" in line and "did you mean 'simclr'" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, key, owner", [
    ({"seed_everything": 3}, "seed_everything", "seeds:"),
    ({"data.init_args.fraction": 0.5}, "data.init_args.fraction", "fractions:"),
    ({"data.init_args.root": "/elsewhere"}, "data.init_args.root", "data:"),
    ({"data.init_args.fold": 2}, "data.init_args.fold", "folds:"),
    ({"data": {"init_args": {"fraction": 0.5}}}, "data.init_args.fraction", "fractions:"),
    ({"trainer.default_root_dir": "/tmp/x"}, "trainer.default_root_dir", "runs_dir"),
    ({"trainer.logger": False}, "trainer.logger", "metrics.csv"),
    ({"trainer.callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                             "init_args": {"dirpath": "/tmp/ckpts"}}]}, "trainer.callbacks[0].init_args.dirpath",
     "checkpoints/"),
], ids=["seed", "fraction", "root", "fold", "nested-fraction", "default_root_dir", "logger", "checkpoint-dirpath"])
def test_an_override_of_a_key_the_sweep_sets_itself_is_refused(tmp_path, overrides, key, owner):
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, tmp_path, [_cell(overrides=overrides)]))
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{tmp_path / 'spec.yaml'}: cells[0] (a): overrides {key},")
    assert owner in line


def test_a_default_of_a_key_the_sweep_sets_itself_is_refused_naming_the_defaults(tmp_path):
    with pytest.raises(SpecError, match=r"cells\[0\] \(a\): overrides seed_everything, .*\(from the spec's defaults\)"):
        load_spec(_spec(tmp_path, tmp_path, [_cell()], defaults={"seed_everything": 1}))
    # what the sweep does not set stays an override (the resume test keeps every checkpoint this way)
    load_spec(_spec(tmp_path, tmp_path, [_cell(overrides={"trainer.callbacks": CKPT_ALL, "trainer.max_epochs": 2})]))


def test_folds_outside_the_datasets_range_are_refused_at_load(tmp_path):
    chexpert = {"data.class_path": "data_modules.CheXpert"}
    with pytest.raises(SpecError, match=r"cells\[0\] \(a\): folds: fold 5 is outside CheXpert's 5 folds \(0..4"):
        load_spec(_spec(tmp_path, tmp_path, [_cell(folds=[0, 5], overrides=chexpert)]))
    with pytest.raises(SpecError, match=r"folds: fold 3 is outside CheXpert's 3 folds .*data.init_args.n_folds"):
        load_spec(_spec(tmp_path, tmp_path, [_cell(folds=[3], overrides={**chexpert, "data.init_args.n_folds": 3})]))
    with pytest.raises(SpecError, match=r"folds: fold -1 is outside"):
        load_spec(_spec(tmp_path, tmp_path, [_cell(folds=[-1], overrides=chexpert)]))
    with pytest.raises(SpecError, match=r"cells\[0\] \(a\): folds: NIH has no folds"):
        load_spec(_spec(tmp_path, tmp_path, [_cell(folds=[0, 1])]))
    spec = load_spec(_spec(tmp_path, tmp_path, [_cell(folds=[0, 4], overrides=chexpert)]))
    assert [c.fold for c in spec.cells] == [0, 4]


# ---------------------------------------------------------------------------------- filesystem errors
def _refuse_writes_under(monkeypatch, folder: Path, code: int) -> None:
    """Every mkdir and open-for-writing under ``folder`` fails as on a read-only or full filesystem."""
    real_mkdir, real_open = pathlib.Path.mkdir, os.open

    def mkdir(self, *a, **kw):
        if str(self).startswith(str(folder)):
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *a, **kw)

    def os_open(path, flags, *a, **kw):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)


def test_a_read_only_runs_folder_is_one_line_naming_the_path(twin_factory, tmp_path, monkeypatch, capsys):
    from cxrbench.cli import main

    root = twin_factory("nih", n=90, size=64)
    monkeypatch.setenv("CXRBENCH_CACHE", str(tmp_path / "cache"))
    path = _spec(tmp_path, root, [_cell()])
    runs = tmp_path / "runs"
    _refuse_writes_under(monkeypatch, runs, errno.EROFS)
    assert main(["bench", str(path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"cxrbench bench: error: cannot write {runs}/a-s0-f1-") and line.endswith(": read-only file system")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through a chmod 0o555 folder (the EROFS case simulates it)")
def test_a_chmod_read_only_runs_folder_is_one_line_naming_the_path(twin_factory, tmp_path, capsys):
    from cxrbench.cli import main

    path = _spec(tmp_path, twin_factory("nih", n=90, size=64), [_cell()])
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs").chmod(0o555)
    try:
        assert main(["bench", str(path)]) == 2
    finally:
        (tmp_path / "runs").chmod(0o755)
    assert f"cannot write {tmp_path / 'runs'}/a-s0-f1-" in _one_line(capsys.readouterr().err)


def test_a_cell_in_a_read_only_run_folder_says_so_in_one_line_and_the_launcher_repeats_it(tmp_path, monkeypatch, capsys):
    from cxrbench.runner import cell as cell_module
    from cxrbench.runner import launch

    spec = load_spec(_spec(tmp_path, tmp_path, [_cell()]))
    d = write_cell(spec, spec.cells[0])
    _refuse_writes_under(monkeypatch, d, errno.EROFS)
    assert cell_module.main([str(d)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == f"cxrbench cell: error: cannot write {d}/.lock: read-only file system"
    monkeypatch.undo()

    # the launcher's [failed] line carries the cell's own reason, not only "see stdout.log"
    def cell_process(cmd, stdout, **kw):
        stdout.write(f"some progress\n{line}\n")
        return subprocess.CompletedProcess(cmd, 2)

    monkeypatch.setattr(launch.subprocess, "run", cell_process)
    said = []
    assert launch.run_local(spec, log=said.append) == [spec.cells[0].run_id]
    assert any("[failed]" in s and "cannot write" in s and ".lock: read-only file system" in s for s in said), said


def _board_runs(tmp_path: Path, name: str, fractions: tuple[float, ...]) -> Path:
    from cxrbench.results import write_result

    runs = tmp_path / name
    for seed in (0, 1):
        for f in fractions:
            r = _rec("random", "siim-seg", seed, {"dice/mean": 0.6 + f / 10, "dice_pos/mean": 0.3}, fraction=f)
            r["run_id"] += f"-{seed}"
            write_result(runs / r["run_id"], r)
    return runs


def test_a_full_disk_while_writing_boards_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    from cxrbench.cli import main

    runs, out = _board_runs(tmp_path, "runs", (1.0,)), tmp_path / "boards"
    real = pathlib.Path.write_text

    def full_disk(self, text, *a, **kw):  # half the bytes land, then the disk is full (write() names no file)
        if str(self).startswith(str(out)):
            real(self, text[: len(text) // 2], *a, **kw)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, text, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    assert main(["leaderboard", str(runs), "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"cxrbench leaderboard: error: cannot write {out}/leaderboard_") and \
        line.endswith(".md: no space left on device"), line
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


# ------------------------------------------------------------------------------------------- litter
def _truncated_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 1}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_what_interrupted_writes_left_in_a_cell_is_removed_when_it_runs_again(tmp_path):
    from cxrbench.runner.cell import run_cell

    spec = load_spec(_spec(tmp_path, tmp_path, [_cell()]))
    d = write_cell(spec, spec.cells[0])
    dead, alive = _dead_pid(), os.getppid()
    (d / "artifacts").mkdir()
    (d / "checkpoints" / "unreadable").mkdir(parents=True)
    gone = [d / "artifacts" / f".encoder.pt.tmp{dead}", d / f".model.ckpt.tmp{dead}", d / f".result.json.tmp{dead}",
            d / "artifacts" / f".heatmaps.tmp{dead}"]
    for p in gone[:3]:
        p.write_bytes(b"half")
    gone[3].mkdir()
    (gone[3] / "heatmaps.u8").write_bytes(b"\0" * 1000)
    gone += [_truncated_checkpoint(d / "checkpoints" / "epoch=1-step=10.ckpt"),
             _truncated_checkpoint(d / "checkpoints" / "unreadable" / "last.ckpt.1700000000")]
    kept = [d / "artifacts" / f".encoder.pt.tmp{alive}",  # a live writer's (the pid in the name runs)
            d / "checkpoints" / "epoch=0-step=5.ckpt",  # whole
            d / "checkpoints" / "notes.ckpt"]  # not a torch file: not ours to judge
    kept[0].write_bytes(b"being written")
    torch.save({"state_dict": {}, "epoch": 0}, kept[1])
    kept[2].write_text("hand-written")
    (d / "result.json").write_text("{}")  # done: the run only tidies up
    run_cell(d)
    assert [p for p in gone if p.exists()] == [] and all(p.exists() for p in kept)


def test_a_board_rebuilt_into_an_existing_folder_removes_the_plots_it_no_longer_makes(tmp_path):
    from cxrbench.leaderboard import build_leaderboards
    from cxrbench.references import References

    out = tmp_path / "boards"
    first = build_leaderboards(_board_runs(tmp_path, "two", (0.1, 1.0)), out, references=References())
    curves = [p for p in first if p.name.startswith("fractions_siim-seg")]
    assert curves and all(p.exists() for p in curves)
    mine = [out / "notes.md", out / "roc_drawn_by_hand.png"]  # a user's files in the same folder
    for p in mine:
        p.write_text("mine")
    litter = out / f".leaderboard_dice.md.tmp{_dead_pid()}"
    litter.write_text("half")
    second = build_leaderboards(_board_runs(tmp_path, "one", (1.0,)), out, references=References())
    assert not [p for p in curves if p.exists()]  # one fraction: no fraction curve any more
    assert all(p.exists() for p in second + mine) and not litter.exists()


def test_a_board_folder_from_before_output_records_loses_only_the_boards_own_stale_plots(tmp_path):
    from cxrbench.leaderboard import build_leaderboards
    from cxrbench.references import References

    out = tmp_path / "results"
    out.mkdir()
    old = out / "fractions_siim-seg_dice_mean.png"
    old.write_bytes(b"png of an earlier build")
    mine = out / "twin_gallery.png"
    mine.write_bytes(b"png")
    build_leaderboards(_board_runs(tmp_path, "one", (1.0,)), out, references=References())
    assert not old.exists() and mine.exists()


# ------------------------------------------------------------------------------------ resumable log
def test_the_resumable_log_keeps_the_epochless_rows_before_the_checkpoint(tmp_path):
    from cxrbench.runner.resume import ResumableCSVLogger

    # LearningRateMonitor rows carry a step and no epoch: epoch 0's at step 0, epoch 1's at step 4
    (tmp_path / "metrics.csv").write_text("epoch,lr-Adam,step,train/loss\n,0.01,0,\n0,,3,0.5\n,0.01,4,\n1,,7,0.4\n")
    log = ResumableCSVLogger(str(tmp_path), keep_until_epoch=0, keep_until_step=4, name="", version="")
    log.log_metrics({"lr-Adam": 0.01}, step=4)  # epoch 1 again, after the resume
    log.log_metrics({"epoch": 1, "train/loss": 0.45}, step=7)
    log.save()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [(r["epoch"], r["step"], r["lr-Adam"]) for r in rows] == [
        ("", "0", "0.01"), ("0", "3", ""), ("", "4", "0.01"), ("1", "7", "")]


def _lr_rows(run_dir: Path) -> list[tuple[str, str]]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [(r["step"], r["lr-Adam"]) for r in rows if r.get("lr-Adam")]


def test_a_resumed_cell_keeps_the_learning_rate_rows_of_the_epochs_it_does_not_repeat(twin_factory, tmp_path,
                                                                                       monkeypatch):
    from cxrbench.runner.cell import run_cell

    monkeypatch.setenv("CXRBENCH_WANDB", "0")
    monkeypatch.setenv("CXRBENCH_CACHE", str(tmp_path / "cache"))
    root = twin_factory("nih", n=90, size=64)
    cells = [_cell(name=n, overrides={"trainer.max_epochs": 3, "trainer.callbacks": CKPT_ALL}) for n in ("whole", "resumed")]
    spec = load_spec(_spec(tmp_path, root, cells))
    whole, resumed = (write_cell(spec, c) for c in spec.cells)
    run_cell(whole)
    assert len(_lr_rows(whole)) == 3  # one per epoch
    (resumed / "checkpoints").mkdir()
    shutil.copy(next((whole / "checkpoints").glob("epoch=0-*.ckpt")), resumed / "checkpoints/last.ckpt")
    shutil.copy(whole / "metrics.csv", resumed / "metrics.csv")  # the log as the interrupted run left it
    run_cell(resumed)
    assert _lr_rows(resumed) == _lr_rows(whole)
    assert json.loads((resumed / "resumes.json").read_text())[0]["epoch"] == 0
