"""CLI runs are first-class: each config's own checkpoint, the scored checkpoint in result.json, re-tests
that replace their record, and checkpoints of another model refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "cxrbench.cli", *args], capture_output=True, text=True, cwd=cwd)


def tiny_config(tmp_path, model: str, data: str, logger: str | None = None, trainer: str = "limit_train_batches: 2") -> Path:
    """A CPU-sized override config: one epoch of a few batches, the given model and data init_args (YAML
    flow mappings' contents) and, with ``logger``, a CSVLogger into ``runs/<logger>``."""
    tiny = tmp_path / "tiny.yaml"
    log = f"  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: runs, name: {logger}}}}}\n"
    tiny.write_text(f"trainer:\n  max_epochs: 1\n  {trainer}\n  limit_val_batches: 1\n  accelerator: cpu\n"
                    f"  enable_progress_bar: false\n{log if logger else ''}"
                    f"model:\n  init_args: {{{model}}}\n"
                    f"data:\n  init_args: {{{data}, num_workers: 0, cache_dir: {tmp_path / 'c'}}}\n")
    return tiny


def _tiny(tmp_path, cache=None) -> Path:
    """Both configs log into one folder (runs/shared): what a user gets by reusing a logger name."""
    return tiny_config(tmp_path, "backbone: resnet10t", "image_size: 64, eval_size: 64, cache_size: 96, batch_size: 8",
                       logger="shared")


def test_cli_fit_then_test_of_two_configs_in_one_folder_each_restores_its_own_checkpoint(twin_factory, tmp_path):
    root = twin_factory("nih", n=150, size=96, seed=4)
    tiny = _tiny(tmp_path, tmp_path / "cache")
    common = {name: ["--config", str(REPO / f"benchmarks/amm/configs/{name}_cardiomegaly.yaml"), "--config", str(tiny),
                     "--data.init_args.root", str(root)] for name in ("amm", "gap")}
    for name in ("amm", "gap"):
        fit = _cli("fit", *common[name], cwd=tmp_path)
        assert fit.returncode == 0, fit.stderr[-3000:]
    for name in ("gap", "amm"):  # the newest checkpoint in the folder is GAP's: AMM must not take it
        test = _cli("test", *common[name], "--ckpt_path", "best", cwd=tmp_path)
        assert test.returncode == 0, test.stderr[-3000:]
        # the printed table: one named column per evaluation split, not Lightning's repeated "DataLoader i"
        header = next(line for line in test.stdout.splitlines() if line.startswith("metric "))
        assert "test (n=" in header and "DataLoader" not in test.stdout, test.stdout[-2000:]
    records = {json.loads(p.read_text())["module"]: json.loads(p.read_text())
               for p in (tmp_path / "runs").rglob("result.json")}
    assert set(records) == {"AMM", "GAPBaseline"}
    for module, rec in records.items():
        ckpt = Path(rec["checkpoint"]["path"])
        stamped = __import__("torch").load(ckpt, map_location="cpu", weights_only=True)["cxrbench_recipe"]
        assert stamped["fingerprint"] == rec["recipe"]["fingerprint"], module
        assert len(rec["checkpoint"]["sha256"]) == 64 and rec["data_identity"]["data"] == "twin"
    assert records["AMM"]["recipe"]["fingerprint"] != records["GAPBaseline"]["recipe"]["fingerprint"]
    # a checkpoint of another architecture, named by path: refused before any work, naming both sides
    gap_ckpt = records["GAPBaseline"]["checkpoint"]["path"]
    bad = _cli("test", *common["amm"], "--ckpt_path", gap_ckpt, cwd=tmp_path)
    assert bad.returncode != 0 and "holds a cxrbench.methods.GAPBaseline checkpoint; this config's model is " \
        "cxrbench.methods.AMM" in bad.stderr, bad.stderr[-2000:]
    assert gap_ckpt in bad.stderr and "Traceback" not in bad.stderr
    # the same method with another architecture: refused before any work, naming both sides
    amm_ckpt = records["AMM"]["checkpoint"]["path"]
    other = _cli("predict", *common["amm"], "--model.init_args.backbone", "resnet18", "--ckpt_path", amm_ckpt, cwd=tmp_path)
    assert other.returncode != 0 and "holds another architecture than this config's AMM (backbone: config 'resnet18', " \
        "checkpoint 'resnet10t'" in other.stderr and "Traceback" not in other.stderr, other.stderr[-2000:]
    # arguments that leave the weights as they are: Lightning builds the checkpoint's model, and the CLI says so
    other = _cli("predict", *common["amm"], "--model.init_args.lr", "0.5", "--ckpt_path", amm_ckpt, cwd=tmp_path)
    assert other.returncode == 0 and "lr: config 0.5, checkpoint" in other.stderr, other.stderr[-2000:]
    # testing the AMM checkpoint again writes a second result.json, but the board keeps one record of it
    again = _cli("test", *common["amm"], "--ckpt_path", "best", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 3
    board = _cli("leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "results"), cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    auc = pd.read_csv(tmp_path / "results/leaderboard_auc.csv")
    auc = auc[auc["metric"] == "auc/mean"]
    assert sorted(auc["method"]) == ["amm", "gap"] and list(auc["n"]) == [1, 1], auc


def test_cli_fit_then_test_with_best_refuses_two_runs_of_one_recipe_in_one_folder(twin_factory, tmp_path):
    root = twin_factory("nih", n=150, size=96, seed=4)
    tiny = _tiny(tmp_path, tmp_path / "cache")
    common = ["--config", str(REPO / "benchmarks/amm/configs/gap_cardiomegaly.yaml"), "--config", str(tiny),
              "--data.init_args.root", str(root)]
    for seed in (0, 1):  # the seed is not part of the recipe: two runs of one recipe
        fit = _cli("fit", *common, "--seed_everything", str(seed), cwd=tmp_path)
        assert fit.returncode == 0, fit.stderr[-3000:]
    test = _cli("test", *common, "--ckpt_path", "last", cwd=tmp_path)
    assert test.returncode != 0 and "--ckpt_path last is ambiguous: 2 runs of this recipe" in test.stderr, test.stderr[-2000:]
    assert "version_0" in test.stderr and "version_1" in test.stderr and "Traceback" not in test.stderr


def test_pipeline_pretrain_then_probe_then_board_with_the_cli_alone(twin_factory, tmp_path):
    """The README's per-method path: `cxrbench fit` of a pretraining exports its encoder artifact (as a sweep
    cell would), `cxrbench fit` of a probe consumes it, `cxrbench test` writes the result the board reads."""
    root = twin_factory("nih", n=150, size=96, seed=4)
    tiny = tiny_config(tmp_path, "encoder_kwargs: {width: 4}", "image_size: 32, cache_size: 96, batch_size: 8",
                       trainer="max_steps: 3\n  limit_train_batches: 3")
    pre = ["--config", str(REPO / "benchmarks/pretraining_baselines/configs/simclr_nih.yaml"), "--config", str(tiny), "--data.init_args.root", str(root)]
    fit = _cli("fit", *pre, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (artifact,) = (tmp_path / "runs").rglob("artifacts/encoder.pt")
    assert "encoder artifact written to" in fit.stdout and artifact.parent.parent.parent.name == "simclr_nih"
    # the pretraining's own test leaves a record too (a config without a WriteResult), never a board row
    test = _cli("test", *pre, "--ckpt_path", "last", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    (own,) = [p for p in (tmp_path / "runs").rglob("result.json")]
    pretraining = json.loads(own.read_text())
    assert pretraining["task"] == "nih-pretraining" and pretraining["family"] == "pretraining"
    assert "loss" not in pretraining["metrics"]  # a one-view test split gives no SimCLR pair: no test loss
    header = next(line for line in test.stdout.splitlines() if line.startswith("metric "))
    assert "test (n=" in header and "loc (n=" in header and "DataLoader" not in test.stdout, test.stdout[-2000:]
    assert 0.0 <= pretraining["metrics"]["online_auc/mean"] <= 1.0 and pretraining["checkpoint"]["sha256"]
    scored = pd.read_csv(own.parent / "predictions.csv")
    assert len(scored) > 0 and (scored["feature_norm"] > 0).all() and "online_prob/Abnormal" in scored
    probe = ["--config", str(REPO / "benchmarks/pretraining_baselines/configs/linear_nih14.yaml"), "--config", str(tiny),
             "--data.init_args.root", str(root), "--model.init_args.encoder_artifact", str(artifact)]
    fit = _cli("fit", *probe, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    test = _cli("test", *probe, "--ckpt_path", "last", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    (record,) = [r for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json"))
                 if r["family"] != "pretraining"]
    assert record["task"] == "nih14-linear" and record["recipe"]["config"]["model"]["init_args"]["encoder_artifact"] == "<artifact>"
    board = _cli("leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "results"), cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    assert "## nih14-linear" in (tmp_path / "results/leaderboard_auc.md").read_text()
    assert "pretraining" not in "".join(f.read_text() for f in (tmp_path / "results").glob("leaderboard_*.md"))


def test_the_thorax_box_regressor_test_writes_its_record_and_per_image_boxes(twin_factory, tmp_path):
    """A config that names no result writer (the STN paper's thorax detector): `cxrbench test` still
    keeps the numbers it printed, and each test image's box IoU."""
    root = twin_factory("lungs", n=40, size=96, seed=3)
    tiny = tiny_config(tmp_path, "image_size: 64", "image_size: 64, eval_size: 64, cache_size: 96, batch_size: 4",
                       logger="box")
    args = ["--config", str(REPO / "benchmarks/stn/configs/thorax_box_lungs.yaml"), "--config", str(tiny),
            "--data.init_args.root", str(root)]
    fit = _cli("fit", *args, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    test = _cli("test", *args, "--ckpt_path", "last", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    (own,) = (tmp_path / "runs").rglob("result.json")
    record = json.loads(own.read_text())
    assert record["task"] == "lungs-localization" and 0.0 <= record["metrics"]["box_iou/mean"] <= 1.0
    scored = pd.read_csv(own.parent / "predictions.csv")
    assert len(scored) == record["metrics"]["n_images"] and scored["box_iou"].between(0, 1).all()


def test_two_process_predict_writes_every_test_image_once(twin_factory, tmp_path):
    """``cxrbench predict`` on 2 CPU processes (DDP, gloo): rank 0 writes both processes' shares, the
    sampler's padding dropped — every test image once, as one process writes them."""
    root = twin_factory("nih", n=90, size=64)
    config = ["--config", str(REPO / "tests/configs/toy_nih8.yaml"), "--data.init_args.root", str(root),
              "--data.init_args.cache_dir", str(tmp_path / "cache"), "--trainer.max_epochs", "1",
              "--trainer.enable_progress_bar", "false"]
    env_cwd = dict(cwd=tmp_path)
    fit = subprocess.run([sys.executable, "-m", "cxrbench.cli", "fit", *config], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO / "tests") + ":" + str(REPO)}, **env_cwd)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (ckpt,) = list((tmp_path / "runs").rglob("last.ckpt"))
    outs = {}
    for devices in ("1", "2"):
        out = tmp_path / f"pred{devices}"
        args = ["predict", *config, "--ckpt_path", str(ckpt), "--trainer.devices", devices,
                "--trainer.callbacks+=cxrbench.callbacks.WritePredictions", f"--trainer.callbacks.out_dir={out}"]
        if devices == "2":
            args += ["--trainer.strategy", "ddp"]
        res = subprocess.run([sys.executable, "-m", "cxrbench.cli", *args], capture_output=True, text=True,
                             env={**__import__("os").environ, "PYTHONPATH": str(REPO / "tests") + ":" + str(REPO)},
                             **env_cwd)
        assert res.returncode == 0, res.stderr[-3000:]
        outs[devices] = pd.read_csv(out / "predictions.csv")
    from data_modules import NIH

    dm = NIH(root, protocol="rgt", label_set="nih8", transforms="plain", image_size=32, cache_size=64,
             cache_dir=str(tmp_path / "cache"))
    dm.setup()
    one, two = outs["1"], outs["2"]
    assert len(one) == len(dm.splits["test"]) and sorted(two["index"]) == sorted(one["index"])
    assert two["index"].is_unique
    probs = [c for c in one.columns if c.startswith("prob/")]
    merged = one.merge(two, on="index", suffixes=("", "_2"))
    assert all(abs(merged[c] - merged[f"{c}_2"]).max() < 1e-6 for c in probs)


def test_help_and_the_first_line_of_a_dry_run_import_no_torch():
    """`cxrbench --help` and `cxrbench bench SPEC`'s first line come before torch, Lightning and numpy are
    imported (issue 33: every command took 6–15 s to start); asserted on what is imported, not on time."""
    code = ("import sys\n"
            "from cxrbench.cli import build_parser\n"
            "import cxrbench.runner.bench, cxrbench.wandb_names, data_modules.twin, cxrbench.boards\n"
            "build_parser().format_help()\n"
            "heavy = sorted(m for m in ('torch', 'lightning', 'numpy', 'pandas', 'timm') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout, res.stdout


def test_the_helps_method_list_is_the_registry():
    from cxrbench.cli import registered_method_names
    from cxrbench.methods import METHODS

    ours = sorted(n for n, cls in METHODS.items() if cls.__module__.startswith("cxrbench."))  # not the tests' toys
    assert registered_method_names() == ours


def test_gpu_defaults_pin_memory_and_tune_cudnn_on_cuda_only(monkeypatch):
    """Issue 33: pinned batches and cuDNN's autotuner on a CUDA run unless the config says otherwise; a CPU
    run is left as it is (neither changes a number; neither is part of a recipe)."""
    import cxrbench.lightning_cli as lc
    from cxrbench.recipe import DATA_VOLATILE, TRAINER_VOLATILE

    assert "pin_memory" in DATA_VOLATILE and "benchmark" in TRAINER_VOLATILE
    for cuda, trainer, data, want in ((True, {"accelerator": "auto"}, {}, (True, True)),
                                      (True, {"accelerator": "gpu", "benchmark": False}, {"pin_memory": False}, (False, False)),
                                      (True, {"accelerator": "gpu", "deterministic": True}, {}, (None, True)),
                                      (False, {"accelerator": "auto"}, {}, (None, None))):
        monkeypatch.setattr(lc, "on_gpu", lambda accelerator, cuda=cuda: cuda)
        lc.gpu_defaults(trainer, data)
        assert (trainer.get("benchmark"), data.get("pin_memory")) == want, (cuda, trainer, data)


def test_a_short_datamodule_class_name_resolves():
    """`--data NIH` (a class name, as jsonargparse allows) still resolves with data_modules' lazy members."""
    from cxrbench.lightning_cli import build_cli

    with pytest.raises(SystemExit) as ended:  # --print_config ends after the config is resolved
        build_cli(["fit", "--data", "NIH", "--data.init_args.root", "x", "--model", "cxrbench.methods.AMM",
                   "--print_config"])
    assert ended.value.code in (0, None)
