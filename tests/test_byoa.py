"""BYOA (RGT §III-B) on synthetic attention maps with known peaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cxrbench.components import label_regions, propagate_regions
from cxrbench.models.byoa import ClassBoxPrior, byoa_boxes


def _prior(k=1, size=(0.25, 0.25), center=(0.5, 0.5)):
    return ClassBoxPrior([f"c{i}" for i in range(k)], torch.tensor([center] * k), torch.tensor([size] * k))


def _peak(h, w, cy, cx, sigma):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))


def test_box_of_the_class_size_is_centred_on_the_attention_peak():
    att = torch.stack([_peak(64, 64, 20, 44, 3), _peak(64, 64, 44, 20, 3)])[None]  # [1, 2, 64, 64]
    boxes, fallback = byoa_boxes(att, _prior(2, size=(0.25, 0.125)), with_fallback=True)
    assert not fallback.any()
    for (cy, cx), box in zip([(20, 44), (44, 20)], boxes[0]):
        x0, y0, x1, y1 = box.tolist()
        assert abs((x0 + x1) / 2 - (cx + 0.5)) <= 1 and abs((y0 + y1) / 2 - (cy + 0.5)) <= 1
    assert boxes[0, 0, 2] - boxes[0, 0, 0] == pytest.approx(16) and boxes[0, 0, 3] - boxes[0, 0, 1] == pytest.approx(8)


def test_the_largest_qualifying_component_wins():
    att = (_peak(80, 80, 20, 20, 6) + 0.99 * _peak(80, 80, 60, 60, 3))[None, None]
    box = byoa_boxes(att, _prior(1, size=(0.1, 0.1)))[0, 0]
    assert abs(float(box[0] + box[2]) / 2 - 20.5) <= 1.5 and abs(float(box[1] + box[3]) / 2 - 20.5) <= 1.5


def test_a_centre_outside_the_top_pixels_falls_back_to_the_class_mean_box():
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    r = torch.sqrt((ys - 32) ** 2 + (xs - 32) ** 2)
    ring = torch.exp(-((r - 24) ** 2) / 8)[None, None]  # the centre of mass of a ring is its empty middle
    prior = _prior(1, size=(0.2, 0.3), center=(0.25, 0.75))
    boxes, fallback = byoa_boxes(ring, prior, dilations=0, with_fallback=True)
    assert torch.allclose(boxes[0, 0], torch.tensor([16 - 6.4, 48 - 9.6, 16 + 6.4, 48 + 9.6]), atol=1e-4)
    assert fallback.tolist() == [[True]]


def test_components_match_scipy_4_connectivity():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 30, 40)) < 0.45
    zeros = torch.zeros(masks.shape, dtype=torch.uint8)
    labels = label_regions(zeros, torch.from_numpy(masks), 4).numpy()  # scipy on the CPU
    propagated = propagate_regions(zeros, torch.from_numpy(masks), 4).numpy()  # the GPU path, run here on the CPU
    assert np.array_equal(labels, propagated)
    for m, lab in zip(masks, labels):
        ref, n = ndimage.label(m)  # scipy's default: 4-connected
        assert len(np.unique(lab[m])) == n
        for k in range(1, n + 1):
            assert len(np.unique(lab[ref == k])) == 1


def test_bad_settings_are_refused():
    att = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"T must be in \(0, 1\)"):
        byoa_boxes(att, _prior(), top=1.5)
    with pytest.raises(ValueError, match="2 classes in the box prior"):
        byoa_boxes(att, _prior(2))
    bad = att.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        byoa_boxes(bad, _prior())


def test_prior_comes_from_the_box_file(twin_factory):
    from data_modules import NIH

    dm = NIH(twin_factory("nih", n=300, size=128), protocol="rgt", label_set="nih8", cache=False)
    index = dm.prepare_index()
    prior = ClassBoxPrior.from_index(index)
    b = index.boxes[index.boxes["label"] == "Cardiomegaly"]
    assert prior.size[1, 0] == pytest.approx(((b["x1"] - b["x0"]) / 128).mean())
    assert prior.center[1, 1] == pytest.approx((((b["y0"] + b["y1"]) / 2) / 128).mean())
    # the prior as read (float64) drives BYOA directly (it used to fail on the dtype)
    att = torch.stack([_peak(32, 32, 16, 13, 2)] * 8)[None]
    boxes = byoa_boxes(att, prior)
    assert boxes.dtype == torch.float32 and ((boxes[0, :, 0] + boxes[0, :, 2]) / 2 - 13.5).abs().max() <= 1
    dm14 = NIH(twin_factory("nih", n=300, size=128), protocol="rgt", label_set="nih14", cache=False)
    with pytest.raises(ValueError, match=r"no box in the training data for class\(es\) \['Consolidation'"):
        ClassBoxPrior.from_index(dm14.prepare_index())


def test_the_gpu_labelling_crosses_long_regions_in_a_few_passes_each_one_host_sync(monkeypatch):
    """A serpentine (one region 64 rows long, ~2,000 pixels of path) and BYOA-like grown blobs: the
    propagation takes whole row and column runs per pass, so it converges in a handful of passes (each
    ends in one host sync, its convergence check): measured 6 and 4 passes, where the one-pixel-per-pass
    propagation it replaced took 34 and 26 here (and 86 on BYOA's 224² maps of 16 images × 8 classes).
    Labels equal the CPU path's."""
    import cxrbench.components as components

    checks = []
    real_equal = torch.equal
    monkeypatch.setattr(components.torch, "equal", lambda a, b: checks.append(1) or real_equal(a, b))
    snake = torch.zeros(1, 64, 32, dtype=torch.bool)
    snake[0, ::2, 1:31] = True  # rows joined at alternating ends
    snake[0, 1::4, 30] = True
    snake[0, 3::4, 1] = True
    snake[0, 63] = False
    blobs = torch.nn.functional.interpolate(torch.rand(4, 1, 14, 14, generator=torch.Generator().manual_seed(0)),
                                            size=112, mode="bilinear")[:, 0] > 0.6
    for mask in (snake, blobs):
        zeros = torch.zeros(mask.shape, dtype=torch.uint8)
        checks.clear()
        labels = propagate_regions(zeros, mask, 4)
        assert len(checks) <= 8, len(checks)
        assert torch.equal(labels, label_regions(zeros, mask, 4))
    assert len(torch.unique(propagate_regions(torch.zeros_like(snake, dtype=torch.uint8), snake, 4)[snake])) == 1


def test_equal_value_regions_8_connected_on_both_paths():
    """The GLSZM case: regions of equal gray level, 8-connected, maps of the stack never merge."""
    rng = np.random.default_rng(1)
    values = torch.from_numpy(rng.integers(1, 4, (5, 20, 24)))
    mask = torch.from_numpy(rng.random((5, 20, 24)) < 0.8)
    labels = label_regions(values, mask, 8)
    assert torch.equal(labels, propagate_regions(values, mask, 8))
    structure = ndimage.generate_binary_structure(2, 2)
    for v, m, lab in zip(values.numpy(), mask.numpy(), labels.numpy()):
        expected = sum(ndimage.label(m & (v == g), structure=structure)[1] for g in np.unique(v[m]))
        assert len(np.unique(lab[m])) == expected


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float32])
def test_cc3d_labels_equal_the_propagation_for_every_value_type(dtype):
    # The CPU labelling (cc3d) recodes values to 1..V and stacks maps with an empty row between them
    # unless their last row is already empty; both must give the GPU path's regions.
    rng = np.random.default_rng(3)
    for empty_last_row in (False, True):
        high = 2 if dtype == torch.bool else 256 if dtype == torch.uint8 else 3
        values = torch.from_numpy(rng.integers(0, high, (5, 13, 11))).to(dtype)
        mask = torch.from_numpy(rng.uniform(size=(5, 13, 11)) > 0.3)
        if empty_last_row:
            mask[:, -1] = False
        for connectivity in (4, 8):
            assert torch.equal(label_regions(values, mask, connectivity), propagate_regions(values, mask, connectivity))
