"""Cardio-XAttentionNet (AMM): the head's algebra, learning on a cardiomegaly twin, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from cxrbench.methods import AMM, GAPBaseline
from cxrbench.models.amm_head import AMMHead, SameAvgPool2x2
from data_modules.transforms import to_float
from test_cli_runs import tiny_config


REPO = Path(__file__).resolve().parents[1]


def test_gwap_is_weighted_sum_over_weights_and_w_in_unit_interval():
    torch.manual_seed(0)
    head = AMMHead(in_channels=6, num_classes=2).eval()
    f = torch.randn(3, 6, 5, 4)
    w = head.weights(f)
    assert w.shape == (3, 2, 5, 4) and (w > 0).all() and (w < 1).all()
    a = head.bn(f)[:, None] * w[:, :, None]  # A = BN(F) ⊙ W_k, broadcast over channels
    expected = a.sum((-1, -2)) / w[:, :, None].sum((-1, -2))
    assert torch.allclose(head.gwap(f, w), expected, atol=1e-6)


def test_broadcast_conv_is_fixed_ones_and_never_trained():
    model = AMM(backbone="resnet10t", num_classes=1, class_names=["Cardiomegaly"], lr=0.1)
    conv = model.head.broadcast
    assert not any(p.requires_grad for p in conv.parameters())
    assert torch.equal(conv.weight, torch.ones_like(conv.weight))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert id(conv.weight) not in trainable
    opt = model.configure_optimizers()["optimizer"]
    x, y = torch.randn(4, 1, 64, 64), torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    model.loss(model(x), y).backward()
    opt.step()
    assert torch.equal(conv.weight, torch.ones_like(conv.weight))


def test_same_average_pool_matches_keras_same_padding():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    out = SameAvgPool2x2()(x)
    assert out.shape == x.shape
    assert out[0, 0, 0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4)
    assert out[0, 0, 2, 2] == pytest.approx(8.0)  # corner: only the valid cell
    assert out[0, 0, 0, 2] == pytest.approx((2 + 5) / 2)


def test_gap_baseline_has_no_heatmap_and_amm_maps_match_the_image():
    x = torch.randn(2, 1, 96, 96)
    gap = GAPBaseline(backbone="resnet10t", num_classes=1, class_names=["c"])
    amm = AMM(backbone="resnet10t", num_classes=3, class_names=list("abc"), task="multilabel")
    assert gap.heatmaps(x) is None and gap(x).shape == (2, 1)
    maps = amm.heatmaps(x)
    assert maps.shape == (2, 3, 96, 96) and amm(x).shape == (2, 3)
    # fully convolutional: a larger test image works with the same weights
    assert amm(torch.randn(1, 1, 160, 160)).shape == (1, 3)


@pytest.fixture(scope="module")
def cardiomegaly_twin(twin_factory):
    return twin_factory("nih", n=900, seed=2, size=128)  # the RGT learns test uses the same twin


def _pointing_and_overlap(model, dm):
    """W against chance on the box images: W's maximum in the heart box (pointing game) vs a random
    point, and W's box (the shared scorer's top box) vs the same box at random places."""
    from cxrbench.localization import heatmap_to_boxes
    from cxrbench.localization.chance import VersusChance

    model.eval()
    tally = VersusChance(model.class_names)
    with torch.no_grad():
        for batch in dm.dataloader("loc", shuffle=False):
            maps = model.heatmaps(to_float(batch["image"]))  # outside Lightning's loops: uint8 as loaded
            top = torch.stack([torch.as_tensor(heatmap_to_boxes(hm.numpy(), model.loc_threshold)[0, :4])
                               for hm in maps[:, 0]])[:, None]
            tally.update(maps, top, batch["boxes"], batch["box_labels"])
    return tally.summary()["Cardiomegaly"]


def test_amm_learns_cardiomegaly_and_reports_where_w_points(cardiomegaly_twin, tmp_path, learns):
    """Tiny AMM (resnet10t cut at its stride-16 stage: 8×8 W at 128 px, 24 epochs, ~2.5 CPU minutes)
    learns cardiomegaly; W's localization is measured and recorded, not asserted.

    Measured (``python tests/measure_learns.py --tests amm``; seeds 0/1/2) test AUC 0.921 / 0.958 / 0.828
    on the default kernels and 0.806 / 0.924 / 0.835 with ``ATEN_CPU_CAPABILITY=avx2``; the bound 0.75 is
    below the worst of the six. A detached loss (``CXRBENCH_LEARNS_BROKEN=detach``) fails it: AUC 0.705 on
    seed 0 — not 0.5, since random resnet10t features with adapted BatchNorm statistics already rank the
    twin's enlarged hearts, which is why the bound is not lower.

    W's maximum lands in the heart box (pointing game, chance 0.18) for 0.78 / 0.88 / 0.54 of the box
    images on the default kernels but 0.74 / 0.60 / 0.20 with avx2 kernels, and W's box beats same-size
    random boxes by 0.005–0.03 IoU at best (0.225 vs 0.216 … 0.289 vs 0.256): the localization this
    test used to assert (pointing > 2 × chance + 0.1) is one trajectory, not a property of the method at
    this scale. 40 epochs, lr 0.003 or a clearer twin (difficulty 0.3) did not make it hold on the failing
    seed (pointing 0.18–0.50). Whether W localizes is a scale question (issue 32); this test keeps the
    numbers (``learns.record``) so that its table in tests/README.md shows them.
    """
    from data_modules import NIH

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # see conftest: no thread fights between the two xdist workers
    L.seed_everything(learns.seed)
    dm = NIH(cardiomegaly_twin, protocol="amm", label_set="cardiomegaly", transforms="plain", image_size=128,
             eval_size=128, cache_size=128, cache_dir=str(tmp_path / "c"), batch_size=32, val_share=0.15)
    model = AMM(backbone="resnet10t", backbone_stage=-2, lr=0.01, num_classes=1, class_names=["Cardiomegaly"],
                threshold="val_youden")
    trainer = L.Trainer(max_epochs=24, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                        callbacks=learns.callbacks())
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    m = model.test_metrics
    r = _pointing_and_overlap(model, dm)
    learns.record(auc=m["auc/mean"], pointing=r["pointing"], pointing_chance=r["pointing_chance"], iou=r["iou"],
                  random_iou=r["random_iou"], energy=r["energy"])
    print(f"AUC {m['auc/mean']:.3f}; pointing {r['pointing']:.2f} (chance {r['pointing_chance']:.2f}); W box IoU "
          f"{r['iou']:.3f} (random boxes {r['random_iou']:.3f}); W mass in the box {r['energy']:.2f}; n={r['n']}")
    assert m["auc/mean"] > AMM_AUC, m  # the twin keeps even a good reader well below 1.0
    assert m["loc/n_pairs"] >= 20 and all(0 <= m[f"iou_acc@{t}/mean"] <= 1 for t in (0.1, 0.3, 0.5))
    assert r["n"] >= 20 and 0 <= r["pointing"] <= 1 and 0 < r["energy"] < 1


AMM_AUC = 0.75  # below the worst of 3 seeds × 2 kernel families (0.806)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "cxrbench.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_fit_then_test_writes_a_result_the_leaderboard_reads(twin_factory, tmp_path):
    root = twin_factory("nih", n=150, size=96, seed=4)
    tiny = tiny_config(tmp_path, "backbone: resnet10t", "image_size: 64, eval_size: 96, cache_size: 96, batch_size: 8")
    config = str(REPO / "benchmarks/amm/configs/amm_cardiomegaly.yaml")
    common = ["--config", config, "--config", str(tiny), "--data.init_args.root", str(root)]
    fit = _cli("fit", *common, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    # the README's command, in a fresh process: `best` is read from the last checkpoint's record
    test = _cli("test", *common, "--ckpt_path", "best", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "args parameter" not in test.stderr
    result = json.loads(next((tmp_path / "runs").rglob("result.json")).read_text())
    assert result["method"] == "amm" and result["task"] == "nih-cardiomegaly"
    assert result["provenance"]["data"] == "twin" and result["provenance"]["commit"]
    assert 0 <= result["metrics"]["auc/mean"] <= 1 and "iou_acc@0.1/mean" in result["metrics"]
    board = _cli("leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "results"), cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    assert "| amm |" in (tmp_path / "results/leaderboard_auc.md").read_text()
    # predict with the registry name: probabilities per test image and AMM's W maps
    pred = _cli("predict", *common, "--model", "amm", "--model.init_args.backbone", "resnet10t", "--ckpt_path", "last",
                cwd=tmp_path)
    assert pred.returncode == 0, pred.stderr[-3000:]
    table = next(p for p in (tmp_path / "runs").rglob("predictions.csv") if (p.parent / "heatmap.npy").exists())
    import numpy as np
    import pandas as pd

    rows = pd.read_csv(table)
    maps = np.load(table.parent / "heatmap.npy")
    assert len(rows) == len(maps) and "prob/Cardiomegaly" in rows and rows["prob/Cardiomegaly"].between(0, 1).all()
    assert maps.shape[1:] == (1, 96, 96)


def test_config_typo_is_a_parser_error_not_a_traceback(tmp_path):
    res = _cli("fit", "--config", str(REPO / "benchmarks/amm/configs/amm_cardiomegaly.yaml"),
               "--model.init_args.backbon", "resnet18", cwd=tmp_path)
    assert res.returncode != 0
    assert "backbon" in res.stderr and "Traceback" not in res.stderr
