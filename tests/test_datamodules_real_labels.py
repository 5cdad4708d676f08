"""DataModule logic on the real label files shipped in torchxrayvision (no images needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_modules.chexpert import OBSERVATIONS, apply_policy, chexpert_splits, index_from_table
from data_modules.nih import NIH14, boxes_table, index_from_entries, nih_splits
from data_modules.siim import group_masks
from data_modules.twin.sources import real_file


@pytest.fixture(scope="module")
def nih_entries():
    return pd.read_csv(real_file("nih_entries"))


@pytest.fixture(scope="module")
def nih_index(nih_entries):
    paths = [f"/nowhere/{n}" for n in nih_entries["Image Index"]]
    raw = pd.read_csv(real_file("nih_boxes"))
    rows_of = {n: i for i, n in enumerate(nih_entries["Image Index"])}
    return index_from_entries("/nowhere", nih_entries, paths, "nih14", boxes_table(raw, rows_of))


def _official_lists(meta: pd.DataFrame, seed: int = 0):
    """Stand-in official lists (the real ones are not in the wheel): a patient-disjoint 80/20."""
    pats = meta["patient_id"].unique()
    test = set(np.random.default_rng(seed).permutation(pats)[: len(pats) // 5])
    is_test = meta["patient_id"].isin(test)
    return set(meta.loc[~is_test, "image"]), set(meta.loc[is_test, "image"])


def _assert_patient_disjoint(meta, splits):
    seen = {}
    for name, rows in splits.items():
        if name == "loc":
            continue
        for p in set(meta["patient_id"].iloc[rows]):
            assert seen.setdefault(p, name) == name, f"patient {p} in {seen[p]} and {name}"


def test_nih_index_counts_match_the_csv(nih_index, nih_entries):
    assert len(nih_index.meta) == 112_120
    assert nih_index.meta["patient_id"].nunique() == 30_805
    for c in NIH14:
        expected = nih_entries["Finding Labels"].str.split("|").map(lambda f, c=c: c in f).sum()
        assert int(nih_index.labels[c].sum()) == expected, c
    boxes = nih_index.boxes
    assert len(boxes) == 984 and boxes["row"].nunique() == 880
    assert "Infiltrate" not in set(boxes["label"]) and "Infiltration" in set(boxes["label"])
    assert (boxes["x1"] > boxes["x0"]).all() and (boxes["x1"] <= 1024 + 1).all()


@pytest.mark.parametrize("protocol", ["official", "rgt", "amm"])
def test_nih_protocols_are_patient_disjoint(nih_index, protocol):
    lists = _official_lists(nih_index.meta) if protocol != "rgt" else None
    splits = nih_splits(nih_index, protocol, seed=0, val_share=0.1, lists=lists)
    _assert_patient_disjoint(nih_index.meta, splits)
    n = {k: len(v) for k, v in splits.items()}
    assert n["train"] > n["test"] > n["val"] > 0


def test_rgt_protocol_is_the_papers_partition(nih_index):
    """RGT §IV-A: the 880 box images out, the rest 70/10/20 by patient, prevalences kept."""
    splits = nih_splits(nih_index, "rgt", seed=1, val_share=0.1)
    boxed = set(nih_index.rows_with_boxes())
    assert set(splits["loc"]) == boxed and len(boxed) == 880
    main = np.concatenate([splits[k] for k in ("train", "val", "test")])
    assert not boxed & set(main) and len(main) == len(nih_index.meta) - 880  # exactly the box images excluded
    _assert_patient_disjoint(nih_index.meta, splits)
    shares = np.array([len(splits[k]) for k in ("train", "val", "test")]) / len(main)
    assert np.abs(shares - [0.7, 0.1, 0.2]).max() < 0.01
    lab = nih_index.labels
    train, test = lab.iloc[splits["train"]].mean(), lab.iloc[splits["test"]].mean()
    assert (test - train).abs().max() < 0.015, (test - train).abs().sort_values().tail(3)
    strict = nih_splits(nih_index, "rgt", seed=1, val_share=0.1, box_patients="exclude")
    box_patients = set(nih_index.meta["patient_id"].iloc[list(boxed)])
    strict_main = np.concatenate([strict[k] for k in ("train", "val", "test")])
    assert not box_patients & set(nih_index.meta["patient_id"].iloc[strict_main])


def test_nih_splits_depend_on_split_seed_only(nih_index):
    a = nih_splits(nih_index, "rgt", seed=3, val_share=0.1)
    b = nih_splits(nih_index, "rgt", seed=3, val_share=0.1)
    c = nih_splits(nih_index, "rgt", seed=4, val_share=0.1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_amm_cardiomegaly_task_counts(nih_entries):
    idx = index_from_entries("/x", nih_entries, ["p"] * len(nih_entries), "cardiomegaly", None)
    lab = idx.labels["Cardiomegaly"]
    # AMM paper: 2,776 cardiomegaly vs 60,361 normal images
    assert int((lab == 1).sum()) == 2776 and int((lab == 0).sum()) == 60361
    assert idx.eligible.sum() == 2776 + 60361


@pytest.fixture(scope="module")
def chexpert_table():
    t = pd.read_csv(real_file("chexpert"))
    t["_file"] = "train"
    return t


@pytest.mark.parametrize("policy", ["ones", "zeros", "ignore"])
def test_chexpert_uncertainty_policies(chexpert_table, policy):
    got = apply_policy(chexpert_table, policy)
    for c in OBSERVATIONS:
        raw = chexpert_table[c]
        pos, unc = int((raw == 1).sum()), int((raw == -1).sum())
        assert int((got[c] == 1).sum()) == pos + (unc if policy == "ones" else 0), c
        assert int(got[c].isna().sum()) == (unc if policy == "ignore" else 0), c
        assert int((got[c] == 0).sum()) == len(raw) - pos - unc + (unc if policy == "zeros" else 0), c


def test_chexpert_abnormal_task_on_pa_frontals(chexpert_table):
    idx = index_from_table("/x", __import__("pathlib").Path("/x"), chexpert_table, "abnormal", "ones", True, "PA")
    pa = ((chexpert_table["Frontal/Lateral"] == "Frontal") & (chexpert_table["AP/PA"] == "PA")).to_numpy()
    assert idx.eligible.sum() <= pa.sum() and not idx.eligible[~pa].any()
    t = chexpert_table[pa]
    disease = [c for c in OBSERVATIONS if c not in ("No Finding", "Support Devices")]
    abnormal = t[disease].isin([1.0, -1.0]).any(axis=1)
    normal = (t["No Finding"] == 1) & ~abnormal
    lab = idx.labels["Abnormal"].to_numpy()[pa]
    assert int((lab == 1).sum()) == int(abnormal.sum())
    assert int((lab == 0).sum()) == int(normal.sum())
    # support devices alone never make an image abnormal
    dev_only = t["Support Devices"].eq(1) & ~abnormal & t["No Finding"].eq(1)
    assert (lab[dev_only.to_numpy()] == 0).all()


def test_chexpert_cv_folds_rotate_and_are_patient_disjoint(chexpert_table):
    idx = index_from_table("/x", __import__("pathlib").Path("/x"), chexpert_table, "abnormal", "ones", True, "any")
    tests = []
    for fold in range(5):
        s = chexpert_splits(idx, "cv", fold, 5, seed=0, val_share=0.1)
        _assert_patient_disjoint(idx.meta, s)
        tests.append(set(s["test"]))
        total = sum(len(v) for v in s.values())
        assert total == idx.eligible.sum()
        assert abs(len(s["train"]) / total - 0.6) < 0.02
        # stratified: the abnormal rate of every part within 2 points of the pool's
        rate = np.nanmean(idx.labels["Abnormal"].to_numpy()[idx.eligible])
        for part in s.values():
            assert abs(np.nanmean(idx.labels["Abnormal"].to_numpy()[part]) - rate) < 0.02
    assert set.union(*tests) == set(np.flatnonzero(idx.eligible))  # every row is tested exactly once
    assert sum(len(t) for t in tests) == idx.eligible.sum()


def test_siim_positive_images_from_the_real_rle_rows():
    df = pd.read_csv(real_file("siim"))
    df.columns = [c.strip() for c in df.columns]
    df["EncodedPixels"] = df["EncodedPixels"].str.strip()
    g = group_masks(df)
    positive_rows = df[df["EncodedPixels"] != "-1"]
    assert len(positive_rows) == 3576
    assert int(g["positive"].sum()) == positive_rows["ImageId"].nunique()
    assert sum(len(r) for r in g["rles"]) == 3576  # every positive row kept, unioned per image
    assert len(g) == df["ImageId"].nunique()
