"""Heatmaps -> boxes and IoU-accuracy on synthetic cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrbench.localization import THRESHOLDS, best_iou_per_class, box_iou, heatmap_to_boxes, iou_accuracy


def _heat(box, shape=(64, 64)):
    h = np.zeros(shape)
    x0, y0, x1, y1 = box
    h[y0:y1, x0:x1] = 1.0
    return h


def test_heatmap_components_become_boxes_highest_first():
    h = _heat((5, 5, 15, 20)) * 0.7 + _heat((30, 40, 50, 44))
    boxes = heatmap_to_boxes(h, threshold=0.5)
    assert boxes[:, :4].tolist() == [[30, 40, 50, 44], [5, 5, 15, 20]]
    assert boxes[0, 4] == 1.0 and boxes[1, 4] == pytest.approx(0.7)
    assert len(heatmap_to_boxes(np.zeros((8, 8)))) == 0  # a flat map has no component


def test_perfect_heatmap_is_localized_at_every_threshold_and_far_away_never():
    gt = torch.tensor([[10.0, 12.0, 30.0, 40.0]])
    perfect = heatmap_to_boxes(_heat((10, 12, 30, 40)))
    far = heatmap_to_boxes(_heat((45, 45, 60, 60)))
    # a box shifted so that IoU = 0.5 exactly: localized for T < 0.5 only ("up to the box overlap")
    half = torch.tensor([[10.0 + 20 / 3, 12.0, 30.0 + 20 / 3, 40.0]])
    ious = {
        "perfect": best_iou_per_class(gt, [0], {0: torch.as_tensor(perfect)})[0],
        "far": best_iou_per_class(gt, [0], {0: torch.as_tensor(far)})[0],
        "half": best_iou_per_class(gt, [0], {0: half})[0],
    }
    assert ious["perfect"] == pytest.approx(1.0) and ious["far"] == 0.0 and ious["half"] == pytest.approx(0.5)
    acc = iou_accuracy(np.zeros(3, int), np.array([ious["perfect"], ious["far"], ious["half"]]), ["Mass"])
    for t in THRESHOLDS:
        expected = (1 + (0.5 > t)) / 3
        assert acc[t]["per_class"]["Mass"] == pytest.approx(expected), t


def test_classes_without_box_images_are_left_out_of_the_mean():
    acc = iou_accuracy(np.array([0, 0, 2]), np.array([0.9, 0.0, 0.4]), ["A", "B", "C"])
    assert np.isnan(acc[0.1]["per_class"]["B"])
    assert acc[0.3]["mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert acc[0.5]["mean"] == pytest.approx((0.5 + 0.0) / 2)


def test_prediction_of_another_class_does_not_count():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert best_iou_per_class(gt, [1], {0: gt.clone()}) == {1: 0.0}


def test_negative_size_boxes_are_refused():
    with pytest.raises(ValueError, match="negative width or height"):
        box_iou(torch.tensor([[10.0, 0, 5, 5]]), torch.tensor([[0.0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="threshold must be in"):
        heatmap_to_boxes(np.ones((4, 4)), threshold=2)


def test_chance_levels_of_a_peak_and_of_a_box():
    from cxrbench.localization.chance import peak_in_boxes, random_box_ious

    hm = torch.zeros(32, 64)
    hm[10, 40] = 1.0
    truth = torch.tensor([[32.0, 8.0, 48.0, 16.0], [36.0, 12.0, 44.0, 20.0]])  # overlapping boxes
    hit, share = peak_in_boxes(hm, truth)
    assert hit and share == pytest.approx((16 * 8 + 8 * 8 - 8 * 4) / (32 * 64))  # the union: overlap counted once
    assert not peak_in_boxes(hm, torch.tensor([[0.0, 0.0, 8.0, 8.0]]))[0]
    rng = np.random.default_rng(0)
    whole = torch.tensor([0.0, 0.0, 64.0, 32.0])
    assert random_box_ious(whole, whole[None], 32, 64, rng) == pytest.approx([1.0] * 20)  # nowhere else to go
    small = torch.tensor([0.0, 0.0, 8.0, 8.0])
    ious = random_box_ious(small, small[None], 32, 64, rng, k=2000)
    assert 0 < np.mean(ious) < 0.05  # an 8×8 box rarely meets another 8×8 box in 32×64


def test_versus_chance_tallies_per_class_and_skips_classes_without_boxes():
    from cxrbench.localization.chance import VersusChance

    maps = torch.zeros(2, 2, 32, 32)
    maps[:, 0, 12, 12] = 1.0  # class a: peak inside its box
    truth = [torch.tensor([[8.0, 8.0, 16.0, 16.0]]), torch.tensor([[8.0, 8.0, 16.0, 16.0]])]
    labels = [torch.tensor([0]), torch.tensor([0])]
    boxes = torch.tensor([[8.0, 8.0, 16.0, 16.0], [0.0, 0.0, 4.0, 4.0]]).expand(2, 2, 4)
    tally = VersusChance(["a", "b"])
    tally.update(maps, boxes, truth, labels, fallback=torch.tensor([[True, False], [False, False]]))
    s = tally.summary()
    assert list(s) == ["a"] and s["a"]["n"] == 2 and s["a"]["fallback"] == 0.5
    assert s["a"]["iou"] == 1.0 and s["a"]["pointing"] == 1.0 and s["a"]["pointing_chance"] == 64 / 1024
    assert s["a"]["random_iou"] < 0.2


def test_loc_reports_the_boxes_each_map_offers_beside_iou_accuracy():
    """A map cut into many blobs must not look better than it is: boxes per (image, class) are reported."""
    import warnings

    from cxrbench.methods.classification import ClassificationMethod

    class TwoBlobs(ClassificationMethod):
        def forward(self, images):
            return torch.zeros(len(images), self.num_classes)

        def heatmaps(self, images):
            maps = torch.zeros(len(images), self.num_classes, 64, 64)
            maps[:, :, 10:20, 10:20] = 1.0  # on the true box
            maps[:, :, 40:50, 40:60] = 0.9  # and a decoy
            return maps

    m = TwoBlobs(num_classes=2, class_names=["a", "b"], task="multilabel")
    batch = {"image": torch.zeros(3, 1, 64, 64), "index": torch.tensor([5, 6, 7]),
             "boxes": [torch.tensor([[10.0, 10, 20, 20]])] * 2 + [torch.tensor([[10.0, 10, 20, 20], [0, 0, 5, 5]])],
             "box_labels": [torch.tensor([0]), torch.tensor([1]), torch.tensor([0, 1])]}
    m._localize(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.on_test_epoch_end()
    got = m.test_metrics
    assert got["loc/n_pairs"] == 4 and got["loc/boxes_per_image"] == 2 and got["loc/boxes_per_image_max"] == 2
    assert got["iou_acc@0.5/a"] == 1.0 and got["iou_acc@0.5/b"] == 0.5  # image 7's b box is not under a blob
