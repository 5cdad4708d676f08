"""A short text summary of a twin folder: its spec, files, and label counts from its own label files."""

from __future__ import annotations

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
        for split in ("train", "valid"):
            df = pd.read_csv(root / "CheXpert-v1.0-small" / f"{split}.csv")
            lines.append(f"  {split}.csv: {len(df)} rows, {(df['Frontal/Lateral'] == 'Frontal').sum()} frontal")
            if split == "train":
                for col in df.columns[5:]:
                    counts[f"{col} (1/-1)"] = f"{(df[col] == 1).sum()}/{(df[col] == -1).sum()}"
    elif ds == "covidx":
        for split in ("train", "val", "test"):
            df = pd.read_csv(root / f"{split}.txt", sep=" ", header=None, names=["pid", "file", "label", "source"])
            lines.append(f"  {split}.txt: {len(df)} images; labels {dict(Counter(df.label))}; sources {dict(Counter(df.source))}")
    elif ds == "siim":
        df = pd.read_csv(root / "train-rle.csv")
        pos = df[df[" EncodedPixels"].str.strip() != "-1"]
        lines.append(f"  train-rle.csv: {len(df)} rows, {df['ImageId'].nunique()} images, "
                     f"{pos['ImageId'].nunique()} with pneumothorax ({len(pos)} positive rows)")
    elif ds == "lungs":
        for site, pat in (("Montgomery", "Montgomery/CXR_png/*.png"), ("Shenzhen", "Shenzhen/CXR_png/*.png")):
            files = list(root.glob(pat))
            lines.append(f"  {site}: {len(files)} images, {sum(f.stem.endswith('_1') for f in files)} abnormal")
    if counts:
        lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)
