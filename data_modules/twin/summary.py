"""A short text summary of a twin folder: its spec, files, and label counts from its own label files."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pandas as pd

from .io import read_manifest


def _count_files(root: Path, patterns: tuple[str, ...]) -> int:
    return sum(1 for pat in patterns for _ in root.rglob(pat))


def summarize(root: str | Path) -> str:
    root = Path(root)
    spec = read_manifest(root)
    if spec is None:
        raise FileNotFoundError(f"{root} is not a cxrbench twin (no twin.json); generate one with `cxrbench twin`")
    ds = spec["dataset"]
    lines = [
        f"twin of {ds} at {root}",
        f"  spec: n={spec['n']} seed={spec['seed']} size={spec['size']} difficulty={spec['difficulty']} "
        f"options={spec['options']} format={spec['format']}",
        f"  image files: {_count_files(root, ('*.png', '*.jpg', '*.dcm'))}",
    ]
    counts: Counter = Counter()
    if ds == "nih":
        df = pd.read_csv(root / "Data_Entry_2017.csv")
        for labels in df["Finding Labels"]:
            counts.update(labels.split("|"))
        boxes = pd.read_csv(root / "BBox_List_2017.csv")
        lines.append(f"  rows: {len(df)} images of {df['Patient ID'].nunique()} patients; "
                     f"{len(boxes)} boxes on {boxes['Image Index'].nunique()} images")
        for f in ("train_val_list.txt", "test_list.txt"):
            lines.append(f"  {f}: {len((root / f).read_text().split())} images")
    elif ds == "chexpert":
        for folder in ("CheXpert-v1.0-small", "CheXpert-v1.0"):
            if not (root / folder).is_dir():
                continue
            for split in ("train", "valid"):
                df = pd.read_csv(root / folder / f"{split}.csv")
                lines.append(f"  {folder}/{split}.csv: {len(df)} rows, {(df['Frontal/Lateral'] == 'Frontal').sum()} frontal")
                if split == "train" and not counts:
                    for col in df.columns[5:]:
                        counts[f"{col} (1/-1)"] = f"{(df[col] == 1).sum()}/{(df[col] == -1).sum()}"
        if (root / "CheXpert" / "test_labels.csv").is_file():
            df = pd.read_csv(root / "CheXpert" / "test_labels.csv")
            lines.append(f"  CheXpert/test_labels.csv (CheXlocalize): {len(df)} images of "
                         f"{df['Path'].str.split('/').str[1].nunique()} patients")
    elif ds == "covidx":
        from ..covidx import SPLITS, choose_list_set, read_list

        lists = choose_list_set(root).files
        for f in (lists[s] for s in SPLITS if s in lists):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the release notes: a twin's own quirks, by design
                df = read_list(f)
            lines.append(f"  {f.name}: {len(df)} images; labels {dict(Counter(df.label))}; "
                         f"sources {dict(Counter(df.source))}")
    elif ds == "siim":
        png = root / "siim-acr-pneumothorax"
        if png.is_dir():
            for name in ("stage_1_train_images.csv", "stage_1_test_images.csv"):
                df = pd.read_csv(png / name)
                lines.append(f"  siim-acr-pneumothorax/{name}: {len(df)} images, {int(df['has_pneumo'].sum())} with "
                             f"pneumothorax (mask PNGs in png_masks/)")
        for name in ("train-rle.csv", "stage_2_train.csv"):
            if (root / name).is_file():
                df = pd.read_csv(root / name)
                df.columns = [c.strip() for c in df.columns]
                pos = df[df["EncodedPixels"].str.strip() != "-1"]
                lines.append(f"  {name}: {len(df)} rows, {df['ImageId'].nunique()} images, "
                             f"{pos['ImageId'].nunique()} with pneumothorax ({len(pos)} positive rows)")
        if (root / "dicom-images-test").is_dir():
            lines.append(f"  dicom-images-test/: {_count_files(root / 'dicom-images-test', ('*.dcm',))} images "
                         "(stage 1's test set)")
    elif ds == "lungs":
        for site, pat in (("Montgomery", "Montgomery/CXR_png/*.png"), ("Shenzhen", "Shenzhen/CXR_png/*.png"),
                          ("Montgomery", "Lung Segmentation/CXR_png/MCUCXR_*.png"),
                          ("Shenzhen", "Lung Segmentation/CXR_png/CHNCXR_*.png")):
            files = list(root.glob(pat))
            if files:
                lines.append(f"  {site} ({pat.split('/CXR_png')[0]}/): {len(files)} images, "
                             f"{sum(f.stem.endswith('_1') for f in files)} abnormal")
        if (root / "Lung Segmentation/masks").is_dir():
            lines.append(f"  Lung Segmentation/masks: {_count_files(root / 'Lung Segmentation/masks', ('*.png',))} masks")
    if counts:
        lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)
