"""``cxrbench bench SPEC --budget``: FLOPs × passes, device-free (issue 33)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxrbench.runner.budget import BudgetError, check_gpu, run_passes

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TOY = str(TESTS / "configs/toy_nih8.yaml")


def toy_flops_per_sample(side: int, classes: int) -> tuple[int, int]:
    """The toy's matmul/conv FLOPs by hand (FLOP = 2 × multiply-add): a 3×3 stride-2 convolution from 1
    to 8 channels on a side² image, then a linear 8 -> classes. Training = forward + backward, where the
    convolution's backward is its weight gradient only (the image needs no gradient) and the linear
    layer's is its weight and its input gradient."""
    conv = 2 * (side // 2) ** 2 * 8 * 9
    linear = 2 * 8 * classes
    return conv + linear + conv + 2 * linear, conv + linear


def test_the_budget_of_a_tiny_spec_is_hand_computed_flops_times_its_passes(twin_factory, tmp_path, monkeypatch):
    from data_modules import NIH

    root = twin_factory("nih", n=120, size=64)
    spec = {"name": "t", "scale": "test", "runs_dir": str(tmp_path / "runs"), "data": {"nih": {"root": str(root)}},
            "cells": [{"name": "a", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih",
                       "seeds": [0, 1], "fractions": [0.5, 1.0]}]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "budget.md"
    monkeypatch.chdir(tmp_path)  # the probe's twins land in ./.cache
    env = {"PYTHONPATH": f"{TESTS}:{REPO}", "CXRBENCH_CACHE": str(tmp_path / "cache"), "CXRBENCH_WANDB": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from cxrbench.runner.budget import budget
    from cxrbench.runner.spec import load_spec

    got = budget(load_spec(tmp_path / "spec.yaml"), gpu="a100", mfu=0.5, out=str(out), log=lambda line: None)

    cfg = yaml.safe_load(Path(TOY).read_text())
    args = {**cfg["data"]["init_args"], "root": str(root), "cache": False}
    train_fps, eval_fps = toy_flops_per_sample(args["image_size"], 8)
    epochs = cfg["trainer"]["max_epochs"]
    expect_train = expect_eval = 0
    for fraction in (0.5, 1.0):
        dm = NIH(**{**args, "fraction": fraction})
        dm.setup()  # the split sizes as training sees them: the datasets setup builds
        n = {s: len(d) for s, d in dm.datasets.items()}
        assert dm.split_sizes() == {s: n[s] for s in dm.splits}
        expect_train += 2 * epochs * n["train"] * train_fps  # two seeds
        # every validation epoch, then each test split (test, loc); the toy's loc step scores no forward
        expect_eval += 2 * (epochs * n["val"] + n["test"]) * eval_fps
    row, = got["cells"]
    assert row["runs"] == 4
    assert row["gflops_per_sample"]["train"] * 1e9 == pytest.approx(train_fps, rel=1e-6)
    assert row["train_flops"] == pytest.approx(expect_train, rel=1e-6)
    assert row["eval_flops"] == pytest.approx(expect_eval, rel=1e-6)
    peak = check_gpu("a100", 0.5)["fp32"]
    assert row["gpu_hours"] == pytest.approx((expect_train + expect_eval) / (peak * 0.5) / 3600, rel=1e-6)
    text = out.read_text()
    assert "NVIDIA A100" in text and "| a | nih8-cls | fp32 | 4 |" in text and "the spec's data" not in text


@pytest.mark.parametrize("gpu, mfu, message", [
    ("h1000", 0.4, r"--gpu 'h1000' is not known; known GPUs: h100 \(NVIDIA H100 SXM\), h200"),
    ("h100", 0.0, r"--mfu must be in \(0, 1\]"),
    ("h100", 1.5, r"--mfu must be in \(0, 1\]"),
])
def test_an_unknown_gpu_or_an_mfu_outside_0_1_is_refused_listing_the_known_ones(gpu, mfu, message):
    with pytest.raises(BudgetError, match=message):
        check_gpu(gpu, mfu)


def test_the_command_refuses_a_bad_gpu_in_one_line_before_reading_the_spec(tmp_path):
    res = subprocess.run([sys.executable, "-m", "cxrbench.cli", "bench", str(tmp_path / "absent.yaml"), "--budget",
                          "--gpu", "k80"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--gpu 'k80' is not known; known GPUs: h100" in res.stderr


def test_passes_follow_max_steps_validation_interval_and_the_export():
    from cxrbench.runner.spec import Cell

    cell = Cell(name="p", task=None, method="m", seed=0, fraction=1.0, data_name="d", produces=("heatmaps",),
                config={"trainer": {"max_steps": 1000, "check_val_every_n_epoch": 2},
                        "data": {"init_args": {"batch_size": 50}}})
    passes = run_passes(cell, {"train": 10_000, "val": 300, "test": 70}, tested=["test"])
    # 1000 steps of 50 = 50,000 samples = 5 epochs of 10,000: validation after epochs 2 and 4; no task, no test
    assert passes == {"train": 50_000.0, "validation": 600.0, "predict": 10_300.0}


def test_a_strict_probe_is_budgeted_one_validation_encoding_and_a_bn_train_probe_one_per_epoch():
    from cxrbench.runner.spec import Cell

    def passes(freeze):
        cell = Cell(name="p", task="nih14-linear", method="linear", seed=0, fraction=1.0, data_name="d",
                    config={"trainer": {"max_epochs": 10}, "data": {"init_args": {"batch_size": 10}},
                            "model": {"class_path": "cxrbench.methods.LinearProbe", "init_args": {"freeze": freeze}}})
        return run_passes(cell, {"train": 100, "val": 30, "test": 40}, tested=["test"])

    assert passes("strict") == {"train": 1000.0, "validation": 30.0, "test:test": 40.0}
    assert passes("bn_train")["validation"] == 300.0
