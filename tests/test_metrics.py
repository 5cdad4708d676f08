"""Metrics against independent references and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, classification_report, roc_auc_score

from cxrbench.metrics import (MetricInputError, SampleStore, auc, bootstrap_ci, check_probabilities,
                              SegmentationMetric, confusion_rates, dice_iou, hd95, pr_auc, segmentation_scores,
                              threshold_at_recall, weighted_report)


def test_auc_and_pr_auc_match_sklearn_with_nan_labels():
    rng = np.random.default_rng(0)
    n, c = 400, 5
    target = (rng.random((n, c)) < [0.1, 0.3, 0.5, 0.05, 0.7]).astype(float)
    preds = np.clip(target * 0.3 + rng.random((n, c)) * 0.8, 0, 1)
    target[rng.random((n, c)) < 0.2] = np.nan  # unknown labels (U-Ignore)
    target[:, 4] = np.where(np.isnan(target[:, 4]), np.nan, 1.0)  # one label value only
    got, got_pr = auc(preds, target), pr_auc(preds, target)
    for k in range(4):
        known = ~np.isnan(target[:, k])
        assert got["per_class"][str(k)] == pytest.approx(roc_auc_score(target[known, k], preds[known, k]), abs=1e-6)
        assert got_pr["per_class"][str(k)] == pytest.approx(
            average_precision_score(target[known, k], preds[known, k]), abs=1e-6)
    assert math.isnan(got["per_class"]["4"]) and got["excluded"] == ["4"]
    assert got["mean"] == pytest.approx(np.mean([got["per_class"][str(k)] for k in range(4)]))


def test_operating_point_at_recall_chosen_on_val_applied_on_test():
    rng = np.random.default_rng(1)
    y_val = (rng.random(500) < 0.3).astype(float)
    p_val = np.clip(y_val * 0.4 + rng.random(500) * 0.6, 0, 1)
    thr = threshold_at_recall(p_val, y_val, 0.95)
    val = confusion_rates(p_val, y_val, thr)
    assert val["recall"] >= 0.95
    above = p_val[y_val == 1][p_val[y_val == 1] > thr]
    assert len(above) / (y_val == 1).sum() < 0.95  # a higher threshold would miss the target
    y_test = (rng.random(300) < 0.3).astype(float)
    p_test = np.clip(y_test * 0.4 + rng.random(300) * 0.6, 0, 1)
    test = confusion_rates(p_test, y_test, thr)
    assert test["tp"] + test["fp"] + test["tn"] + test["fn"] == 300
    assert test["tpr"] + test["fnr"] == pytest.approx(1) and test["fpr"] + test["tnr"] == pytest.approx(1)


def test_weighted_report_matches_sklearn():
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.2).astype(float)
    p = np.clip(y * 0.5 + rng.random(300) * 0.6, 0, 1)
    got = weighted_report(p, y, 0.5)
    ref = classification_report(y, p >= 0.5, output_dict=True)
    for k, name in (("0.0", "negative"), ("1.0", "positive")):
        for m in ("precision", "recall"):
            assert got["per_class"][name][m] == pytest.approx(ref[k][m])
        assert got["per_class"][name]["f1"] == pytest.approx(ref[k]["f1-score"])
    assert got["weighted"]["f1"] == pytest.approx(ref["weighted avg"]["f1-score"])
    assert got["accuracy"] == pytest.approx(ref["accuracy"])


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_data():
    rng = np.random.default_rng(3)

    def data(n):
        y = (rng.random(n) < 0.4).astype(float)
        return np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1), y

    f = lambda p, t: auc(p, t)["mean"]  # noqa: E731
    p, y = data(200)
    lo, hi = bootstrap_ci(f, p, y, n=200)
    assert lo < f(p, y) < hi
    p2, y2 = data(2000)
    lo2, hi2 = bootstrap_ci(f, p2, y2, n=200)
    assert hi2 - lo2 < (hi - lo) * 0.6


def test_dice_iou_hd95_hand_computed_cases():
    z = torch.zeros(16, 16, dtype=torch.bool)
    a, b, far = z.clone(), z.clone(), z.clone()
    a[2:6, 2:6] = True            # 16 px
    b[4:8, 2:6] = True            # 16 px, 8 overlap
    far[12:14, 12:14] = True
    pred = torch.stack([z, a, z, a, a])
    gt = torch.stack([z, z, a, b, far])
    r = dice_iou(pred, gt)
    assert r["dice"].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.5, 0.0])
    assert r["iou"].tolist() == pytest.approx([1.0, 0.0, 0.0, 8 / 24, 0.0])
    h = hd95(pred, gt)
    diag = math.hypot(16, 16)
    assert h[0] == 0 and h[1] == pytest.approx(diag) and h[2] == pytest.approx(diag)  # missed: counted, not dropped
    assert h[3] == pytest.approx(2.0)  # b is a shifted down by 2 rows
    s = segmentation_scores(pred, gt)
    assert s["dice"] == pytest.approx(np.mean([1, 0, 0, 0.5, 0]))
    assert s["dice_pos"] == pytest.approx(np.mean([0, 0.5, 0]))
    assert s["empty_correct"] == pytest.approx(0.5) and s["hd95_missed"] == 2
    single = torch.zeros(1, 20, 20, dtype=torch.bool)
    p1, g1 = single.clone(), single.clone()
    p1[0, 3, 3], g1[0, 3, 10] = True, True
    assert float(hd95(p1, g1)[0]) == pytest.approx(7.0)
    # in pixels of the original image: a mask pixel is 4 rows × 2 columns of a 64 × 32 file
    assert float(hd95(p1, g1, spacing=[[4.0, 2.0]])[0]) == pytest.approx(14.0)  # a column shift of 7
    h = hd95(pred, gt, spacing=torch.tensor([[4.0, 2.0]] * 5))
    assert h[3] == pytest.approx(8.0) and h[1] == pytest.approx(math.hypot(64, 32))  # the file's diagonal
    store = SegmentationMetric()
    store.update(torch.arange(5), pred, gt, spacing=torch.tensor([[4.0, 2.0]] * 5))
    got = store.compute()  # both units: the file's pixels (headline) and the model input's (papers at input size)
    assert got["hd95"] == pytest.approx(float(h.mean())) and got["hd95_input"] == pytest.approx(float(hd95(pred, gt).mean()))


def test_segmentation_batches_carry_the_original_size_and_hd95_is_read_in_its_pixels(twin_factory, tmp_path):
    """HD95 used to be in pixels of the model input (a 64 px run's HD95 beside a 1024 px paper number)."""
    from cxrbench.methods.segmentation import original_pixels
    from data_modules import Lungs

    root = twin_factory("lungs", n=40, size=96, seed=3)
    dm = Lungs(root, image_size=48, eval_size=48, cache_size=96, batch_size=4, num_workers=0,
               cache_dir=str(tmp_path / "c"))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    from PIL import Image

    files = dm.index.meta["path"].iloc[batch["index"].numpy()]
    assert batch["orig_size"].tolist() == [list(Image.open(f).size[::-1]) for f in files]  # (H, W) of each file
    assert torch.equal(original_pixels(batch, batch["mask"]), batch["orig_size"].double() / 48)


def test_hd95_in_mm_only_where_every_image_has_a_pixel_size():
    pred, gt = torch.zeros(2, 20, 20, dtype=torch.bool), torch.zeros(2, 20, 20, dtype=torch.bool)
    pred[:, 3, 3], gt[:, 3, 10] = True, True  # a column shift of 7 mask pixels in both images
    store = SegmentationMetric()
    store.update(torch.arange(2), pred, gt, pixel_mm=torch.tensor([[0.5, 0.25], [0.5, 0.25]], dtype=torch.float64))
    assert store.compute()["hd95_mm"] == pytest.approx(7 * 0.25)
    mixed = SegmentationMetric()  # one image without a pixel size: no mean over the other alone
    mixed.update(torch.arange(2), pred, gt, pixel_mm=torch.tensor([[0.5, 0.25], [math.nan, math.nan]], dtype=torch.float64))
    assert "hd95_mm" not in mixed.compute() and mixed.per_image()["hd95_mm"][0] == pytest.approx(1.75)
    off = SegmentationMetric(with_hd95=False)
    off.update(torch.arange(2), pred, gt, pixel_mm=torch.full((2, 2), 0.5, dtype=torch.float64))
    assert "hd95_mm" not in off.compute()


def test_segmentation_batches_carry_the_pixel_size_in_mm_from_the_dicom_header_or_the_release(twin_factory, tmp_path):
    from data_modules import SIIM, Lungs
    from data_modules.io import dicom_pixel_spacing
    from data_modules.lungs import FIELD_MM

    root = twin_factory("siim", n=24, size=64, seed=1)
    dm = SIIM(root, image_size=32, eval_size=32, cache_size=64, batch_size=4, num_workers=0, cache_dir=str(tmp_path / "s"))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    files = dm.index.meta["path"].iloc[batch["index"].numpy()]
    assert [dicom_pixel_spacing(f) for f in files] == [(0.168, 0.168)] * len(files)  # the twin writes the tag
    assert torch.equal(batch["pixel_mm"], torch.full((len(files), 2), 0.168, dtype=torch.float32))
    root = twin_factory("lungs", n=40, size=96, seed=3)
    dm = Lungs(root, image_size=48, eval_size=48, cache_size=96, batch_size=40, num_workers=0, cache_dir=str(tmp_path / "l"))
    dm.setup("fit"), dm.setup("test")
    test, val = next(iter(dm.test_dataloader())), next(iter(dm.val_dataloader()))  # Montgomery, Shenzhen
    assert np.isnan(val["pixel_mm"].numpy()).all()  # Shenzhen's release gives no pixel size
    side = test["orig_size"].max(1).values.double()
    assert torch.allclose(test["pixel_mm"].double(), (FIELD_MM["montgomery"] / side)[:, None].expand(-1, 2))


def test_bad_metric_input_is_refused():
    with pytest.raises(MetricInputError, match="differ in shape"):
        auc(np.zeros((4, 2)), np.zeros((5, 2)))
    with pytest.raises(MetricInputError, match=r"must lie in \[0, 1\]"):
        check_probabilities(torch.tensor([0.2, 1.7]))
    with pytest.raises(ValueError, match="differ in shape"):
        dice_iou(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))
    store = SampleStore(("preds",))
    with pytest.raises(ValueError, match="same length"):
        store.update(torch.arange(3), preds=torch.zeros(4))


def test_store_drops_padding_duplicates_and_sorts_by_index():
    store = SampleStore(("preds", "target"))
    store.update(torch.tensor([5, 1, 3]), preds=torch.tensor([0.5, 0.1, 0.3]), target=torch.tensor([1.0, 0.0, 1.0]))
    store.update(torch.tensor([0, 5]), preds=torch.tensor([0.0, 0.9]), target=torch.tensor([0.0, 0.0]))  # 5 repeated
    out = store.compute()
    assert out["index"].tolist() == [0, 1, 3, 5]
    assert out["preds"].tolist() == pytest.approx([0.0, 0.1, 0.3, 0.5])  # first occurrence kept


def _threshold_at_recall_by_hand(p, t, recall):
    """The hand-written selection threshold_at_recall had before it called torchmetrics: the
    ceil(recall · n_pos)-th highest positive score."""
    pos = torch.sort(torch.as_tensor(p, dtype=torch.float64)[torch.as_tensor(t) == 1], descending=True).values
    return float(pos[max(1, math.ceil(recall * len(pos) - 1e-9)) - 1])


def test_threshold_at_recall_through_torchmetrics_equals_the_hand_written_selection_with_ties():
    g = torch.Generator().manual_seed(0)
    compared = 0
    for trial in range(600):
        n = int(torch.randint(2, 400, (1,), generator=g))
        if trial % 2:  # few distinct scores: ties within positives, and between positives and negatives
            levels = int(torch.randint(2, 12, (1,), generator=g))
            p = torch.randint(0, levels, (n,), generator=g).double() / (levels - 1)
        else:
            p = torch.rand(n, generator=g, dtype=torch.float64)
        t = (torch.rand(n, generator=g) < 0.05 + 0.9 * torch.rand(1, generator=g)).double()
        t[torch.rand(n, generator=g) < 0.1] = math.nan  # unknown labels are left out
        if not (t == 1).any():
            continue
        for r in (0.95, 0.9, 0.8, 0.5, 1.0, 1 / 3, 0.99):
            assert threshold_at_recall(p, t, r) == _threshold_at_recall_by_hand(p, t, r), (trial, r)
            compared += 1
    assert compared > 3000
    # n_pos · recall an integer (19 of 20 at 95%): recall exactly at the target, no float slack either way
    p, t = torch.linspace(0, 1, 30, dtype=torch.float64), torch.zeros(30)
    t[5:25] = 1
    thr = threshold_at_recall(p, t, 0.95)
    assert thr == float(p[6]) and int((p[t == 1] >= thr).sum()) == 19


def test_threshold_at_recall_edge_cases_are_the_wrappers():
    only_pos = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    assert threshold_at_recall(only_pos, torch.ones(3), 0.95) == 0.2  # no negatives: still defined
    with pytest.raises(MetricInputError, match="no positive sample"):
        threshold_at_recall(only_pos, torch.tensor([0.0, math.nan, 0.0]), 0.95)
    with pytest.raises(MetricInputError, match=r"must lie in \[0, 1\]"):  # logits would be sigmoided by torchmetrics
        threshold_at_recall(torch.tensor([-1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 1.0]), 0.5)
    with pytest.raises(MetricInputError, match=r"recall must lie in \(0, 1\]"):
        threshold_at_recall(only_pos, torch.ones(3), 0.0)


def test_dice_iou_through_monai_equals_the_formula_bit_for_bit_with_empty_masks():
    g = torch.Generator().manual_seed(0)
    for shape, density in (((40, 17, 23), 0.3), ((30, 1, 32, 32), 0.02), ((12, 64, 64), 0.6)):
        pred = torch.rand(shape, generator=g) < density
        gt = torch.rand(shape, generator=g) < density
        pred[:3], gt[:2] = False, False  # both empty, prediction-only, truth-only among them
        gt[5], pred[6] = False, False
        got = dice_iou(pred, gt)
        p, t = pred.flatten(1), gt.flatten(1)
        inter, ps, ts = (p & t).sum(1).double(), p.sum(1).double(), t.sum(1).double()
        both_empty = (ps + ts) == 0
        dice = torch.where(both_empty, 1.0, 2 * inter / (ps + ts).clamp_min(1))
        iou = torch.where(both_empty, 1.0, inter / (ps + ts - inter).clamp_min(1))
        assert got["dice"].dtype == got["iou"].dtype == torch.float64
        assert torch.equal(got["dice"], dice) and torch.equal(got["iou"], iou)
        assert torch.equal(got["target_empty"], ts == 0) and torch.equal(got["pred_empty"], ps == 0)
        assert got["dice"][0] == 1 and got["dice"][2] == 0 and got["dice"][5] in (0.0, 1.0)
    all_empty = dice_iou(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    assert all_empty["dice"].dtype == torch.float64 and all_empty["dice"].tolist() == [1.0, 1.0, 1.0]
    assert dice_iou(torch.zeros(0, 8, 8), torch.zeros(0, 8, 8))["dice"].numel() == 0
