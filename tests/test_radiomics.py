"""The torch radiomics engine against PyRadiomics 3.0.1, feature by feature (rtol 1e-6 / atol 1e-9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cxrbench.radiomics import FEATURE_NAMES, NOT_IN_ENGINE, RadiomicsInputError, extract

try:  # the parity reference: missing, these tests fail (a skipped parity suite would pass silently)
    import radiomics  # noqa: F401
except ImportError as err:
    raise ImportError("tests/test_radiomics.py needs PyRadiomics 3.0.1, the engine's parity reference: "
                      "`make install` builds it (pyradiomics==3.0.1 without build isolation)") from err
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # PyRadiomics' own nanmean warnings

COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def _rois(n: int, seed: int):
    """Twin radiographs and smooth random fields; boxes and blobs of varied size, position, gray range."""
    from data_modules.twin.render import ImageJob, render

    rng = np.random.default_rng(seed)
    H = W = 96
    images, masks = [], []
    twins = [render(ImageJob("", H, W, [f], anatomy_seed=(k,), image_seed=(k,)))[0].astype(np.float64)
             for k, f in enumerate(["Nodule", "Effusion", "Mass", "Pneumothorax", "Infiltration", "Cardiomegaly"])]
    for k in range(n):
        if k % 2 == 0:
            img = twins[k % len(twins)]
        else:
            f = ndimage.gaussian_filter(rng.standard_normal((H, W)), rng.uniform(0.7, 5))
            lo, span = rng.uniform(0, 120), rng.uniform(10, 255)
            img = np.round(np.clip((f - f.min()) / (np.ptp(f) + 1e-9) * span + lo, 0, 255))
        m = np.zeros((H, W), bool)
        if k % 3 != 2:
            h, w = rng.integers(2, 60, 2)
            y, x = rng.integers(0, H - h), rng.integers(0, W - w)
            m[y:y + h, x:x + w] = True
        else:
            blob = ndimage.gaussian_filter(rng.standard_normal((H, W)), rng.uniform(2, 5)) > rng.uniform(0, 0.2)
            lab, cnt = ndimage.label(blob)
            m = lab == (1 + k % max(cnt, 1))
        images.append(img)
        masks.append(m)
    return np.stack(images), np.stack(masks)


def _compare(images, masks):
    ref = extract(images, masks=masks, backend="pyradiomics").numpy()
    got = extract(torch.from_numpy(images), masks=torch.from_numpy(masks)).numpy()
    report = {}
    for j, name in enumerate(FEATURE_NAMES):
        r, g = ref[:, j], got[:, j]
        nan_mismatch = int((np.isnan(r) != np.isnan(g)).sum())
        both = ~np.isnan(r) & ~np.isnan(g)
        err = np.abs(r[both] - g[both])
        off = err > 1e-9 + 1e-6 * np.abs(r[both])
        if nan_mismatch or off.any():
            report[name] = {"nan_mismatch": nan_mismatch, "n_off": int(off.sum()),
                            "worst_rel": float((err / (np.abs(r[both]) + 1e-300)).max()) if both.any() else None}
    return ref, got, report


def test_parity_with_pyradiomics_on_240_rois():
    images, masks = _rois(240, seed=0)
    ref, got, report = _compare(images, masks)
    assert NOT_IN_ENGINE == ()  # every one of the 107 features is computed by the engine
    assert report == {}, report  # any feature that cannot match would be listed here with its worst error
    assert (~np.isnan(ref[:, COL["original_firstorder_Mean"]])).sum() >= 200


def _one(img, m):
    img, m = np.asarray(img, np.float64)[None], np.asarray(m, bool)[None]
    ref, got, report = _compare(img, m)
    assert report == {}, report
    return {n: got[0, COL[n]] for n in FEATURE_NAMES}


def test_trap_bin_edges_are_anchored_at_zero():
    img = np.full((6, 6), 49.0)
    img[:, 3:] = 51.0  # one bin if edges started at the minimum; bins 2 and 3 anchored at 0
    f = _one(img, np.ones((6, 6), bool) & (np.arange(6)[None] >= 0) & np.pad(np.ones((4, 6), bool), ((1, 1), (0, 0))))
    assert f["original_firstorder_Entropy"] == pytest.approx(1.0, abs=1e-12)
    assert f["original_glcm_JointAverage"] != 1.0


def test_trap_absent_gray_levels_keep_their_indices():
    img = np.full((6, 6), 10.0)
    img[:, 3:] = 60.0  # bins 1 and 3 (bin 2 absent)
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    f = _one(img, m)
    assert f["original_glcm_JointAverage"] == pytest.approx(2.0)  # mean of indices 1 and 3, not 1 and 2


def test_trap_glszm_is_8_connected_and_gldm_alpha_0():
    img = np.array([[0.0, 100.0], [100.0, 0.0]])  # equal levels touch only diagonally
    f = _one(np.pad(img, 1, constant_values=200), np.pad(np.ones((2, 2), bool), 1))
    assert f["original_glszm_ZonePercentage"] == pytest.approx(2 / 4)  # 2 zones of 2, not 4 of 1
    assert f["original_gldm_LargeDependenceEmphasis"] == pytest.approx(4.0)  # each pixel: 1 equal neighbour -> j = 2


def test_trap_ngtdm_pixels_without_neighbours_count_with_zero_difference():
    img = np.zeros((5, 5))
    img[0, 0], img[4, 4] = 30.0, 90.0
    m = np.zeros((5, 5), bool)
    m[0, 0] = m[4, 4] = True
    f = _one(img, m)
    assert f["original_ngtdm_Coarseness"] == 1e6  # Σ p·s = 0 -> PyRadiomics' fallback


def test_trap_kurtosis_is_not_excess_and_single_slice_shape():
    rng = np.random.default_rng(1)
    img = np.round(np.clip(rng.normal(128, 30, (40, 40)), 0, 255))
    m = np.zeros((40, 40), bool)
    m[2:38, 3:37] = True
    f = _one(img, m)
    assert 2.5 < f["original_firstorder_Kurtosis"] < 3.5
    assert f["original_shape_LeastAxisLength"] == 0 and f["original_shape_Flatness"] == 0
    assert 0 <= f["original_glcm_MCC"] <= 1  # from the eigenvalues of a non-symmetric matrix


def test_trap_imc2_and_mcc_match_on_near_independent_textures():
    rng = np.random.default_rng(7)
    img = np.round(rng.uniform(0, 255, (48, 48)))  # white noise: GLCM ~ px·py, where Imc2 rounds to NaN
    _, got, report = _compare(np.repeat(img[None], 12, 0),
                              np.stack([np.pad(np.ones((4 + k, 5 + k), bool), ((1, 43 - k), (2, 41 - k))) for k in range(12)]))
    assert report == {}, report
    assert np.isfinite(got[:, COL["original_glcm_Imc2"]]).all()


def test_trap_glrlm_drops_an_angle_whose_lines_hold_one_pixel():
    m = np.zeros((4, 4), bool)
    m[2, 3] = m[3, 2] = m[3, 3] = True  # every (1, 1) diagonal holds one ROI pixel: that angle is dropped
    f = _one(np.full((4, 4), 30.0), m)
    assert f["original_glrlm_LongRunEmphasis"] == pytest.approx(2.5)  # not (2.5 + 2.5 + 2.5 + 1) / 4


def test_degenerate_rois_are_rows_of_nan_or_pyradiomics_values_never_errors():
    img = (np.arange(256).reshape(16, 16) % 200).astype(np.float64)
    cases = np.zeros((6, 16, 16), bool)
    cases[1, 3, 3] = True           # one pixel: refused by PyRadiomics -> NaN
    cases[2, 2:10, 4] = True        # one pixel wide: refused -> NaN
    cases[3, 2:4, 2:4] = True       # 2x2
    cases[4, 5:12, 5:12] = True     # constant (below)
    cases[5, :, :] = True           # whole image: PyRadiomics finds "nothing segmented" -> NaN
    images = np.repeat(img[None], 6, 0)
    images[4] = 77.0
    ref, got, report = _compare(images, cases)
    assert report == {}, report
    assert np.isnan(got[[0, 1, 2, 5]]).all() and not np.isnan(got[[3, 4]]).all()


def test_boxes_are_clipped_and_equal_masks():
    images, _ = _rois(4, seed=3)
    boxes = torch.tensor([[10, 12, 50, 40], [-20, -5, 30, 30], [60, 70, 200, 150], [0, 0, 96, 40]])
    from cxrbench.radiomics import boxes_to_masks

    masks = boxes_to_masks(boxes, 96, 96)
    assert masks[1, 0, 0] and masks[1].sum() == 30 * 30 and masks[2].sum() == 36 * 26
    a = extract(torch.from_numpy(images), boxes=boxes)
    b = extract(torch.from_numpy(images), masks=masks)
    assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.allclose(a.nan_to_num(), b.nan_to_num())


def test_boxes_copied_box_by_box_equal_the_vectorised_gather(monkeypatch):
    # On the CPU, boxes are copied into the pages slice by slice; a GPU takes the vectorised gather.
    from cxrbench.radiomics import engine

    images, _ = _rois(12, seed=6)
    rng = np.random.default_rng(6)
    xy = rng.integers(-5, 80, (12, 2))
    boxes = torch.from_numpy(np.concatenate([xy, xy + rng.integers(2, 40, (12, 2))], 1))
    copied = extract(torch.from_numpy(images), boxes=boxes)
    monkeypatch.setattr(engine, "COPY_BOXES_ON_CPU", False)
    gathered = extract(torch.from_numpy(images), boxes=boxes)
    assert torch.equal(copied.isnan(), gathered.isnan()) and not copied.isnan().all()
    assert torch.equal(copied.nan_to_num(), gathered.nan_to_num())


def test_images_on_a_zero_to_one_scale_are_warned_about():
    """binWidth 25 on [0, 1] images puts every pixel in one bin: different regions get identical texture
    features (checked), and extract says why."""
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 32, 32, generator=g)
    img[1, :16] *= 0.2  # another texture
    with pytest.warns(RuntimeWarning, match="less than bin_width 25"):
        f = extract(img, boxes=torch.tensor([[0, 0, 16, 16], [0, 0, 16, 16]]))
    glcm = [i for i, n in enumerate(FEATURE_NAMES) if "_glcm_" in n]
    assert glcm and torch.allclose(f[0, glcm], f[1, glcm], equal_nan=True)
    assert extract.__doc__ and "0–255" in extract.__doc__ and "NaN" in extract.__doc__


def test_bad_input_is_refused_clearly():
    img = torch.zeros(2, 8, 8)
    with pytest.raises(RadiomicsInputError, match="differ in shape"):
        extract(img, masks=torch.ones(2, 8, 9, dtype=torch.bool))
    with pytest.raises(RadiomicsInputError, match="only 0 and 1"):
        extract(img, masks=torch.full((2, 8, 8), 0.5))
    bad = img.clone()
    bad[0, 1, 1] = float("nan")
    with pytest.raises(RadiomicsInputError, match=r"images \[0\] contain non-finite pixels"):
        extract(bad, masks=torch.ones(2, 8, 8, dtype=torch.bool))
    with pytest.raises(RadiomicsInputError, match="negative width"):
        extract(img, boxes=torch.tensor([[5, 5, 2, 7], [0, 0, 3, 3]]))
    with pytest.raises(RadiomicsInputError, match="non-finite pixels"):
        extract(bad, boxes=torch.tensor([[0, 0, 3, 3], [0, 0, 3, 3]]))
    inf = img.clone()
    inf[1, 2, 2] = float("inf")  # crashed inside bincount before
    with pytest.raises(RadiomicsInputError, match=r"images \[1\] contain non-finite pixels"):
        extract(inf, boxes=torch.tensor([[0, 0, 3, 3], [0, 0, 3, 3]]))
    with pytest.raises(RadiomicsInputError, match=r"boxes \[0\] have non-finite coordinates"):  # was read as 0
        extract(img, boxes=torch.tensor([[float("nan"), 0, 3, 3], [0, 0, 3, 3]]))
    with pytest.raises(RadiomicsInputError, match="3 boxes for 2 images"):
        extract(img, boxes=torch.tensor([[0, 0, 3, 3]] * 3))


def test_non_integer_gray_values_take_the_sorted_path_and_still_match():
    # First-order statistics of small integer gray values come from a per-ROI histogram; any other
    # values are sorted. Both paths must match PyRadiomics.
    images, masks = _rois(24, seed=5)
    jitter = np.random.default_rng(5).uniform(0, 1, images.shape)
    _, _, report = _compare(images + jitter, masks)
    assert report == {}, report


def test_diameters_from_hull_candidates_equal_all_vertex_pairs():
    # PyRadiomics compares all O(V²) mesh vertices; the engine keeps only row extremes that can be
    # hull vertices. On random blobs and boxes, brute force over every vertex must agree exactly.
    from cxrbench.radiomics.engine import _bounding_boxes, _gather, _mesh_shape

    rng = np.random.default_rng(11)
    masks = []
    for k in range(40):
        if k % 4 == 0:
            m = np.zeros((20, 24), bool)
            y, x = rng.integers(0, 10, 2)
            m[y:y + rng.integers(2, 10), x:x + rng.integers(2, 14)] = True
        else:
            f = ndimage.gaussian_filter(rng.standard_normal((20, 24)), rng.uniform(1, 3))
            m = f > rng.uniform(-0.1, 0.3)
        masks.append(m)
    masks = np.stack(masks)
    out = torch.full((len(masks), len(FEATURE_NAMES)), np.nan, dtype=torch.float64)
    m = torch.from_numpy(masks)
    # the masks packed into pages as extract() packs a chunk of ROIs
    _mesh_shape(_gather(torch.zeros(m.shape), m, torch.arange(len(m)), *_bounding_boxes(m), 25.0), out)
    for m, row in zip(masks, out.numpy()):
        ys, xs = np.nonzero(m)
        if len(ys) == 0:
            continue
        # mesh vertices: pixel centres at z = ±0.5, and the midpoints of in/out edges at z = 0
        centres = np.stack([ys, xs], 1).astype(float)
        p = np.pad(m, 1)
        mids = []
        for dy, dx in ((0, 1), (1, 0)):
            a, b = p[1:-1, 1:-1], p[1 + dy:p.shape[0] - 1 + dy, 1 + dx:p.shape[1] - 1 + dx]
            for yy, xx in zip(*np.nonzero(a != b)):
                mids.append((yy + dy / 2, xx + dx / 2))
            a2 = p[1 - dy:p.shape[0] - 1 - dy, 1 - dx:p.shape[1] - 1 - dx]
            for yy, xx in zip(*np.nonzero(a2 != a)):
                mids.append((yy - dy / 2, xx - dx / 2))
        mids = np.array(mids)
        pts3 = np.concatenate([np.c_[centres, np.full(len(centres), 0.5)], np.c_[centres, np.full(len(centres), -0.5)],
                               np.c_[mids, np.zeros(len(mids))]])
        d3 = np.sqrt(((pts3[:, None] - pts3[None]) ** 2).sum(-1).max())
        pts2 = np.concatenate([centres, mids])
        d2 = np.sqrt(((pts2[:, None] - pts2[None]) ** 2).sum(-1).max())
        assert row[COL["original_shape_Maximum3DDiameter"]] == pytest.approx(d3, abs=1e-9)
        assert row[COL["original_shape_Maximum2DDiameterSlice"]] == pytest.approx(d2, abs=1e-9)


def test_too_many_gray_levels_are_refused_with_advice():
    img = torch.arange(64 * 64, dtype=torch.float64).view(1, 64, 64) * 4.0  # 0..16380: 656 bins of 25
    mask = torch.ones(1, 64, 64, dtype=torch.bool)
    mask[:, 0] = False  # (a mask over the whole image is a NaN row, not an error)
    with pytest.raises(RadiomicsInputError, match="bin_width"):
        extract(img, masks=mask)


def test_partition_labels_equal_canonical_labels():
    from cxrbench.components import label_regions

    rng = np.random.default_rng(2)
    values = torch.from_numpy(rng.integers(1, 4, (6, 15, 17)))
    mask = torch.from_numpy(rng.uniform(size=(6, 15, 17)) > 0.2)
    canonical = label_regions(values, mask, 8).numpy()
    raw = label_regions(values, mask, 8, canonical=False).numpy()
    inside = mask.numpy()
    pairs = {(a, b) for a, b in zip(canonical[inside], raw[inside])}
    assert len(pairs) == len(set(canonical[inside])) == len(set(raw[inside]))  # a bijection of zones
    assert (raw[~inside] == -1).all()


def test_the_gpu_zone_labelling_gives_the_same_features(monkeypatch):
    # On a GPU the GLSZM zones come from min-label propagation instead of cc3d (labels are then the
    # smallest member index, not consecutive); run that path on the CPU so it is checked here too.
    from cxrbench.components import propagate_regions
    from cxrbench.radiomics import engine

    images, masks = _rois(30, seed=4)
    cpu_zones = extract(torch.from_numpy(images), masks=torch.from_numpy(masks))
    monkeypatch.setattr(engine, "ZONES_BY_CC3D", False)
    monkeypatch.setattr(engine, "label_regions", lambda v, m, c, canonical=True: propagate_regions(v, m, c))
    propagated = extract(torch.from_numpy(images), masks=torch.from_numpy(masks))
    assert torch.equal(torch.isnan(cpu_zones), torch.isnan(propagated))
    assert torch.allclose(cpu_zones.nan_to_num(), propagated.nan_to_num(), rtol=1e-12, atol=0)


def test_laned_counts_and_cpu_fast_paths_give_the_gpu_layouts_features(monkeypatch):
    # The CPU-only paths (laned bincounts, boxes binned in the pages, cc3d zones)
    # against the layout a GPU runs (one lane, per-pixel lists, propagated zones), both on the CPU here.
    from cxrbench.components import propagate_regions
    from cxrbench.radiomics import engine

    images, masks = _rois(30, seed=5)
    rng = np.random.default_rng(5)
    boxes = torch.from_numpy(np.concatenate([rng.integers(0, 20, (30, 2)), rng.integers(30, 64, (30, 2))], 1))
    imgs = torch.from_numpy(images)
    fast = [extract(imgs, masks=torch.from_numpy(masks)), extract(imgs, boxes=boxes)]
    monkeypatch.setattr(engine, "LANES", 1)
    monkeypatch.setattr(engine, "COPY_BOXES_ON_CPU", False)
    monkeypatch.setattr(engine, "ZONES_BY_CC3D", False)
    monkeypatch.setattr(engine, "label_regions", lambda v, m, c, canonical=True: propagate_regions(v, m, c))
    slow = [extract(imgs, masks=torch.from_numpy(masks)), extract(imgs, boxes=boxes)]
    for a, b in zip(fast, slow):
        assert torch.equal(torch.isnan(a), torch.isnan(b)) and not torch.isnan(a).all()
        assert torch.allclose(a.nan_to_num(), b.nan_to_num(), rtol=1e-10, atol=0)


def test_empty_images_with_masks_of_another_shape_are_still_refused():
    with pytest.raises(RadiomicsInputError, match="differ in shape"):
        extract(torch.zeros(0, 8, 8), masks=torch.zeros(3, 8, 8))
