"""Damaged copies of the twins: each damage stops ``setup()`` with a one-line DataError that names the
file, row, column or option at fault (issue 34, the data layer: nothing silent).

One small twin per dataset is made once per session (``twin_factory``, keys shared with the other
DataModule tests); every case copies it into its own tmp_path, damages the copy and asserts the exact
exception class, a message fragment, one line, and that setup stopped before any image was cached
(so before any training step). The last tests show what must keep loading: the undamaged twins,
the real releases' label files (torchxrayvision's copies), and a class excluded by name.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_modules import COVIDx, DataError, Lungs, NIH, SIIM, CheXpert

SMALL = dict(batch_size=4, image_size=32, cache_size=64)
TWINS = {  # the keys other tests use, so one session makes each twin once
    "nih": dict(n=90, size=64),
    "chexpert": dict(n=150, size=64),
    "covidx": dict(n=120, size=64),
    "siim": dict(n=20, size=64),
    "lungs": dict(n=12, size=96),
}
MODULES = {"nih": NIH, "chexpert": CheXpert, "covidx": COVIDx, "siim": SIIM, "lungs": Lungs}
#: Options every case of a dataset starts from: CheXpert's default view (PA) leaves the small twin's folds
#: without normal images, which is itself refused (by chexpert_splits).
DEFAULTS = {"chexpert": dict(view="any")}
CHEXPERT = "CheXpert-v1.0-small"


# ------------------------------------------------------------------------------------- editing helpers
def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def _append(path: Path, *lines: str) -> None:
    _write_lines(path, _lines(path) + list(lines))


def _csv(path: Path) -> pd.DataFrame:
    """A label file as strings, blanks kept blank, so that writing it back changes only what a case edits."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _to_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


def _nih_entries_edit(root: Path, edit) -> None:
    df = _csv(root / "Data_Entry_2017.csv")
    _to_csv(edit(df), root / "Data_Entry_2017.csv")


def _nih_image(root: Path, name: str | None = None) -> Path:
    images = sorted(root.glob("images_*/images/*.png"))
    return next(p for p in images if p.name == name) if name else images[0]


# ------------------------------------------------------------------------------------- damages: NIH
def nih_duplicate_row(root):
    _append(root / "Data_Entry_2017.csv", _lines(root / "Data_Entry_2017.csv")[1])


def nih_one_image_two_labels(root):
    df = _csv(root / "Data_Entry_2017.csv")
    twin = df.iloc[[0]].copy()
    twin["Finding Labels"] = "Hernia" if df["Finding Labels"].iloc[0] != "Hernia" else "Mass"
    _to_csv(pd.concat([df, twin]), root / "Data_Entry_2017.csv")


def nih_unknown_finding(root):
    _nih_entries_edit(root, lambda df: df.assign(**{"Finding Labels": df["Finding Labels"].where(df.index != 4,
                                                                                                  "Covid")}))


def nih_no_finding_with_a_finding(root):
    _nih_entries_edit(root, lambda df: df.assign(**{"Finding Labels": df["Finding Labels"].where(df.index != 2,
                                                                                                  "No Finding|Mass")}))


def nih_image_in_both_lists(root):
    _append(root / "test_list.txt", _lines(root / "train_val_list.txt")[0])


def nih_patient_in_both_lists(root):
    """A test-list film given the patient of a train_val film (the twin's patients rarely have two films)."""
    df = _csv(root / "Data_Entry_2017.csv")
    patient = dict(zip(df["Image Index"], df["Patient ID"]))
    test, train_val = _lines(root / "test_list.txt")[0], _lines(root / "train_val_list.txt")[0]
    df.loc[df["Image Index"] == test, "Patient ID"] = patient[train_val]
    _to_csv(df, root / "Data_Entry_2017.csv")


def nih_image_in_no_list(root):
    _write_lines(root / "train_val_list.txt", _lines(root / "train_val_list.txt")[1:])


def nih_box_not_a_number(root):
    lines = _lines(root / "BBox_List_2017.csv")
    fields = lines[1].split(",")
    fields[4] = "abc"  # w
    lines[1] = ",".join(fields)
    _write_lines(root / "BBox_List_2017.csv", lines)


def nih_box_of_another_finding(root):
    """A box whose finding its image's Data_Entry row does not list."""
    from data_modules.nih import NIH8

    findings = dict(zip(*_csv(root / "Data_Entry_2017.csv")[["Image Index", "Finding Labels"]].T.to_numpy()))
    lines = _lines(root / "BBox_List_2017.csv")
    fields = lines[1].split(",")
    fields[1] = next(f for f in NIH8 if f not in findings[fields[0]].split("|") and f != "Infiltration")
    lines[1] = ",".join(fields)
    _write_lines(root / "BBox_List_2017.csv", lines)


def nih_box_of_an_unknown_image(root):
    _append(root / "BBox_List_2017.csv", "99999999_000.png,Mass,10.0,10.0,5.0,5.0,,,")


def nih_16_bit_png(root):
    victim = _nih_image(root)
    w, h = Image.open(victim).size
    Image.fromarray((np.arange(w * h, dtype=np.uint16).reshape(h, w) * 7)).save(victim)


def nih_jpeg_named_png(root):
    victim = _nih_image(root)
    Image.open(victim).convert("L").save(victim, format="JPEG")


def nih_test_split_without_findings(root):
    """Every film of the official test list relabelled "No Finding" (the box file, whose boxes would now
    contradict Data_Entry, removed: protocol official reads it only where it exists)."""
    test = set(_lines(root / "test_list.txt"))
    df = _csv(root / "Data_Entry_2017.csv")
    df.loc[df["Image Index"].isin(test), "Finding Labels"] = "No Finding"
    _to_csv(df, root / "Data_Entry_2017.csv")
    (root / "BBox_List_2017.csv").unlink()


def nih_seed_of_a_one_percent_subset_without_findings(root) -> dict:
    """Options of a 1% label fraction whose training subset holds no finding at all (the issue's probe:
    fraction=0.01 on nih14 left one image, with no positive): the first such subset seed, found with the
    DataModule's own split and fraction functions, so the case does not hang on one twin's draw."""
    from data_modules.splits import label_fraction, stratum_keys

    dm = NIH(root, label_set="nih14", cache=False)
    index = dm.prepare_index()
    train = dm.make_splits(index)["train"]
    keys = stratum_keys(index.labels)
    for seed in range(100):
        rows = label_fraction(train, keys, 0.01, seed)
        if not (index.labels.iloc[rows].to_numpy() == 1).any():
            return dict(label_set="nih14", fraction=0.01, subset_seed=seed)
    raise AssertionError("no 1% subset without findings in 100 seeds")


def nih_cardiomegaly_test_without_positives(root):
    """Every Cardiomegaly film of the official test list relabelled "No Finding" (and the box file, whose
    Cardiomegaly boxes would now contradict Data_Entry, removed: protocol amm does not read it)."""
    test = set(_lines(root / "test_list.txt"))
    df = _csv(root / "Data_Entry_2017.csv")
    hit = df["Image Index"].isin(test) & df["Finding Labels"].str.contains("Cardiomegaly")
    assert hit.any()
    df.loc[hit, "Finding Labels"] = "No Finding"
    _to_csv(df, root / "Data_Entry_2017.csv")
    (root / "BBox_List_2017.csv").unlink()


# ------------------------------------------------------------------------------------- damages: CheXpert
def _chexpert_edit(root, edit, name="train.csv"):
    path = root / CHEXPERT / name
    _to_csv(edit(_csv(path)), path)


def chexpert_label_not_a_number(root):
    _chexpert_edit(root, lambda df: df.assign(Edema=df["Edema"].where(df.index != 2, "yes")))


def chexpert_label_outside_the_vocabulary(root):
    _chexpert_edit(root, lambda df: df.assign(Cardiomegaly=df["Cardiomegaly"].where(df.index != 2, "2.0")))


def chexpert_duplicate_path(root):
    _chexpert_edit(root, lambda df: pd.concat([df, df.iloc[[0]]]))


def chexpert_one_image_two_labels(root):
    def edit(df):
        twin = df.iloc[[0]].copy()
        twin["Edema"] = "1.0" if twin["Edema"].iloc[0] != "1.0" else "0.0"
        return pd.concat([df, twin])

    _chexpert_edit(root, edit)


def chexpert_valid_patient_in_train(root):
    """A valid.csv film moved into the folder of a train.csv patient (the file moved with it)."""
    train, valid = _csv(root / CHEXPERT / "train.csv"), _csv(root / CHEXPERT / "valid.csv")
    patient = train["Path"].iloc[0].split("/")[2]
    old = valid["Path"].iloc[0]
    parts = old.split("/")
    parts[2] = patient
    new = "/".join(parts)
    (root / new).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(root / old, root / new)
    valid.loc[0, "Path"] = new
    _to_csv(valid, root / CHEXPERT / "valid.csv")


def chexpert_view_misspelled(root):
    _chexpert_edit(root, lambda df: df.assign(**{"Frontal/Lateral": df["Frontal/Lateral"].where(df.index != 1,
                                                                                                "frontal")}))


def chexpert_png_named_jpg(root):
    victim = root / _csv(root / CHEXPERT / "train.csv")["Path"].iloc[0]
    Image.open(victim).convert("L").save(victim, format="PNG")


# ------------------------------------------------------------------------------------- damages: COVIDx
def _covidx_line(root, split="train", k=0) -> list[str]:
    return _lines(root / f"{split}.txt")[k].split()


def covidx_test_image_in_train(root):
    pid, name, label, source = _covidx_line(root, "test")
    shutil.copy(root / "test" / name, root / "train" / name)
    _append(root / "train.txt", f"{pid} {name} {label} {source}")


def covidx_test_patient_in_train(root):
    pid, name, label, source = _covidx_line(root, "test")
    shutil.copy(root / "test" / name, root / "train" / f"another-{name}")
    _append(root / "train.txt", f"{pid} another-{name} {label} {source}")


def covidx_one_image_two_labels(root):
    pid, name, label, source = _covidx_line(root)
    other = "normal" if label != "normal" else "pneumonia"
    _append(root / "train.txt", f"{pid} {name} {other} {source}")


def covidx_duplicate_row(root):
    _append(root / "train.txt", _lines(root / "train.txt")[0])


def _covidx_relabel_first(root, label):
    lines = _lines(root / "train.txt")
    fields = lines[0].split()
    fields[2] = label
    lines[0] = " ".join(fields)
    _write_lines(root / "train.txt", lines)


def covidx_unknown_label(root):
    _covidx_relabel_first(root, "covid")


def covidx_mixed_vocabularies(root):
    _covidx_relabel_first(root, "positive")


def covidx_test_all_covid(root):
    lines = [line.split() for line in _lines(root / "test.txt")]
    _write_lines(root / "test.txt", [" ".join([p, n, "COVID-19", s]) for p, n, _, s in lines])


# ------------------------------------------------------------------------------------- damages: SIIM
def siim_duplicate_row(root):
    _append(root / "train-rle.csv", _lines(root / "train-rle.csv")[1])


def siim_empty_and_mask(root):
    positive = next(line for line in _lines(root / "train-rle.csv")[1:] if line.split(",", 1)[1].strip() != "-1")
    _append(root / "train-rle.csv", f"{positive.split(',')[0]}, -1")


def siim_16_bit_dicom(root):
    import SimpleITK as sitk

    victim = next(root.glob("dicom-images-train/**/*.dcm"))
    sitk.WriteImage(sitk.GetImageFromArray(np.full((64, 64), 1000, np.uint16)), str(victim))


def siim_no_positive_to_train_on(root):
    ids = dict.fromkeys(line.split(",", 1)[0] for line in _lines(root / "train-rle.csv")[1:])
    _write_lines(root / "train-rle.csv", [_lines(root / "train-rle.csv")[0], *(f"{i}, -1" for i in ids)])


# ------------------------------------------------------------------------------------- damages: lungs
def _resize(path: Path, dw: int, dh: int) -> None:
    img = Image.open(path)
    img.resize((img.size[0] + dw, img.size[1] + dh), Image.NEAREST).save(path)


def lungs_left_and_right_masks_differ(root):
    _resize(sorted((root / "Montgomery/ManualMask/rightMask").glob("*.png"))[0], 8, 0)


def lungs_mask_of_another_size(root):
    _resize(sorted((root / "Shenzhen/mask").glob("*.png"))[0], 0, -6)


# ------------------------------------------------------------------------------------- the table
#: (case, dataset, damage, DataModule options (or a function of the damaged root giving them), message
#: fragment (regex)). Line numbers are 1-based lines of the file (a CSV's header is line 1).
CASES = [
    # NIH: Data_Entry against itself and the vocabulary
    ("nih-duplicate-row", "nih", nih_duplicate_row, {},
     r"nih: image \S+ is listed twice \(a duplicate row\): Data_Entry_2017.csv line 2 and Data_Entry_2017.csv line 92"),
    ("nih-one-image-two-labels", "nih", nih_one_image_two_labels, {},
     r"image \S+ has two rows that disagree on 'Finding Labels' .*Data_Entry_2017.csv line 2 and .* line 92"),
    ("nih-finding-outside-the-vocabulary", "nih", nih_unknown_finding, {},
     r"Data_Entry_2017.csv line 6, column 'Finding Labels': 'Covid' is not in this release's vocabulary"),
    ("nih-no-finding-with-a-finding", "nih", nih_no_finding_with_a_finding, {},
     r"Data_Entry_2017.csv line 4, column 'Finding Labels': 'No Finding\|Mass' lists findings with 'No Finding'"),
    # NIH: official lists against each other and Data_Entry
    ("nih-image-in-both-official-lists", "nih", nih_image_in_both_lists, {},
     r"image \S+ is listed in two split files .*: train_val_list.txt line 1 and test_list.txt line \d+"),
    ("nih-patient-in-both-official-lists", "nih", nih_patient_in_both_lists, {},
     r"nih: 1 patient\(s\) have images in the 'test_list.txt' split and in 'train_val_list.txt' .*patient-disjoint"),
    ("nih-image-in-no-official-list", "nih", nih_image_in_no_list, {},
     r"1 image\(s\) of Data_Entry are in neither train_val_list.txt nor test_list.txt"),
    # NIH: box file against itself and Data_Entry
    ("nih-box-not-a-number", "nih", nih_box_not_a_number, {},
     r"BBox_List_2017.csv line 2, column 'w': 'abc' is not a number; expected box pixels"),
    ("nih-box-of-another-finding", "nih", nih_box_of_another_finding, {},
     r"BBox_List_2017.csv line 2: a box of finding '\w+' on image \S+, whose Data_Entry findings are"),
    ("nih-box-of-an-unknown-image", "nih", nih_box_of_an_unknown_image, {},
     r"BBox_List_2017.csv line \d+: box image '99999999_000.png' has no row in Data_Entry"),
    # NIH: image formats
    ("nih-16-bit-png", "nih", nih_16_bit_png, {},
     r"image \S+\.png is a PNG of mode I;16 \(16 bits\); expected PNG images, 8-bit"),
    ("nih-16-bit-png-without-cache", "nih", nih_16_bit_png, dict(cache=False),
     r"image \S+\.png is a PNG of mode I;16 \(16 bits\); expected PNG images, 8-bit"),
    ("nih-jpeg-named-png", "nih", nih_jpeg_named_png, {},
     r"image \S+\.png is a JPEG of mode L \(8 bits per channel\); expected PNG images"),
    # NIH: what the splits can teach and score
    ("nih-fraction-leaves-nothing-to-learn", "nih", None, nih_seed_of_a_one_percent_subset_without_findings,
     r"nih: the training split has no positive of any class \(split 'train', \d images at label fraction 0.01; "
     r"Atelectasis 0\+/\d-.*\): nothing to learn the task from. Fix: use a larger label fraction"),
    ("nih-test-split-without-findings", "nih", nih_test_split_without_findings, {},
     r"nih: the test split has no positive of any class \(split 'test', \d+ images; .*\): AUC and the operating "
     r"points need both"),
    ("nih-cardiomegaly-test-without-positives", "nih", nih_cardiomegaly_test_without_positives,
     dict(protocol="amm", label_set="cardiomegaly"),
     r"the 'Cardiomegaly' task needs Cardiomegaly-negative and Cardiomegaly-positive images in the test split; "
     r"it has \d+ Cardiomegaly-negative and 0 Cardiomegaly-positive"),
    # CheXpert
    ("chexpert-label-not-a-number", "chexpert", chexpert_label_not_a_number, {},
     r"chexpert: train.csv line 4, column 'Edema': 'yes' is not a number; expected 1 \(positive\), 0 \(negative\), "
     r"-1 \(uncertain\) or blank"),
    ("chexpert-label-outside-the-vocabulary", "chexpert", chexpert_label_outside_the_vocabulary, {},
     r"train.csv line 4, column 'Cardiomegaly': 2.0 is not a value this release uses"),
    ("chexpert-duplicate-path", "chexpert", chexpert_duplicate_path, {},
     r"image CheXpert-v1.0-small/train/\S+ is listed twice \(a duplicate row\): train.csv line 2 and "
     r"train.csv line 152"),
    ("chexpert-one-image-two-labels", "chexpert", chexpert_one_image_two_labels, {},
     r"has two rows that disagree on 'Edema' .*train.csv line 2 and train.csv line 152"),
    ("chexpert-valid-patient-in-train", "chexpert", chexpert_valid_patient_in_train, dict(protocol="official"),
     r"chexpert: 1 patient\(s\) have images in the 'valid' split and in 'train' \(e.g. patient patient\d+: "
     r"valid.csv line 2 and train.csv line 2\)"),
    ("chexpert-view-misspelled", "chexpert", chexpert_view_misspelled, {},
     r"train.csv line 3, column 'Frontal/Lateral': 'frontal' is not in this release's vocabulary"),
    ("chexpert-png-named-jpg", "chexpert", chexpert_png_named_jpg, {},
     r"image \S+\.jpg is a PNG of mode L \(8 bits per channel\); expected JPEG images"),
    # COVIDx
    ("covidx-test-image-in-train", "covidx", covidx_test_image_in_train, {},
     r"covidx: image \S+ is listed in two split files .*: train.txt line \d+ and test.txt line 1"),
    ("covidx-test-patient-in-train", "covidx", covidx_test_patient_in_train, {},
     r"covidx: 1 patient\(s\) have images in the 'test' split and in 'train' \(e.g. patient \S+: test.txt line 1 and "
     r"train.txt line \d+\)"),
    ("covidx-one-image-two-labels", "covidx", covidx_one_image_two_labels, {},
     r"image \S+ has two rows that disagree on 'label' .*train.txt line 1 and train.txt line \d+"),
    ("covidx-duplicate-row", "covidx", covidx_duplicate_row, {},
     r"image \S+ is listed twice \(a duplicate row\): train.txt line 1 and train.txt line \d+"),
    ("covidx-label-outside-the-vocabulary", "covidx", covidx_unknown_label, {},
     r"covidx: train.txt line 1, field 3 \(label\): 'covid' is not a COVIDx label"),
    ("covidx-mixed-vocabularies", "covidx", covidx_mixed_vocabularies, {},
     r"train.txt line 1, field 3 \(label\): 'positive' mixes the two vocabularies \(1 such row"),
    ("covidx-test-split-of-one-class", "covidx", covidx_test_all_covid, dict(task="covid_vs_rest"),
     r"the 'COVID-19' task needs COVID-19-negative and COVID-19-positive images in the test split; it has 0 "
     r"COVID-19-negative"),
    # SIIM
    ("siim-duplicate-row", "siim", siim_duplicate_row, {},
     r"siim: \(ImageId, EncodedPixels\) pair .* is listed twice \(a duplicate row\): train-rle.csv line 2 and "
     r"train-rle.csv line \d+"),
    ("siim-empty-and-a-mask", "siim", siim_empty_and_mask, {},
     r"siim: ImageId \S+ has '-1' \(no pneumothorax\) on train-rle.csv line \d+ and a mask on train-rle.csv line \d+"),
    ("siim-16-bit-dicom", "siim", siim_16_bit_dicom, {},
     r"image \S+\.dcm is a DICOM of mode I;16 \(16 bits\); expected DICOM/PNG images, 8-bit"),
    ("siim-no-positive-to-train-on", "siim", siim_no_positive_to_train_on, {},
     r"siim: the training split \(\d+ images\) has no image with a non-empty mask"),
    # lung masks against their images
    ("lungs-left-and-right-masks-differ", "lungs", lungs_left_and_right_masks_differ, {},
     r"lungs: the masks of image \S+ differ in size: \S+/leftMask/\S+ is \d+x\d+ \(w x h\), \S+/rightMask/\S+ is"),
    ("lungs-mask-of-another-size", "lungs", lungs_mask_of_another_size, {},
     r"lungs: mask \S+_mask.png is \d+x\d+ \(w x h\) but its image \S+\.png is \d+x\d+ \(w x h\)"),
]


@pytest.fixture(scope="module")
def twins(twin_factory):
    return {name: twin_factory(name, **spec) for name, spec in TWINS.items()}


def _copy(twins, dataset: str, tmp_path: Path) -> Path:
    root = tmp_path / dataset
    shutil.copytree(twins[dataset], root)
    return root


@pytest.mark.parametrize("case, dataset, damage, options, message", CASES, ids=[c[0] for c in CASES])
def test_a_damaged_release_stops_setup_with_a_one_line_message(twins, tmp_path, case, dataset, damage, options,
                                                               message):
    root = _copy(twins, dataset, tmp_path)
    if damage is not None:
        damage(root)
    if callable(options):
        options = options(root)
    cache = tmp_path / "cache"
    dm = MODULES[dataset](root, cache_dir=str(cache), **{**SMALL, **DEFAULTS.get(dataset, {}), **options})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # named exclusions of the small twins: not what these cases test
        with pytest.raises(DataError, match=message) as err:
            dm.setup()
    assert type(err.value) is DataError
    assert "\n" not in str(err.value), str(err.value)
    assert not list(cache.glob("*.u8")), "setup stopped only after images were cached"


def test_a_cache_built_outside_setup_checks_the_image_formats_too(twins, tmp_path):
    """``cxrbench cache`` builds through ``image_cache().ensure()``, not ``setup()``: the same check
    refuses a 16-bit PNG there, before anything is decoded."""
    root = _copy(twins, "nih", tmp_path)
    nih_16_bit_png(root)
    cache = NIH(root, cache_dir=str(tmp_path / "c"), **SMALL).image_cache()
    with pytest.raises(DataError, match=r"is a PNG of mode I;16 \(16 bits\); expected PNG images, 8-bit"):
        cache.ensure(workers=1)
    assert not list((tmp_path / "c").glob("*.u8"))


# ------------------------------------------------------------------------------------- what still loads
@pytest.mark.parametrize("dataset", sorted(TWINS))
def test_the_undamaged_twins_are_accepted(twins, tmp_path, dataset):
    dm = MODULES[dataset](twins[dataset], cache_dir=str(tmp_path / "c"), **SMALL, **DEFAULTS.get(dataset, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup()
    assert len(dm.splits["train"]) > 0


def test_the_real_label_files_pass_the_release_checks():
    """The label files of the real releases (torchxrayvision's copies) pass every list and vocabulary
    check: none of them holds a duplicate, a conflict, a value outside its vocabulary, and NIH's boxes
    all sit on images whose findings name them."""
    from data_modules.checks import with_lines
    from data_modules.chexpert import check_table
    from data_modules.nih import check_box_rows, check_entries
    from data_modules.siim import check_rle_rows
    from data_modules.twin.sources import real_file

    entries = with_lines(pd.read_csv(real_file("nih_entries")), "Data_Entry_2017_v2020.csv")
    check_entries(entries)
    check_box_rows(with_lines(pd.read_csv(real_file("nih_boxes")), "BBox_List_2017.csv"), entries)
    chexpert = with_lines(pd.read_csv(real_file("chexpert")), "train.csv")
    chexpert["_file"] = "train"
    check_table(chexpert)
    rle = pd.read_csv(real_file("siim"))
    rle.columns = [c.strip() for c in rle.columns]
    rle["EncodedPixels"] = rle["EncodedPixels"].str.strip()
    check_rle_rows(with_lines(rle, "train-rle.csv"))


def test_a_class_a_split_cannot_score_is_excluded_by_name(twins, tmp_path):
    """nih8 on the small twin: classes without a positive in the test split are named in a warning and in
    the data contract's notes, and the run goes on with the others (the metrics leave them out)."""
    from data_modules.splits import ExcludedClassWarning

    dm = NIH(twins["nih"], protocol="official", label_set="nih8", cache_dir=str(tmp_path / "c"), **SMALL)
    index = dm.prepare_index()
    test = dm.make_splits(index)["test"]
    labels = index.labels.iloc[test]
    lacking = [c for c in index.classes if not (labels[c] == 1).any() or not (labels[c] == 0).any()]
    assert 0 < len(lacking) < len(index.classes)  # the twin is small enough to exclude some, not all
    with pytest.warns(ExcludedClassWarning, match=re.escape(f"class(es) {lacking!r} have no positive or no negative in "
                                                            "the test split") + ".*excluded by name"):
        dm.setup()
    assert dm.index.notes["excluded_classes"]["test"] == lacking
    assert dm.contract().notes["excluded_classes"]["test"] == lacking
