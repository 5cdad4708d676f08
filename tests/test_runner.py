"""The sweep runner: cells, deterministic ids, resume after a kill, DDP, W&B offline, pipelines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cxrbench.runner.launch import status
from cxrbench.runner.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _env(tmp_path, wandb=False):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env["CXRBENCH_CACHE"] = str(tmp_path / "cache")
    env["CXRBENCH_WANDB"] = "1" if wandb else "0"
    env["WANDB_MODE"] = "offline"
    env.pop("WANDB_API_KEY", None)
    return env


def _spec(tmp_path, root, cells, defaults=None) -> Path:
    spec = {"name": "t", "scale": "test", "runs_dir": str(tmp_path / "runs"), "data": {"nih": {"root": str(root)}},
            "defaults": defaults or {}, "cells": cells}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


TOY = str(TESTS / "configs/toy_nih8.yaml")


def _bench(spec, tmp_path, *extra, wandb=False, **kw):
    return subprocess.run([sys.executable, "-m", "cxrbench.cli", "bench", str(spec), *extra], capture_output=True,
                          text=True, cwd=tmp_path, env=_env(tmp_path, wandb), **kw)


def test_dry_run_lists_every_cell_with_a_deterministic_id(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    cells = [{"name": "a", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", "seeds": [0, 1],
              "fractions": [0.5, 1.0]},
             {"name": "b", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", "seeds": [3]}]
    spec = load_spec(_spec(tmp_path, root, cells))
    got = [(c.name, c.seed, c.fraction) for c in spec.cells]
    assert got == [("a", 0, 0.5), ("a", 0, 1.0), ("a", 1, 0.5), ("a", 1, 1.0), ("b", 3, 1.0)]
    ids = [c.run_id for c in spec.cells]
    assert len(set(ids)) == 5 and ids == [c.run_id for c in load_spec(spec.path).cells]
    assert spec.cells[0].config["data"]["init_args"]["fraction"] == 0.5 and spec.cells[0].config["seed_everything"] == 0
    res = _bench(spec.path, tmp_path, "--dry-run")
    assert res.returncode == 0 and all(i in res.stdout for i in ids) and res.stdout.count("[pending ]") == 5


def test_spec_errors_are_named(tmp_path):
    with pytest.raises(SpecError, match="missing top-level key 'cells'"):
        (tmp_path / "s.yaml").write_text("name: x\ndata: {}\n")
        load_spec(tmp_path / "s.yaml")
    bad = _spec(tmp_path, tmp_path, [{"name": "a", "task": "nih8-cls", "method": "m", "config": "nope.yaml", "data": "nih"}])
    with pytest.raises(SpecError, match="config .*nope.yaml does not exist"):
        load_spec(bad)
    cell = {"name": "a", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih"}
    for change, message in (({"task": "nih8"}, "task 'nih8' is on no leaderboard; known tasks"),
                            ({"seeds": 0}, "seeds must be a non-empty list of integers"),
                            ({"fractions": [0, 0.5]}, r"fractions must be a non-empty list of numbers in \(0, 1\]"),
                            ({"produces": ["weights"]}, "produces unknown artifact kind"),
                            ({"task": None}, "a cell needs a task .* or produces")):
        with pytest.raises(SpecError, match=message):
            load_spec(_spec(tmp_path, tmp_path, [{**cell, **change}]))


def kill_after_first_checkpoint(spec_path, tmp_path, run_dir, *extra, wait_s: float = 180) -> None:
    """Start ``cxrbench bench SPEC *extra``, and once ``run_dir`` has its first checkpoint (plus a second)
    SIGKILL the runner and every process of the cell it is running, mid-training."""
    proc = subprocess.Popen([sys.executable, "-m", "cxrbench.cli", "bench", str(spec_path), *extra], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + wait_s  # generous: process starts on a slow machine
    while time.time() < deadline and not (run_dir / "checkpoints/last.ckpt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_sweep_resumes_and_finishes_every_cell_once(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    slow = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
             "init_args": {"monitor": "val/loss", "mode": "min", "save_last": True}},
            {"class_path": "toy_methods.SlowEpochs", "init_args": {"seconds": 0.3}}]  # 40 epochs: >= 12 s
    cells = [{"name": "slow", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", "seeds": [0],
              "overrides": {"trainer.max_epochs": 40, "trainer.callbacks": slow}},
             {"name": "quick", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", "seeds": [0]}]
    spec_path = _spec(tmp_path, root, cells)
    spec = load_spec(spec_path)
    slow_dir = spec.runs_dir / spec.cells[0].run_id
    kill_after_first_checkpoint(spec_path, tmp_path, slow_dir)
    assert (slow_dir / "checkpoints/last.ckpt").exists() and not (slow_dir / "result.json").exists()
    assert status(spec, spec.cells[0]) == "partial"
    res = _bench(spec_path, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[resume]" in res.stdout
    results = sorted(spec.runs_dir.rglob("result.json"))
    assert len(results) == 2 and {json.loads(p.read_text())["run_id"] for p in results} == {c.run_id for c in spec.cells}
    for p in results:
        rec = json.loads(p.read_text())
        assert 0 <= rec["metrics"]["auc/mean"] <= 1 and rec["provenance"]["data"] == "twin"
        torch.load(p.parent / "model.ckpt", map_location="cpu", weights_only=False)
    assert not list(spec.runs_dir.rglob(".*.tmp*"))
    # Resumed, not restarted, and the log kept: every epoch's validation row exactly once.
    import csv

    rows = list(csv.DictReader((slow_dir / "metrics.csv").open()))
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/loss")]
    assert sorted(val_epochs) == list(range(40)), val_epochs
    rec = json.loads((slow_dir / "result.json").read_text())
    if rec.get("resumed"):  # a kill can also cut the only checkpoint: then it restarts from epoch 0
        assert rec["resumed"][0]["epoch"] >= 0 and "checkpoint" in rec["resumed"][0]
    again = _bench(spec_path, tmp_path)
    assert again.returncode == 0 and again.stdout.count("[done]") == 2


def test_two_process_ddp_cell_writes_one_result_with_the_full_test_set(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    spec_path = _spec(tmp_path, root, [{"name": "ddp", "task": "nih8-cls", "method": "toy", "config": TOY,
                                        "data": "nih", "seeds": [0], "overrides": {"trainer.max_epochs": 1}}])
    res = _bench(spec_path, tmp_path, "--devices", "2")
    assert res.returncode == 0, res.stdout + res.stderr + "".join(
        p.read_text()[-3000:] for p in (tmp_path / "runs").rglob("stdout.log"))
    results = list((tmp_path / "runs").rglob("result.json"))
    assert len(results) == 1
    log = (results[0].parent / "stdout.log").read_text()
    assert "Starting with 2 processes" in log and "gloo" in log, log[-2000:]
    rec = json.loads(results[0].read_text())
    # Single-process evaluation of the same checkpoint gives the same numbers.
    sys.path.insert(0, str(TESTS))
    from data_modules import NIH
    from toy_methods import ToyClassifier

    import lightning as L

    run_dir = results[0].parent
    dm = NIH(root, protocol="rgt", label_set="nih8", transforms="plain", image_size=32, cache_size=64, batch_size=16,
             cache_dir=str(tmp_path / "cache" / "images"))
    model = ToyClassifier.load_from_checkpoint(run_dir / "model.ckpt")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    trainer.test(model, dm, verbose=False)
    assert rec["metrics"]["n_images"] == model.test_metrics["n_images"] == len(dm.splits["test"])
    assert rec["metrics"]["auc/mean"] == pytest.approx(model.test_metrics["auc/mean"], abs=1e-6)


def test_two_process_cpu_cell_of_a_batchnorm_model_runs(twin_factory, tmp_path):
    """SyncBatchNorm is for GPU modules only: on CPU processes (gloo) the global-batch rule leaves it off,
    where forcing it stopped every BatchNorm model at its first step."""
    root = twin_factory("nih", n=90, size=64)
    spec_path = _spec(tmp_path, root, [{"name": "ddp-bn", "task": "nih8-cls", "method": "toy-bn", "config": TOY,
                                        "data": "nih", "seeds": [0], "overrides": {
                                            "trainer.max_epochs": 1, "model.class_path": "toy_methods.ToyBNClassifier"}}])
    res = _bench(spec_path, tmp_path, "--devices", "2")
    logs = "".join(p.read_text() for p in (tmp_path / "runs").rglob("stdout.log"))
    assert res.returncode == 0, res.stdout + res.stderr + logs[-3000:]
    assert "Starting with 2 processes" in logs and len(list((tmp_path / "runs").rglob("result.json"))) == 1


def test_wandb_offline_run_says_what_it_is_and_never_holds_the_key(tmp_path, monkeypatch):
    from cxrbench.runner.cell import make_loggers

    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", secret)  # configured, but this run stays offline
    meta = {"task": "nih-cardiomegaly", "method": "amm", "seed": 1, "fraction": 0.25, "scale": "smoke",
            "run_id": "amm-cardiomegaly-s1-f0.25-abcdef1234", "name": "amm-cardiomegaly"}
    config = {"data": {"class_path": "data_modules.NIH", "init_args": {"split_seed": 3, "image_size": 64,
                                                                       "root": str(tmp_path / "nowhere")}},
              "model": {"class_path": "cxrbench.methods.AMM"}, "trainer": {"max_epochs": 2, "devices": 1}}
    csv, wb = make_loggers(tmp_path, meta, config=config)
    run = wb.experiment
    try:
        # task/method groups keep AMM and GAP apart in the W&B UI
        assert run.group == "nih-cardiomegaly/amm" and run.job_type == "amm" and run.offline
        assert "seed=1" in run.tags and "fraction=0.25" in run.tags
        assert run.id == meta["run_id"][-40:]
        cfg = dict(run.config)
        assert cfg["task"] == "nih-cardiomegaly" and cfg["split_seed"] == 3 and cfg["seed"] == 1
        assert cfg["commit"] and {"torch", "lightning"} <= set(cfg["versions"])
        # the benchmark task survives Lightning's hyperparameters (whose 'task' is the label kind), and the
        # data and trainer arguments tell a smoke run from a paper run
        assert cfg["benchmark_task"] == "nih-cardiomegaly" and cfg["data_args"]["image_size"] == 64
        assert cfg["trainer_args"] == {"max_epochs": 2} and "twin_spec" in cfg
    finally:
        run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert secret not in p.read_bytes().decode(errors="ignore"), p


PRETRAIN = str(REPO / "benchmarks/pretraining_baselines/configs/supce_nih.yaml")
PROBE = str(REPO / "benchmarks/pretraining_baselines/configs/linear_nih14.yaml")
TINY_PIPE = {"trainer.max_epochs": 1, "trainer.max_steps": -1, "trainer.accelerator": "cpu", "trainer.devices": 1,
             "trainer.callbacks": [], "model.init_args.encoder_kwargs": {"width": 4}, "data.init_args.image_size": 32,
             "data.init_args.cache_size": 64, "data.init_args.batch_size": 16, "data.init_args.num_workers": 0}


def _pipeline(tmp_path, root, probe_extra=None, producer_extra=None):
    cells = [{"name": "pretrain", "method": "supce", "config": PRETRAIN, "data": "nih", "produces": ["encoder"],
              **(producer_extra or {})},
             {"name": "probe", "task": "nih14-linear", "method": "supce", "config": PROBE, "data": "nih",
              "fractions": [0.5], "needs": {"encoder": "pretrain"},
              "overrides": {"model.init_args.encoder_artifact": "${needs.encoder}"}, **(probe_extra or {})}]
    return _spec(tmp_path, root, cells, defaults=TINY_PIPE)


def test_pipeline_pretrain_then_probe_through_an_encoder_artifact(twin_factory, tmp_path):
    """A producer-only cell (no task) checkpoints on its own loss, exports an encoder artifact and is
    done when it is written; its consumer reads it by absolute path and is recorded under the sweep's
    method name; a rerun does nothing."""
    root = twin_factory("nih", n=90, size=64)
    spec = load_spec(_pipeline(tmp_path, root))
    producer, consumer = spec.cells
    assert consumer.needs["encoder"].run_id == producer.run_id
    res = _bench(spec.path, tmp_path, wandb=True)
    assert res.returncode == 0, res.stdout + "".join(p.read_text()[-2000:] for p in spec.runs_dir.rglob("stdout.log"))
    pdir, cdir = spec.runs_dir / producer.run_id, spec.runs_dir / consumer.run_id
    assert (pdir / "artifacts/encoder.pt").is_file() and not (pdir / "result.json").exists()
    assert status(spec, producer) == "done"
    ckpt = torch.load(pdir / "model.ckpt", map_location="cpu", weights_only=True)
    monitors = [v.get("monitor") for k, v in ckpt["callbacks"].items() if "ModelCheckpoint" in k]
    assert monitors == ["val/loss"]  # the pretraining family's own loss, not val/auc
    config = yaml.safe_load((cdir / "config.yaml").read_text())
    assert config["model"]["init_args"]["encoder_artifact"] == str((pdir / "artifacts/encoder.pt").resolve())
    rec = json.loads((cdir / "result.json").read_text())
    assert rec["method"] == "supce" and rec["module"] == "LinearProbe" and rec["fraction"] == 0.5
    # the record names the encoder it used: the artifact's sha256, its producer run and recipe
    written = torch.load(pdir / "artifacts/encoder.pt", map_location="cpu", weights_only=True)
    for used in (rec["artifacts"]["encoder"],):
        assert used["sha256"] == written["sha256"] and used["producer"]["run_id"] == producer.run_id
        assert used["producer"]["recipe_fingerprint"] == written["producer"]["recipe_fingerprint"]
    # per-sample predictions beside the record, and the record's patient-bootstrap CI of its AUC
    import pandas as pd

    preds = pd.read_csv(cdir / "predictions.csv")
    assert len(preds[preds["split"] == "test"]) == rec["metrics"]["n_images"]
    assert {"image", "patient_id", "prob/Atelectasis", "label/Atelectasis"} <= set(preds.columns)
    low, high = rec["ci"]["auc/mean"]
    assert rec["ci"]["resampling"] == "patients" and low <= high
    # the offline W&B run of the consumer holds its prediction table; the producer's its config
    assert list(cdir.glob("wandb/offline-run-*/files/media/table/test/predictions_*.table.json"))
    # the probe's encoder weights are the artifact's, untouched; under nih14-linear's protocol (the public
    # code's: BatchNorm in train mode) only its BatchNorm statistics moved
    art = torch.load(pdir / "artifacts/encoder.pt", weights_only=True)["payload"]["state_dict"]
    kept = torch.load(cdir / "model.ckpt", weights_only=True)["state_dict"]
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert all(torch.equal(art[k], kept[f"encoder.{k}"]) for k in art if not k.endswith(stats))
    assert any(not torch.equal(art[k], kept[f"encoder.{k}"]) for k in art if k.endswith("running_mean"))
    again = _bench(spec.path, tmp_path)
    assert again.returncode == 0 and again.stdout.count("[done]") == 2


def test_a_diverged_producer_stops_with_its_step_and_yields_no_artifact_consumer_result_or_board_row(twin_factory,
                                                                                                      tmp_path):
    """A pretraining whose loss is NaN used to end [finished] and hand NaN weights on (issue 34). Now its fit
    stops at the check naming the step, the cell fails, its consumer never runs and no board row exists."""
    root = twin_factory("nih", n=90, size=64)
    spec = load_spec(_pipeline(tmp_path, root, producer_extra={"overrides": {"model.init_args.lr": 1.0e30}}))
    producer, consumer = spec.cells
    res = _bench(spec.path, tmp_path, "--leaderboard", str(tmp_path / "board"))
    log = "".join(p.read_text() for p in (spec.runs_dir / producer.run_id).rglob("stdout.log"))
    assert res.returncode != 0 and "the training loss became NaN or infinite by step" in log, res.stdout + log[-3000:]
    assert "Traceback" not in log
    assert not (spec.runs_dir / producer.run_id / "artifacts/encoder.pt").exists()
    assert not (spec.runs_dir / consumer.run_id / "result.json").exists() and "a cell it needs failed" in res.stdout
    assert not list((tmp_path / "board").glob("leaderboard_*.md")) or \
        "supce" not in "".join(f.read_text() for f in (tmp_path / "board").glob("leaderboard_*.md"))


def test_needs_resolve_after_runs_dir_anywhere_in_the_config_and_ids_do_not_depend_on_paths(tmp_path):
    root = tmp_path / "nih"
    extra = {"overrides": {"model.init_args.encoder_artifact": "${needs.encoder}",
                           "trainer.callbacks": [{"class_path": "x", "init_args": {"note": "from ${needs.encoder}"}}]}}
    path = _pipeline(tmp_path, root, probe_extra=extra)
    a = load_spec(path)
    b = load_spec(path, runs_dir=tmp_path / "elsewhere")
    assert [c.run_id for c in a.cells] == [c.run_id for c in b.cells]
    cfg = b.cells[1].resolved_config(b.runs_dir)
    want = str((tmp_path / "elsewhere" / a.cells[0].run_id / "artifacts/encoder.pt").resolve())
    assert cfg["model"]["init_args"]["encoder_artifact"] == want
    assert cfg["trainer"]["callbacks"][0]["init_args"]["note"] == f"from {want}"
    moved = yaml.safe_load(path.read_text())
    moved["data"]["nih"]["root"] = str(tmp_path / "moved")
    path.write_text(yaml.safe_dump(moved))
    assert [c.run_id for c in load_spec(path).cells] == [c.run_id for c in a.cells]  # the data moved, same runs


def test_needs_refuses_a_fraction_or_seed_no_producer_has(tmp_path):
    path = _pipeline(tmp_path, tmp_path, producer_extra={"fractions": [0.5]})
    with pytest.raises(SpecError, match=r"needs 'pretrain' at seed 0, fraction 1, which 'pretrain' does not run "
                                        r"\(seeds \[0\], fractions \[0.5\]\)"):
        load_spec(path)
    path = _pipeline(tmp_path, tmp_path, probe_extra={"seeds": [0, 1]})
    with pytest.raises(SpecError, match=r"\(seed 1, fraction 0.5\): needs 'pretrain' at seed 1"):
        load_spec(path)
    ok = _pipeline(tmp_path, tmp_path, probe_extra={"seeds": [0, 1], "needs": {"encoder": {"cell": "pretrain", "seed": 0}}})
    assert {c.needs["encoder"].run_id for c in load_spec(ok).cells[1:]} == {load_spec(ok).cells[0].run_id}
    bad = _pipeline(tmp_path, tmp_path, probe_extra={"needs": {"encoder": {"cell": "pretrain", "artifact": "heatmaps"}}})
    with pytest.raises(SpecError, match="needs a 'heatmaps' artifact from 'pretrain', which produces \\['encoder'\\]"):
        load_spec(bad)
    typo = _pipeline(tmp_path, tmp_path, probe_extra={"overrides": {"model.init_args.encoder_artifact": "${needs.encodr}"}})
    with pytest.raises(SpecError, match="uses \\$\\{needs.encodr\\} but needs only \\['encoder'\\]"):
        load_spec(typo)


def test_only_brings_in_the_producers_a_cell_needs(tmp_path):
    spec = load_spec(_pipeline(tmp_path, tmp_path))
    assert spec.select(["probe"]) == ["pretrain"] and [c.name for c in spec.cells] == ["pretrain", "probe"]
    with pytest.raises(SpecError, match="unknown cell"):
        load_spec(spec.path).select(["prob"])


def test_a_consumer_whose_artifact_is_missing_stops_before_training(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    spec = load_spec(_pipeline(tmp_path, root))
    from cxrbench.runner.launch import write_cell

    d = write_cell(spec, spec.cells[1])  # the consumer alone, as a SLURM job whose producer did not finish
    res = subprocess.run([sys.executable, "-m", "cxrbench.runner.cell", str(d)], capture_output=True, text=True,
                         cwd=tmp_path, env=_env(tmp_path))
    assert res.returncode == 2, res.stderr[-2000:]
    assert "needs a encoder artifact at" in res.stderr and spec.cells[0].run_id in res.stderr
    assert "Traceback" not in res.stderr and not (d / "checkpoints").exists()


def test_amm_table5_is_one_leaderboard_row_per_backbone_and_head(tmp_path, monkeypatch):
    from cxrbench.leaderboard import aggregate

    monkeypatch.setenv("CXR_DATA", str(tmp_path))
    spec = load_spec(REPO / "benchmarks/amm/paper.yaml", repo=REPO)
    methods = sorted({c.method for c in spec.cells})
    assert len(methods) == 8 and "amm-densenet121" in methods and "gap-inception-resnet-v2" in methods
    records = [{"method": c.method, "task": c.task, "seed": c.seed, "fraction": 1.0, "metrics": {"auc/mean": 0.8},
                "run_id": c.run_id, "recipe": {"fingerprint": c.method}, "provenance": {"data": "real", "scale": "full"},
                "data_identity": {"dataset": "NIH", "data": "real", "split_seed": 0}} for c in spec.cells]
    table = aggregate(records)
    assert sorted(table["method"]) == methods and set(table["n"]) == {3}
    assert table.set_index("method").loc["gap-resnet50", "paper"] == 0.86  # AMM Table 5


def test_slurm_launcher_submits_one_job_per_cell_through_submitit(twin_factory, tmp_path):
    """submitit's debug executor runs the job function that SLURM would run, in this process."""
    root = twin_factory("nih", n=90, size=64)
    spec_path = _spec(tmp_path, root, [{"name": "slurm", "task": "nih8-cls", "method": "toy", "config": TOY,
                                        "data": "nih", "seeds": [0, 1], "overrides": {"trainer.max_epochs": 1}}])
    res = _bench(spec_path, tmp_path, "--launcher", "debug")
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.count("[submitted]") == 2
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 2
    again = _bench(spec_path, tmp_path, "--launcher", "debug")
    assert again.returncode == 0 and "[submitted]" not in again.stdout  # finished cells are not resubmitted


def test_parallel_cells_run_at_once_and_match_the_sequential_results(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    cells = [{"name": n, "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", "seeds": [0],
              "overrides": {"trainer.max_epochs": 2, "model.init_args.lr": lr}} for n, lr in (("a", 0.01), ("b", 0.02))]
    spec_path = _spec(tmp_path, root, cells)
    par = _bench(spec_path, tmp_path, "--parallel", "2", "--runs-dir", str(tmp_path / "par"))
    assert par.returncode == 0, par.stdout + par.stderr
    lines = par.stdout.splitlines()
    first_finish = next(i for i, l in enumerate(lines) if "[finished]" in l)
    assert sum("[run]" in l for l in lines[:first_finish]) == 2, par.stdout  # both started before either ended
    seq = _bench(spec_path, tmp_path, "--runs-dir", str(tmp_path / "seq"))
    assert seq.returncode == 0, seq.stdout + seq.stderr

    def metrics(folder):
        return {json.loads(p.read_text())["run_id"]: json.loads(p.read_text())["metrics"]["auc/mean"]
                for p in (tmp_path / folder).rglob("result.json")}

    assert metrics("par") == metrics("seq") and len(metrics("par")) == 2
    bad = _bench(spec_path, tmp_path, "--nodes", "2")
    assert bad.returncode == 2 and "--nodes > 1 needs --launcher slurm" in bad.stderr


def test_a_slurm_job_that_times_out_is_requeued_and_resumes_from_its_checkpoint(twin_factory, tmp_path, monkeypatch):
    """submitit's local executor runs the job SLURM would run: SLURM's signal (USR2) comes mid-training,
    submitit calls CellJob.checkpoint and requeues the job, and the cell resumes from its newest checkpoint.

    The signal is sent by the job itself at the start of epoch 3 of its first attempt
    (``toy_methods.PreemptOnce``), after checkpoints exist: an event, not a clock, so a machine 3× slower
    (or busy with the other xdist worker) runs the same schedule. The time limit is only a backstop."""
    from cxrbench.runner.launch import run_slurm

    root = twin_factory("nih", n=90, size=64)
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
                 {"class_path": "toy_methods.PreemptOnce", "init_args": {"at_epoch": 3}}]
    spec = load_spec(_spec(tmp_path, root, [{"name": "long", "task": "nih8-cls", "method": "toy", "config": TOY,
                                             "data": "nih", "overrides": {"trainer.max_epochs": 8,
                                                                          "trainer.callbacks": callbacks}}]))
    for k, v in _env(tmp_path).items():
        monkeypatch.setenv(k, v)
    (job,) = run_slurm(spec, cluster="local", timeout_min=60, signal_delay_s=60, max_num_timeout=2,
                       log=lambda *a: None)
    job.result()
    run_dir = spec.runs_dir / spec.cells[0].run_id
    log = "".join(p.read_text() for p in (spec.runs_dir / ".submitit").rglob("*_log.out"))
    assert "Requeued job" in log, log[-2000:]
    resumes = json.loads((run_dir / "resumes.json").read_text())
    rec = json.loads((run_dir / "result.json").read_text())
    assert len(resumes) == 1 and resumes[0]["epoch"] == 2 and rec["resumed"] == resumes, resumes
    import csv

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert sorted(int(r["epoch"]) for r in rows if r.get("val/loss")) == list(range(8))
    assert sum(1 for r in rows if r.get("test/auc/mean")) == 1


def test_a_real_dataset_without_the_box_file_is_named_before_anything_trains(twin_factory, tmp_path):
    """RGT's class box prior needs BBox_List_2017.csv: a release without it is refused by the sweep
    (and named by --dry-run) before any cell starts, with the file and the cells that need it."""
    import shutil

    root = tmp_path / "nih"
    shutil.copytree(twin_factory("nih", n=90, size=64), root)
    (root / "BBox_List_2017.csv").unlink()
    cells = [{"name": "rgtlike", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", "seeds": [0, 1]}]
    spec = _spec(tmp_path, root, cells)
    dry = _bench(spec, tmp_path, "--dry-run")
    assert dry.returncode == 0 and "data: nih: protocol 'rgt' needs the box file" in dry.stdout, dry.stdout
    res = _bench(spec, tmp_path)
    assert res.returncode != 0 and "BBox_List_2017.csv" in res.stderr and "cells: rgtlike" in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("result.json"))


def test_the_sweep_runs_what_the_data_on_disk_permits_and_names_every_problem_in_one_pass(twin_factory, tmp_path):
    """Issue 28: a missing dataset used to hide the layout checks of the others, and one problem stopped
    every cell. Now the dry run says which data are twins and lists every problem at once; the sweep
    skips only the cells a problem stops (naming it) and runs the rest."""
    import shutil

    root = tmp_path / "nih"
    shutil.copytree(twin_factory("nih", n=90, size=64), root)
    (root / "BBox_List_2017.csv").unlink()
    cells = [{"name": "rgtlike", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih"},
             {"name": "elsewhere", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "gone"},
             {"name": "twinned", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "fresh",
              "overrides": {"trainer.max_epochs": 1}}]
    spec_path = _spec(tmp_path, root, cells)
    spec = yaml.safe_load(spec_path.read_text())
    spec["data"]["gone"] = {"root": str(tmp_path / "absent")}
    spec["data"]["fresh"] = {"root": str(tmp_path / "twin-nih"), "twin": {"dataset": "nih", "n": 90, "size": 64}}
    spec_path.write_text(yaml.safe_dump(spec))
    dry = _bench(spec_path, tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "data: nih: TWIN (real metadata, synthetic pixels) at" in dry.stdout  # a "real" root holding a twin
    assert "data: missing dataset gone" in dry.stdout and "protocol 'rgt' needs the box file" in dry.stdout
    res = _bench(spec_path, tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "BBox_List_2017.csv" in res.stderr and "cells: rgtlike" in res.stderr and "cells: elsewhere" in res.stderr
    assert "[finished] twinned" in res.stdout and res.stdout.count("its data cannot be read") == 2, res.stdout


def test_estimate_measures_a_step_and_scales_it_by_each_cells_training_steps(twin_factory, tmp_path):
    """--estimate: one measurement per distinct config (seeds and fractions share it), hours = steps × step
    time with steps = epochs × ceil(train images × fraction / batch); nothing is written into the runs folder."""
    from cxrbench.runner.estimate import estimate

    root = twin_factory("nih", n=90, size=64)
    cells = [{"name": "a", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih", "seeds": [0, 1],
              "fractions": [0.5, 1.0]}]
    spec = load_spec(_spec(tmp_path, root, cells))
    lines = []
    rows = estimate(spec, log=lines.append, steps=2)
    assert len(rows) == 4 and len({r["step_s"] for r in rows}) == 1 and rows[0]["step_s"] > 0
    from data_modules import NIH

    dm = NIH(root, protocol="rgt", label_set="nih8", cache=False)
    n_train = len(dm.make_splits(dm.prepare_index())["train"])
    for r, cell in zip(rows, spec.cells):
        assert r["steps"] == 3 * -(-round(n_train * cell.fraction) // 16)  # toy config: 3 epochs, batch 16
        assert abs(r["hours"] - r["steps"] * r["step_s"] / 3600) < 1e-12
    assert "device-hours for 4 of 4 cells" in lines[-1]
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("config.yaml"))
    # on 2 devices per cell: one process timed with half the batch; the steps are the global batch's, the
    # hours are device-hours (issue 33: the batch was counted per process and the hours doubled on top)
    two = estimate(spec, log=lines.append, steps=2, devices=2)
    for r2, r1 in zip(two, rows):
        assert r2["steps"] == r1["steps"] and abs(r2["hours"] - 2 * r2["steps"] * r2["step_s"] / 3600) < 1e-12


def test_estimate_measures_once_per_step_shape_and_parallel_auto_takes_every_gpu(tmp_path):
    """Issue 33: the 15 STN fold configs, a fraction sweep and an lr grid are one step measurement each;
    `--parallel auto` is one cell per GPU slot (1 on a machine without a GPU); a bad value is refused."""
    from cxrbench.runner.estimate import step_key

    spec = load_spec(_spec(tmp_path, tmp_path, [{"name": "a", "task": "nih8-cls", "method": "toy", "config": TOY,
                                                 "data": "nih", "seeds": [0, 1], "fractions": [0.5, 1.0],
                                                 "lr_grid": [0.01, 0.1]}]))
    assert len(spec.cells) == 8 and len({step_key(c.config) for c in spec.cells}) == 1
    other = dict(spec.cells[0].config, data={**spec.cells[0].config["data"]})
    other["data"]["init_args"] = {**other["data"]["init_args"], "batch_size": 8}
    assert step_key(other) != step_key(spec.cells[0].config)  # a different batch is another step
    import torch

    res = _bench(spec.path, tmp_path, "--parallel", "auto", "--dry-run")
    assert res.returncode == 0 and f"--parallel auto: {max(1, torch.cuda.device_count())} cell(s) at once" in res.stdout
    bad = _bench(spec.path, tmp_path, "--parallel", "none")
    assert bad.returncode == 2 and "--parallel takes a number of cells (1 or more) or 'auto'" in bad.stderr
