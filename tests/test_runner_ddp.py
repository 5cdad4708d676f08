"""Sweep cells on 2 CPU processes (DDP, gloo), as a multi-GPU node runs them (issue 27): a producer and its
consumer write each file once and the consumer reads the producer's artifact; a cell killed mid-training
resumes under 2 processes and finishes with every epoch logged once and one resume recorded."""

from __future__ import annotations

import csv
import json

import pandas as pd
import torch

from cxrbench.runner.launch import status
from cxrbench.runner.spec import load_spec

from test_runner import REPO, TOY, _bench, _pipeline, _spec, kill_after_first_checkpoint


def _logs(spec) -> str:
    return "".join(p.read_text()[-3000:] for p in spec.runs_dir.rglob("stdout.log"))


def test_a_producer_and_its_consumer_on_two_processes_write_each_file_once(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    spec = load_spec(_pipeline(tmp_path, root))
    producer, consumer = spec.cells
    res = _bench(spec.path, tmp_path, "--devices", "2")
    assert res.returncode == 0, res.stdout + res.stderr + _logs(spec)
    pdir, cdir = spec.runs_dir / producer.run_id, spec.runs_dir / consumer.run_id
    for run in (pdir, cdir):
        assert "Starting with 2 processes" in (run / "stdout.log").read_text()
    # one encoder artifact, whole (its payload hash verifies), and the consumer's record names exactly it
    assert sorted(p.name for p in (pdir / "artifacts").iterdir()) == ["encoder.pt"]
    written = torch.load(pdir / "artifacts/encoder.pt", map_location="cpu", weights_only=True)
    rec = json.loads((cdir / "result.json").read_text())
    assert rec["artifacts"]["encoder"]["sha256"] == written["sha256"]
    assert rec["artifacts"]["encoder"]["producer"]["run_id"] == producer.run_id
    # one record, its predictions every test image once (the sampler's padding dropped), no litter
    assert [p.parent for p in spec.runs_dir.rglob("result.json")] == [cdir]
    preds = pd.read_csv(cdir / "predictions.csv")
    test = preds[preds["split"] == "test"]
    assert len(test) == rec["metrics"]["n_images"] and test["index"].is_unique
    assert not list(spec.runs_dir.rglob(".*.tmp*")) and not list(spec.runs_dir.rglob("*.tmp"))
    again = _bench(spec.path, tmp_path, "--devices", "2")
    assert again.returncode == 0 and again.stdout.count("[done]") == 2


def test_a_cell_killed_on_two_processes_resumes_on_two_and_finishes(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    epochs = 20
    slow = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
             "init_args": {"monitor": "val/loss", "mode": "min", "save_last": True}},
            {"class_path": "toy_methods.SlowEpochs", "init_args": {"seconds": 0.4}}]  # 20 epochs: >= 8 s
    spec_path = _spec(tmp_path, root, [{"name": "slow", "task": "nih8-cls", "method": "toy", "config": TOY,
                                        "data": "nih", "seeds": [0],
                                        "overrides": {"trainer.max_epochs": epochs, "trainer.callbacks": slow}}])
    spec = load_spec(spec_path)
    run = spec.runs_dir / spec.cells[0].run_id
    kill_after_first_checkpoint(spec_path, tmp_path, run, "--devices", "2")  # the runner and both processes
    assert (run / "checkpoints/last.ckpt").exists() and not (run / "result.json").exists()
    assert status(spec, spec.cells[0]) == "partial"
    res = _bench(spec_path, tmp_path, "--devices", "2")
    assert res.returncode == 0, res.stdout + res.stderr + _logs(spec)
    assert "[resume]" in res.stdout
    rec = json.loads((run / "result.json").read_text())
    assert 0 <= rec["metrics"]["auc/mean"] <= 1
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert sorted(int(r["epoch"]) for r in rows if r.get("val/loss")) == list(range(epochs))  # each epoch once
    resumes = json.loads((run / "resumes.json").read_text())
    assert len(resumes) == 1, resumes  # written by one process, not once per process
    assert not list(spec.runs_dir.rglob(".*.tmp*"))


STAGE1 = str(REPO / "benchmarks/camcontrast/configs/camcontrast_cam_nih.yaml")
STAGE2 = str(REPO / "benchmarks/camcontrast/configs/camcontrast_nih.yaml")
TINY = {"trainer.max_epochs": 1, "trainer.max_steps": -1, "trainer.accelerator": "cpu", "trainer.callbacks": [],
        "data.init_args.cache_size": 64, "data.init_args.batch_size": 16, "data.init_args.num_workers": 0}


def test_camcontrast_stage1_on_two_processes_writes_one_heatmap_folder_that_stage2_reads(twin_factory, tmp_path):
    """Stage 1's heatmap export (one writer: rank 0, through its own one-device predict loop) after a
    2-process fit, and stage 2 on 2 processes reading it."""
    root = twin_factory("nih", n=90, size=64)
    cells = [{"name": "cam", "method": "camcontrast-cam", "config": STAGE1, "data": "nih", "produces": ["heatmaps"],
              "overrides": {"model.init_args.encoder_kwargs": {"width": 4, "depth": 4}, "model.init_args.warmup_epochs": 0,
                            "data.init_args.transforms": "plain", "data.init_args.image_size": 32,
                            "data.init_args.eval_size": 32}},
             {"name": "stage2", "method": "camcontrast", "config": STAGE2, "data": "nih", "produces": ["encoder"],
              "needs": {"heatmaps": "cam"},
              "overrides": {"data.init_args.heatmaps": "${needs.heatmaps}", "model.init_args.encoder_kwargs": {"width": 4},
                            "data.init_args.full_size": 32, "data.init_args.image_size": 16}}]
    spec = load_spec(_spec(tmp_path, root, cells, defaults=TINY))
    res = _bench(spec.path, tmp_path, "--devices", "2")
    assert res.returncode == 0, res.stdout + res.stderr + _logs(spec)
    cam, stage2 = (spec.runs_dir / c.run_id for c in spec.cells)
    assert "Starting with 2 processes" in (cam / "stdout.log").read_text()
    assert sorted(p.name for p in (cam / "artifacts").iterdir()) == ["heatmaps"]  # one folder, no temporary beside it
    meta = json.loads((cam / "artifacts/heatmaps/artifact.json").read_text())
    assert meta["producer"]["run_id"] == spec.cells[0].run_id and meta["n"] > 0
    assert (stage2 / "artifacts/encoder.pt").is_file()
    log = (stage2 / "stdout.log").read_text()
    assert "Starting with 2 processes" in log
    # this twin's training crops leave a last batch of 1 image per process: a zero-loss step on both
    # (it crashed the projector's BatchNorm; a skipped step would be refused by Lightning under DDP)
    assert "steps with a zero loss" in log
