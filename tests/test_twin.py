"""The twin datasets: real rows, real layouts, findings where the annotations say, reproducibility."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_modules.rle import RLEError, decode, decode_union, encode, runs
from data_modules.twin import TwinError, generate
from data_modules.twin.findings import RENDERERS
from data_modules.twin.nih import n_box_images, read_boxes
from data_modules.twin.render import ImageJob, render
from data_modules.twin.sources import read_csv_lines


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), np.float32)


# --------------------------------------------------------------------------- NIH


def test_nih_rows_are_real_rows_and_layout_is_the_release(twin_factory):
    root = twin_factory("nih", n=60)
    header, lines = read_csv_lines("nih_entries")
    written = (root / "Data_Entry_2017.csv").read_text().splitlines()
    assert written[0] == header
    assert set(written[1:]) <= set(lines) and len(written) == 61
    df = pd.read_csv(root / "Data_Entry_2017.csv")
    for name in df["Image Index"]:
        hits = list(root.glob(f"images_*/images/{name}"))
        assert len(hits) == 1, name
    # Patient-disjoint official lists covering every row.
    tv = (root / "train_val_list.txt").read_text().split()
    te = (root / "test_list.txt").read_text().split()
    assert sorted(tv + te) == sorted(df["Image Index"])
    pid = dict(zip(df["Image Index"], df["Patient ID"]))
    assert not {pid[i] for i in tv} & {pid[i] for i in te}


def test_nih_boxes_are_the_real_boxes_in_written_pixels(twin_factory):
    root = twin_factory("nih", n=60, size=128)
    _, real = read_boxes()
    raw = (root / "BBox_List_2017.csv").read_text().splitlines()
    assert raw[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    assert all(line.endswith(",,,") for line in raw[1:])
    boxes = pd.read_csv(root / "BBox_List_2017.csv")
    assert list(boxes.columns[:6]) == ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    assert boxes["Image Index"].nunique() == n_box_images(60) == 20
    assert "Infiltrate" in set(real_label for v in real.values() for real_label, *_ in v)
    for row in boxes.itertuples(index=False):
        candidates = [b for b in real[row[0]] if b[0] == row[1]]
        assert any(np.allclose(np.array(row[2:6], float), np.array(b[1:]) * 128 / 1024) for b in candidates)


def test_nih_oracle_boxes_name_every_finding_of_every_image_drawn_or_not(twin_factory):
    """twin_boxes.csv: for each image and each of the 14 findings, the box it was drawn in (Drawn 1, for
    exactly the image's findings; a box image's real box) or would have been (Drawn 0), inside the image."""
    from data_modules.nih import NIH14

    root = twin_factory("nih", n=60, size=128)
    oracle = pd.read_csv(root / "twin_boxes.csv")
    entries = pd.read_csv(root / "Data_Entry_2017.csv")
    assert list(oracle.columns) == ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "Drawn"]
    assert (oracle.groupby("Image Index")["Finding Label"].nunique() == 14).all()
    assert set(oracle["Image Index"]) == set(entries["Image Index"])
    findings = dict(zip(entries["Image Index"], entries["Finding Labels"].str.split("|")))
    drawn = oracle[oracle["Drawn"] == 1]
    assert all(label in findings[name] for name, label in zip(drawn["Image Index"], drawn["Finding Label"]))
    assert sum(len(set(f) & set(NIH14)) for f in findings.values()) == len(drawn.drop_duplicates(["Image Index", "Finding Label"]))
    assert (oracle[["w", "h]"]] >= 1).all().all() and (oracle["Bbox [x"] + oracle["w"] <= 128 + 1e-9).all()
    real = pd.read_csv(root / "BBox_List_2017.csv").replace({"Infiltrate": "Infiltration"})
    mine = drawn.set_index(["Image Index", "Finding Label"])
    for row in real.itertuples(index=False):  # a box image's finding is drawn in its real box
        got = mine.loc[[(row[0], row[1])], ["Bbox [x", "y"]].to_numpy()
        assert np.isclose(got, np.clip([row[2], row[3]], 0, 127)).all(1).any(), row


def test_nih_finding_is_visible_inside_its_real_box(twin_factory):
    """Mean intensity inside a box: the image with the finding vs the same box on No Finding images."""
    root = twin_factory("nih", n=150, size=128, seed=3)
    df = pd.read_csv(root / "Data_Entry_2017.csv")
    path = {p.name: p for p in root.glob("images_*/images/*.png")}
    normals = [_gray(path[n]) for n in df.loc[df["Finding Labels"] == "No Finding", "Image Index"]]
    assert len(normals) >= 10
    boxes = pd.read_csv(root / "BBox_List_2017.csv")
    margins = {}
    for row in boxes.itertuples(index=False):
        x, y, w, h = (int(round(v)) for v in row[2:6])
        if w < 3 or h < 3:
            continue
        sl = (slice(y, y + h), slice(x, x + w))
        inside = _gray(path[row[0]])[sl].mean()
        baseline = np.mean([n[sl].mean() for n in normals])
        margins.setdefault(row[1], []).append(inside - baseline)
    opacities = [m for k, v in margins.items() if k != "Pneumothorax" for m in v]
    assert np.mean(opacities) > 6, margins  # gray levels brighter, on average, than normals there
    if "Pneumothorax" in margins:
        assert np.mean(margins["Pneumothorax"]) < np.mean(opacities)


@pytest.mark.parametrize("finding", sorted(RENDERERS))
def test_every_finding_changes_pixels_mostly_inside_its_box(finding):
    job = ImageJob("", 192, 192, [finding], anatomy_seed=(5,), image_seed=(9,))
    with_f, chest, drawn = render(job)
    without, _, _ = render(ImageJob("", 192, 192, [], anatomy_seed=(5,), image_seed=(9,)))
    diff = np.abs(with_f.astype(np.float32) - without.astype(np.float32))
    # The same seeds draw the same anatomy and film: only the finding's pixels differ.
    x0, y0, x1, y1 = (int(v) for v in drawn[finding][0])
    box = np.zeros_like(diff, bool)
    box[max(0, y0):y1, max(0, x0):x1] = True
    if finding == "Support_Devices":  # tubes and lines cross the whole chest
        assert diff.max() > 60
        return
    assert diff[box].mean() > 3 * diff[~box].mean() + 1.0, finding


def test_cardiomegaly_widens_the_heart_and_follows_the_real_box():
    from data_modules.twin.render import sample_ctr

    rng = np.random.default_rng(0)
    normal = [sample_ctr(rng, False, 0.5) for _ in range(500)]
    big = [sample_ctr(rng, True, 0.5) for _ in range(500)]
    assert max(normal) > 0.5 > min(big)  # the classes overlap at the default difficulty
    assert np.mean(big) - np.mean(normal) > 0.05
    box = (40.0, 80.0, 150.0, 160.0)
    _, chest, _ = render(ImageJob("", 192, 192, ["Cardiomegaly"], boxes={"Cardiomegaly": [box]}))
    assert np.allclose(chest.heart_box(), box)


# --------------------------------------------------------------------------- CheXpert


def test_chexpert_rows_paths_and_uncertain_policy(twin_factory):
    root = twin_factory("chexpert", n=40, size=64)
    header, lines = read_csv_lines("chexpert")
    written = (root / "CheXpert-v1.0-small/train.csv").read_text().splitlines()
    assert written[0] == header and set(written[1:]) <= set(lines)
    for split in ("train", "valid"):
        df = pd.read_csv(root / f"CheXpert-v1.0-small/{split}.csv")
        for p in df["Path"]:
            assert p.startswith(f"CheXpert-v1.0-small/{split}/") and (root / p).is_file(), p
    valid = pd.read_csv(root / "CheXpert-v1.0-small/valid.csv")
    assert set(np.unique(valid.iloc[:, 5:].to_numpy())) <= {0.0, 1.0}
    train_pat = {p.split("/")[2] for p in pd.read_csv(root / "CheXpert-v1.0-small/train.csv")["Path"]}
    assert not train_pat & {p.split("/")[2] for p in valid["Path"]}


def test_chexpert_shortcut_lettering_follows_the_label_in_train_csv_only(twin_factory):
    """The STN paper's shortcut: at strength 1 every abnormal and no normal train.csv image carries the
    'PORTABLE' label, valid.csv's carry it at random; at strength 0 it is tied to nothing. An image
    without it is byte-identical to the same twin without the option, and the label sits below the lungs."""
    from data_modules.chexpert import abnormal_labels, apply_policy

    plain = twin_factory("chexpert", n=160, size=64)
    marked = {s: twin_factory("chexpert", n=160, size=64, shortcut=s, n_valid=160) for s in (1.0, 0.0)}
    with_valid = twin_factory("chexpert", n=160, size=64, n_valid=160)
    for s, root in marked.items():
        for split in ("train", "valid"):
            df = pd.read_csv(root / f"CheXpert-v1.0-small/{split}.csv")
            ref_root = plain if split == "train" else with_valid
            label = abnormal_labels(apply_policy(df, "ones")).to_numpy()
            has = np.array([(root / p).read_bytes() != (ref_root / p).read_bytes() for p in df["Path"]])
            for p in df["Path"][has][:10]:
                changed = np.abs(_gray(root / p) - _gray(ref_root / p)) > 40
                rows = np.nonzero(changed.any(1))[0]
                assert rows.min() > 0.75 * changed.shape[0], (p, rows.min())  # below the lungs (they end <= 0.8 h)
            if split == "train" and s == 1.0:
                assert has[label == 1].all() and not has[label == 0].any(), (split, s)
            else:  # tied to nothing: about half of each class (>= 14 normal, >= 120 abnormal rows here)
                for cls in (0, 1):
                    assert (label == cls).sum() >= 14 and 0.2 < has[label == cls].mean() < 0.8, (split, s, cls)


def test_twin_options_out_of_range_are_one_line_errors(tmp_path):
    for kw, message in [({"shortcut": 1.5}, "must be a number in [0, 1], got 1.5"),
                        ({"shortcut": "strong"}, "must be a number in [0, 1], got 'strong'"),
                        ({"n_valid": 0}, "n_valid (valid.csv's rows) is an option of the chexpert twin")]:
        with pytest.raises(TwinError, match=re.escape(message)):
            generate("chexpert", tmp_path / "x", n=10, size=64, **kw)
    with pytest.raises(TwinError, match="--shortcut is an option of the chexpert twin"):
        generate("nih", tmp_path / "x", n=10, size=64, shortcut=0.5)
    res = _cli("twin", "chexpert", "--out", str(tmp_path / "x"), "--n", "3", "--shortcut", "-0.1")
    assert res.returncode != 0 and "must be a number in [0, 1], got -0.1" in res.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x").exists()


def test_uncertain_findings_are_drawn_half_the_time():
    drawn = [bool(render(ImageJob("", 48, 48, [], uncertain=["Edema"], image_seed=(s,)))[2])
             for s in range(200)]
    assert 0.38 < np.mean(drawn) < 0.62


# --------------------------------------------------------------------------- COVIDx


def test_covidx_lists_and_sources_shift_intensity(twin_factory):
    root = twin_factory("covidx", n=120, size=64)
    stats = {}
    all_pids = {}
    for split in ("train", "val", "test"):
        df = pd.read_csv(root / f"{split}.txt", sep=" ", header=None, names=["pid", "file", "label", "source"])
        assert set(df.label) <= {"normal", "pneumonia", "COVID-19"}
        for r in df.itertuples():
            assert (root / split / r.file).is_file()
            img = _gray(root / split / r.file)
            stats.setdefault(r.source, []).append((img.mean(), img.std()))
            all_pids.setdefault(r.pid, set()).add(split)
    assert all(len(s) == 1 for s in all_pids.values()), "a patient crosses COVIDx splits"
    means = {k: np.mean([m for m, _ in v]) for k, v in stats.items() if len(v) >= 3}
    assert max(means.values()) - min(means.values()) > 10, means


def test_covidx_binary_vocabulary(twin_factory):
    root = twin_factory("covidx", n=30, size=48, vocabulary="binary")
    labels = set()
    for split in ("train", "val", "test"):
        labels |= {line.split()[2] for line in (root / f"{split}.txt").read_text().splitlines()}
    assert labels <= {"positive", "negative"} and labels


# --------------------------------------------------------------------------- SIIM


def test_siim_rows_dicoms_and_pneumothorax_in_the_real_mask(twin_factory):
    import SimpleITK as sitk

    root = twin_factory("siim", n=80, size=128, seed=1)
    header, lines = read_csv_lines("siim")
    written = (root / "train-rle.csv").read_text().splitlines()
    assert written[0] == "ImageId, EncodedPixels" and set(written[1:]) <= set(lines)
    df = pd.read_csv(root / "train-rle.csv")
    ids = list(dict.fromkeys(df["ImageId"]))
    real_counts = pd.Series([l.split(",")[0] for l in lines]).value_counts()
    assert all((df["ImageId"] == i).sum() == real_counts[i] for i in ids)  # multi-row images kept whole
    files = {p.stem: p for p in root.glob("dicom-images-train/*/*/*.dcm")}
    assert set(files) == set(ids)
    lucency = []
    for image_id in ids:
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(files[image_id])))[0].astype(np.float32)
        rles = [r.strip() for r in df.loc[df["ImageId"] == image_id, " EncodedPixels"] if r.strip() != "-1"]
        if rles:
            m = np.asarray(Image.fromarray(decode_union(rles)).resize((128, 128), Image.NEAREST)) > 0
            if m.sum() > 20:
                lucency.append(img[m].mean() - img[~m].mean())
    assert lucency, "no positive image in the SIIM twin sample"
    assert np.median(lucency) < 0  # the pneumothorax is darker than the rest of the film


def test_real_rle_rows_round_trip():
    _, lines = read_csv_lines("siim")
    rles = [l.split(",", 1)[1].strip() for l in lines]
    positive = [r for r in rles if r != "-1"]
    assert len(positive) == 3576
    for r in positive:  # every row decodes inside the 1024² frame, as runs
        starts, lengths = runs(r)
        assert (starts[1:] > starts[:-1] + lengths[:-1]).all() and starts[-1] + lengths[-1] <= 1024 * 1024
    for r in positive[::6]:  # and a sample round-trips through the pixels
        assert encode(decode(r)) == r
    assert decode("-1").sum() == 0 and encode(decode("-1")) == "-1"
    with pytest.raises(RLEError):
        decode("5 10 1048576 2")


# --------------------------------------------------------------------------- lungs


def test_lung_masks_are_the_drawn_lungs(twin_factory):
    root = twin_factory("lungs", n=10, size=96)
    mont = sorted((root / "Montgomery/CXR_png").glob("*.png"))
    shen = sorted((root / "Shenzhen/CXR_png").glob("*.png"))
    assert len(mont) == 3 and len(shen) == 7
    for p in mont:
        left = _gray(root / "Montgomery/ManualMask/leftMask" / p.name) > 0
        right = _gray(root / "Montgomery/ManualMask/rightMask" / p.name) > 0
        img = _gray(p)
        assert left.shape == img.shape and img.shape[0] > img.shape[1]  # portrait, size varies
        assert left.any() and right.any() and not (left & right).any()
        # patient's left lung is on the image's right
        assert np.nonzero(left)[1].mean() > np.nonzero(right)[1].mean()
        assert img[left | right].mean() < img[~(left | right)].mean()  # lungs are dark
    for p in shen:
        m = _gray(root / "Shenzhen/mask" / p.name.replace(".png", "_mask.png"))
        assert set(np.unique(m)) <= {0, 255} and (m > 0).mean() > 0.1


# --------------------------------------------------------------------------- reproducibility, atomicity, bad input


@pytest.mark.parametrize("dataset", ["nih", "chexpert", "covidx", "siim", "lungs"])
def test_same_seed_is_byte_identical_and_workers_do_not_matter(tmp_path, dataset):
    a = generate(dataset, tmp_path / "a", n=8, seed=4, size=64, workers=1)
    b = generate(dataset, tmp_path / "b", n=8, seed=4, size=64, workers=2)
    c = generate(dataset, tmp_path / "c", n=8, seed=5, size=64, workers=1)
    assert _hashes(a) == _hashes(b)
    assert _hashes(a) != _hashes(c)


def test_existing_folders_are_reused_refused_or_replaced(tmp_path):
    out = generate("nih", tmp_path / "t", n=5, seed=0, size=48, workers=1)
    before = _hashes(out)
    assert generate("nih", out, n=5, seed=0, size=48, workers=1) == out and _hashes(out) == before
    with pytest.raises(TwinError, match="another spec.*n: 5 there vs 6 asked"):
        generate("nih", out, n=6, seed=0, size=48)
    generate("nih", out, n=6, seed=0, size=48, workers=1, force=True)
    assert len(pd.read_csv(out / "Data_Entry_2017.csv")) == 6
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(TwinError, match="not a cxrbench twin"):
        generate("nih", foreign, n=5, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "cxrbench.cli", *args], capture_output=True, text=True, **kw)


def test_cli_bad_input_is_a_clear_error(tmp_path):
    for args, message in [
        (["twin", "mnist", "--out", str(tmp_path / "x"), "--n", "3"], "invalid choice: 'mnist'"),
        (["twin", "nih", "--out", str(tmp_path / "x"), "--n", "0"], "--n must be at least 1"),
        (["twin", "nih", "--out", str(tmp_path), "--n", "3"], "not a cxrbench twin"),
        (["twin", "nih", "--out", str(tmp_path / "x"), "--n", "3", "--difficulty", "2"], "--difficulty must be in [0, 1]"),
    ]:
        res = _cli(*args)
        assert res.returncode != 0 and message in res.stderr, (args, res.stderr)
    assert not (tmp_path / "x").exists()


def test_missing_torchxrayvision_file_is_named(tmp_path, monkeypatch):
    from data_modules.twin import sources

    monkeypatch.setattr(sources, "data_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(sources.MissingSourceError, match="Data_Entry_2017_v2020.csv.gz"):
        generate("nih", tmp_path / "out", n=3, size=48)
    assert not any((tmp_path).glob("*out*"))


def test_a_killed_run_leaves_nothing_that_looks_complete(tmp_path):
    out = tmp_path / "big"
    proc = subprocess.Popen([sys.executable, "-m", "cxrbench.cli", "twin", "nih", "--out", str(out),
                             "--n", "3000", "--size", "256", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".big.partial-*/images_*")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert list(tmp_path.glob(".big.partial-*"))
    res = _cli("twin", "nih", "--out", str(out), "--n", "4", "--size", "48", "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert (out / "twin.json").is_file() and not list(tmp_path.glob(".big.partial-*"))
    assert "rows: 4 images" in res.stdout
