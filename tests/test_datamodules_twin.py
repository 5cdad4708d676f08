"""Every DataModule on twin data: batch contract, box/mask alignment, cache, and bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from data_modules import COVIDx, DataError, Lungs, NIH, SIIM, CheXpert
from data_modules.transforms import to_float

KW = dict(batch_size=4, image_size=64, cache_size=96)


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


def _batch(dm, split="train"):
    b = next(iter(dm.dataloader(split, shuffle=False)))
    assert b["image"].dtype == torch.uint8  # batches travel as uint8; methods make them float on the device
    return {**b, "image": to_float(b["image"])}


@pytest.mark.parametrize("protocol", ["official", "rgt", "amm"])
def test_nih_batches(twin_factory, cache_dir, protocol):
    root = twin_factory("nih", n=90, size=128)
    label_set = "cardiomegaly" if protocol == "amm" else "nih8"
    dm = NIH(root, protocol=protocol, label_set=label_set, cache_dir=cache_dir, **KW)
    dm.setup()
    b = _batch(dm)
    assert b["image"].shape == (4, 1, 64, 64) and b["image"].dtype == torch.float32
    assert 0 <= b["image"].min() and b["image"].max() <= 1
    assert b["label"].shape == (4, dm.num_classes) and b["label"].dtype == torch.float32
    assert len(b["patient_id"]) == 4 and b["index"].dtype == torch.int64
    if protocol == "rgt":
        loc = _batch(dm, "loc")
        assert all(bx.shape[1] == 4 and len(bx) >= 1 for bx in loc["boxes"])
        assert all((bl >= 0).all() for bl in loc["box_labels"])  # nih8 covers every box label


def test_nih_boxes_line_up_after_resize_crop_and_cache(tmp_path, cache_dir):
    """Bright squares drawn at the boxes stay under the boxes through cache + RGT eval transforms."""
    root = tmp_path / "nih"
    (root / "images_001/images").mkdir(parents=True)
    names = [f"0000000{i}_000.png" for i in range(1, 5)]
    rows, boxes = [], []
    rng = np.random.default_rng(0)
    for i, n in enumerate(names):
        img = np.zeros((300, 300), np.uint8)
        x, y, w, h = (int(v) for v in (*rng.integers(40, 180, 2), *rng.integers(40, 90, 2)))
        img[y:y + h, x:x + w] = 255
        Image.fromarray(img).save(root / "images_001/images" / n)
        rows.append(f"{n},Mass,0,{i + 1},50,M,PA,300,300,0.1,0.1")
        boxes.append(f"{n},Mass,{x},{y},{w},{h},,,")
    (root / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n" + "\n".join(rows) + "\n")
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + "\n".join(boxes) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(names[:2]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[2:]) + "\n")
    for cache in (True, False):
        dm = NIH(root, protocol="official", label_set="nih8", transforms="rgt", image_size=112, val_share=0.5,
                 cache=cache, cache_size=128, cache_dir=cache_dir, batch_size=4)
        dm.setup()
        b = _batch(dm, "loc")
        for img, bx in zip(b["image"], b["boxes"]):
            x0, y0, x1, y1 = bx[0].round().int().tolist()
            inside = img[0, y0 + 2:y1 - 2, x0 + 2:x1 - 2]
            outside = img[0].clone()
            outside[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = 0
            assert inside.mean() > 0.9 and outside.max() < 0.2, (cache, bx)
        # loc is resized whole, never centre-cropped: each box is the drawn box scaled by 112/300
        drawn = torch.tensor([[int(v) for v in line.split(",")[2:6]] for line in boxes], dtype=torch.float32)
        drawn[:, 2:] += drawn[:, :2]
        for r, bx in zip(b["index"].tolist(), b["boxes"]):
            assert torch.allclose(bx[0], drawn[r] * 112 / 300, atol=1e-3)


def test_siim_masks_line_up_with_the_lucent_pneumothorax(twin_factory, cache_dir):
    root = twin_factory("siim", n=80, size=128, seed=1)
    dm = SIIM(root, cache_dir=cache_dir, **KW)  # seg preset: random horizontal flips in train
    dm.setup()
    diffs, mirrored = [], []
    for split in ("train", "val", "test"):
        for b in dm.dataloader(split, shuffle=False):
            assert b["mask"].shape == b["image"].shape and b["mask"].dtype == torch.uint8
            for img, m in zip(to_float(b["image"])[:, 0], b["mask"][:, 0].bool()):
                if m.sum() > 15:
                    diffs.append(float(img[m].mean() - img[~m].mean()))
                    mf = m.flip(-1)
                    mirrored.append(float(img[mf & ~m].mean() - img[~(mf | m)].mean()) if (mf & ~m).sum() > 15 else 0.0)
    assert len(diffs) >= 3
    assert np.median(diffs) < -0.02  # the pneumothorax (dark) is under its mask after flips/resizes
    assert np.median(diffs) < np.median(mirrored)


def test_lungs_masks_cover_the_dark_lungs(twin_factory, cache_dir):
    root = twin_factory("lungs", n=12, size=96)
    dm = Lungs(root, cache_dir=cache_dir, **KW)
    dm.setup()
    assert set(dm.index.meta["site"].iloc[dm.splits["test"]]) == {"montgomery"}
    assert set(dm.index.meta["site"].iloc[dm.splits["train"]]) == {"shenzhen"}
    b = _batch(dm, "test")
    for img, m in zip(b["image"][:, 0], b["mask"][:, 0].bool()):
        assert 0.1 < m.float().mean() < 0.7
        assert img[m].mean() < img[~m].mean() - 0.05


def test_chexpert_cv_and_official(twin_factory, cache_dir):
    root = twin_factory("chexpert", n=150, size=64)
    folds = []
    for fold in range(5):
        dm = CheXpert(root, task="abnormal", view="any", fold=fold, cache_dir=cache_dir, **KW)
        dm.setup()
        folds.append(set(dm.splits["test"]))
        b = _batch(dm)
        assert b["label"].shape == (4, 1)
    assert not set.intersection(*folds)
    dm = CheXpert(root, task="findings", uncertainty="ignore", protocol="official", view="any", cache_dir=cache_dir, **KW)
    dm.setup()
    assert dm.num_classes == 14 and torch.isnan(torch.cat([b["label"] for b in dm.dataloader("train")])).any()
    assert set(dm.index.meta["split_file"].iloc[dm.splits["test"]]) == {"valid"}


def test_covidx_tasks_and_held_out_sources(twin_factory, cache_dir):
    root = twin_factory("covidx", n=120, size=64)
    dm = COVIDx(root, task="3class", held_out_sources=["bimcv"], cache_dir=cache_dir, **KW)
    dm.setup()
    b = _batch(dm)
    assert b["label"].dtype == torch.int64 and b["label"].shape == (4,)
    src = dm.index.meta["source"]
    assert set(src.iloc[dm.splits["shift"]]) == {"bimcv"}
    assert "bimcv" not in set(src.iloc[np.concatenate([dm.splits[s] for s in ("train", "val", "test")])])
    dm = COVIDx(root, task="pneumonia_vs_covid", cache_dir=cache_dir, **KW)
    dm.setup()
    assert "normal" not in set(dm.index.meta["label"].iloc[dm.splits["train"]])
    binary = twin_factory("covidx", n=30, size=48, vocabulary="binary")
    with pytest.raises(DataError, match="positive/negative vocabulary"):
        COVIDx(binary, task="3class", cache_dir=cache_dir, **KW).setup()
    with pytest.raises(DataError, match=r"held_out_sources \['nowhere'\]"):
        COVIDx(root, held_out_sources=["nowhere"], cache_dir=cache_dir, **KW).setup()


def test_fraction_subset_is_inside_the_full_train_split(twin_factory, cache_dir):
    root = twin_factory("nih", n=90, size=128)
    full = NIH(root, protocol="rgt", label_set="nih8", cache_dir=cache_dir, **KW)
    part = NIH(root, protocol="rgt", label_set="nih8", fraction=0.25, cache_dir=cache_dir, **KW)
    full.setup()
    part.setup()
    assert set(part.splits["train"]) < set(full.splits["train"])
    assert np.array_equal(part.splits["test"], full.splits["test"])


# ------------------------------------------------------------------ cache


def test_cache_equals_decoded_images_and_is_rebuilt_when_stale(twin_factory, tmp_path):
    src = twin_factory("nih", n=20, size=128)
    root = tmp_path / "nih"
    shutil.copytree(src, root)
    dm = NIH(root, cache_dir=str(tmp_path / "c"), **KW)
    cache = dm.image_cache().ensure(workers=1)
    path0 = dm.index.meta["path"][0]
    img, (h, w) = cache[0]
    ref = np.asarray(Image.open(path0).convert("L").resize((96, 96), Image.BILINEAR, reducing_gap=2.0))
    assert (h, w) == (128, 128) and np.array_equal(img, ref)
    assert cache.is_valid()
    # truncated data file -> invalid -> rebuilt on the next ensure()
    with open(cache.data_path, "r+b") as fh:
        fh.truncate(100)
    assert not cache.is_valid()
    NIH(root, cache_dir=str(tmp_path / "c"), **KW).image_cache().ensure(workers=1)
    assert cache.is_valid()
    # a changed image -> stale key
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(path0)
    fresh = NIH(root, cache_dir=str(tmp_path / "c"), **KW).image_cache()
    assert not fresh.is_valid()
    fresh.ensure(workers=1)
    assert fresh[0][0].max() == 0


# ------------------------------------------------------------------ bad input


def test_bad_input_is_named_before_training(twin_factory, tmp_path, cache_dir):
    with pytest.raises(DataError, match="root .*nowhere does not exist. Expected layout"):
        NIH(tmp_path / "nowhere", cache_dir=cache_dir).setup()
    with pytest.raises(DataError, match=r"fraction must be in \(0, 1\]"):
        NIH(tmp_path, fraction=0)
    with pytest.raises(DataError, match="protocol must be one of"):
        NIH(tmp_path, protocol="kaggle")
    with pytest.raises(DataError, match="exceeds cache_size"):
        NIH(tmp_path, image_size=512, cache_size=256)

    root = tmp_path / "nih"
    shutil.copytree(twin_factory("nih", n=40, size=64), root)
    df = pd.read_csv(root / "Data_Entry_2017.csv")
    df.rename(columns={"Patient ID": "PatientID"}).to_csv(root / "Data_Entry_2017.csv", index=False)
    with pytest.raises(DataError, match=r"Data_Entry_2017.csv: missing column\(s\) \['Patient ID'\]"):
        NIH(root, cache_dir=cache_dir).setup()
    df.to_csv(root / "Data_Entry_2017.csv", index=False)

    victim = next(root.glob("images_*/images/*.png"))
    victim.unlink()
    with pytest.raises(DataError, match="1 of 40 listed images are absent"):
        NIH(root, cache_dir=cache_dir, **KW).setup()
    with pytest.warns(UserWarning, match="1 of 40 listed images are absent.*skipped"):
        dm = NIH(root, on_missing="skip", cache_dir=cache_dir, **KW)
        dm.setup()
    assert len(dm.index.meta) == 39

    victim.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=f"cannot decode image .*{victim.name}"):
        NIH(root, cache_dir=cache_dir, **KW).setup()

    with pytest.raises(DataError, match="split '(train|test)' is empty after filtering"):
        _empty_split(tmp_path, cache_dir)


def _empty_split(tmp_path, cache_dir):
    """COVIDx with every training source held out: nothing left to train on."""
    from data_modules.twin import generate

    root = generate("covidx", tmp_path / "cx", n=12, size=32, workers=1)
    sources = sorted({line.split()[3] for f in ("train", "val", "test") for line in (root / f"{f}.txt").read_text().splitlines()})
    COVIDx(root, held_out_sources=sources, cache_dir=cache_dir, **KW).setup()


def test_batches_travel_as_uint8_and_every_method_makes_them_float(twin_factory, cache_dir):
    """A quarter of the bytes through the worker pipe: images stay uint8 to the device, where the
    Method base turns them into exactly what the workers' ToDtype(float32, scale=True) gave before."""
    from torchvision.transforms import v2

    from cxrbench.methods.base import Method

    root = twin_factory("nih", n=90, size=128)
    dm = NIH(root, protocol="official", label_set="nih8", cache_dir=cache_dir, views=2, **KW)
    dm.setup()
    b = next(iter(dm.dataloader("train", shuffle=False)))
    assert b["image"].shape == (4, 2, 1, 64, 64) and b["image"].dtype == torch.uint8  # views: [B, V, 1, H, W]
    raw = b["image"].clone()
    out = Method().on_after_batch_transfer(b, 0)
    assert out["image"].dtype == torch.float32 and out["image"].shape == raw.shape
    assert torch.equal(out["image"], v2.ToDtype(torch.float32, scale=True)(raw))
    assert Method().on_after_batch_transfer({"image": out["image"]}, 0)["image"] is out["image"]  # float: as is


def test_full_size_test_caches_only_the_scored_rows_and_refuses_a_disk_too_small(twin_factory, tmp_path, monkeypatch):
    """AMM tests at full size: the eval-size cache holds test + loc rows only, reads the same pixels as
    decoding the PNG, and a disk too small for it stops setup() before any image is decoded."""
    root = twin_factory("nih", n=120, size=96)
    kw = dict(protocol="amm", label_set="cardiomegaly", transforms="plain", image_size=32, eval_size=96,
              cache_size=48, cache_dir=str(tmp_path / "c"), batch_size=8)
    dm = NIH(root, **kw)
    dm.setup()
    full = dm.datasets["test"].cache
    scored = np.unique(np.concatenate([dm.splits[s] for s in dm.test_splits]))
    assert full.cache.size == 96 and np.array_equal(full.rows, scored) and len(scored) < len(dm.index.meta)
    assert dm.datasets["train"].cache.size == 48  # training reads the small cache
    plain = NIH(root, **{**kw, "cache": False})
    plain.setup()
    a, b = dm.datasets["test"][0], plain.datasets["test"][0]
    assert a["image"].shape == (1, 96, 96) and torch.equal(a["image"], b["image"])
    if "loc" in dm.splits and len(dm.splits["loc"]):
        assert torch.equal(dm.datasets["loc"][0]["image"], plain.datasets["loc"][0]["image"])

    Usage = type("Usage", (), {"free": 1000})
    monkeypatch.setattr("data_modules.cache.shutil.disk_usage", lambda p: Usage)
    tight = NIH(root, **{**kw, "cache_dir": str(tmp_path / "c2")})
    with pytest.raises(OSError, match=r"needs 0\.\d GB \(\d+ images at 96²\).*cache_dir"):
        tight.setup()
    assert not list((tmp_path / "c2").glob("*.u8"))  # nothing half-built, the small cache not even started


def test_box_lists_cross_the_worker_pipe_unchanged(twin_factory, tmp_path):
    """Boxes and box labels come out of 2 worker processes as lists of tensors equal to the in-process ones
    (they travel as one array per batch: ``RaggedList``)."""
    root = twin_factory("nih", n=120, size=96)
    got = {}
    for workers in (0, 2):
        dm = NIH(root, protocol="rgt", label_set="nih8", transforms="plain", image_size=64, cache_size=96,
                 cache_dir=str(tmp_path / "c"), batch_size=8, num_workers=workers)
        dm.setup()
        got[workers] = [(b["boxes"], b["box_labels"]) for b in dm.dataloader("loc", shuffle=False)]
    assert len(got[0]) == len(got[2]) > 0
    for (b0, l0), (b2, l2) in zip(got[0], got[2]):
        assert type(b2) is list and all(isinstance(x, torch.Tensor) for x in b2 + l2)
        assert all(torch.equal(x, y) for x, y in zip(b0, b2)) and all(torch.equal(x, y) and x.dtype == y.dtype == torch.long
                                                                       for x, y in zip(l0, l2))
        assert all(x.shape[1:] == (4,) for x in b2)
