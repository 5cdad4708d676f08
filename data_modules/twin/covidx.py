"""COVIDx CXR twin: list files and images per split, with per-source drift.

No COVIDx metadata ships in torchxrayvision, so rows are synthesised in the release's format
(``patient_id filename label source``) with the sources and label mixes of COVIDx CXR-3; what makes the
held-out-source tests meaningful is that every source has its own film (gamma, contrast, noise,
burned-in markers), so a model trained without a source meets a real distribution shift on it.

``release`` (option; default: Kaggle-style ``train.txt``/``val.txt``/``test.txt`` in ``vocabulary``) writes
the list files of one real release, as its public lists are (github.com/lindawangg/COVID-Net ``labels/``,
Kaggle andyczhao/covidx-cxr2):

- ``cxr4``: ``train.txt``, ``val.txt``, ``test.txt`` with ``positive``/``negative`` (COVIDx CXR-4);
- ``cxr3``: ``train_COVIDx_CXR-3A.txt``, ``test_COVIDx_CXR-3A.txt`` (three-class; images in train/, test/);
- ``cxr2``: ``train_COVIDx9A.txt``, ``test_COVIDx9A.txt``, with ~1.5% of the RSNA rows of the train list
  naming the source ``rnsa`` (V9A's 199 of 13,588);
- ``v7a``: ``train_COVIDx7A.txt``, ``test_COVIDx7A.txt``: the test list's RSNA rows without a source field
  (3 fields) and SIRM rows with a spaced patient id (``COVID 12 COVID(12).png COVID-19 sirm``), as V7A.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import TwinSpec, run_parallel, write_text
from .render import ImageJob, Site, draw_and_save

#: source -> (share of images, P(normal), P(pneumonia), P(COVID-19), film drift)
SOURCES = {
    "rsna": (0.45, 0.60, 0.40, 0.00, Site(gamma=1.00, contrast=1.00, noise=0.010)),
    "bimcv": (0.18, 0.00, 0.00, 1.00, Site(gamma=1.35, contrast=0.85, noise=0.020, offset=0.03, markers=["R", "BIMCV"])),
    "ricord": (0.12, 0.00, 0.00, 1.00, Site(gamma=0.80, contrast=1.15, noise=0.015, markers=["PORTABLE", "AP"])),
    "cohen": (0.08, 0.05, 0.20, 0.75, Site(gamma=1.10, contrast=1.25, noise=0.025, offset=-0.04, markers=["L"])),
    "sirm": (0.07, 0.00, 0.00, 1.00, Site(gamma=0.90, contrast=0.90, noise=0.018, offset=0.05, markers=["SIRM"])),
    "actmed": (0.05, 0.00, 0.00, 1.00, Site(gamma=1.20, contrast=1.10, noise=0.022, markers=["ACT"])),
    "stonybrook": (0.05, 0.00, 0.00, 1.00, Site(gamma=0.95, contrast=0.95, noise=0.013, offset=-0.02, markers=["SBU", "R"])),
}
CLASSES = ("normal", "pneumonia", "COVID-19")
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def _filename(source: str, pid: str, k: int, rng) -> str:
    if source == "rsna":
        return f"{pid}.png" if k == 0 else f"{pid}_{k}.png"
    if source == "bimcv":
        return f"sub-{pid}_ses-E{rng.integers(10000, 99999)}_run-{k + 1}_bp-chest_vp-ap_cr.png"
    if source == "ricord":
        return f"MIDRC-RICORD-1C-{pid}-{rng.integers(10000, 99999)}-{k}.png"
    return f"{source}-{pid}-{k}.{'jpg' if source in ('cohen', 'sirm') else 'png'}"


#: release -> (list file suffix, binary labels, a val list)
RELEASES = {"cxr4": (None, True, True), "cxr3": ("_COVIDx_CXR-3A", False, False), "cxr2": ("_COVIDx9A", False, False),
            "v7a": ("_COVIDx7A", False, False)}
RNSA_SHARE = 0.015  # V9A: 199 of its 13,588 RSNA train rows say 'rnsa'


def write(root: Path, spec: TwinSpec, workers: int | None) -> None:
    release = spec.options.get("release")
    if release is None:
        suffix, binary, with_val = None, spec.options.get("vocabulary", "3class") == "binary", True
    else:
        suffix, binary, with_val = RELEASES[release]
    rng = np.random.default_rng([spec.seed, 21])
    names = list(SOURCES)
    shares = np.array([SOURCES[s][0] for s in names])
    rows, jobs = [], []
    k_img, pid_counter = 0, 0
    while k_img < spec.n:
        source = names[rng.choice(len(names), p=shares / shares.sum())]
        share, *probs, site = SOURCES[source]
        label = CLASSES[rng.choice(3, p=np.array(probs) / sum(probs))]
        pid_counter += 1
        pid = rng.bytes(4).hex() + f"-{pid_counter:05d}" if source == "rsna" else f"S{pid_counter:05d}"
        for k in range(min(spec.n - k_img, 1 + int(rng.random() < 0.25))):  # some patients have 2 films
            rows.append((pid, _filename(source, pid, k, rng), label, source))
            k_img += 1
    patients = sorted({r[0] for r in rows})
    perm = rng.permutation(len(patients))
    cut = np.cumsum([int(round(f * len(patients))) for _, f in SPLITS])
    split_of = {}
    for rank, p in zip(perm, patients):
        split_of[p] = SPLITS[int(np.searchsorted(cut, rank, side="right"))][0] if rank < cut[-1] else "train"
    if not with_val:  # releases without a val list: its patients train
        split_of = {p: "train" if s == "val" else s for p, s in split_of.items()}
    out = {name: [] for name, _ in SPLITS}
    misspelled = False
    for pid, fname, label, source in rows:
        split = split_of[pid]
        anatomy = int(pid.split("-")[-1].lstrip("S"))
        written = ("positive" if label == "COVID-19" else "negative") if binary else label
        listed_pid, listed_source = pid, source
        if release == "v7a" and source == "sirm":  # V7A/V8A: patient 'COVID 12', file 'COVID(12).png'
            listed_pid = f"COVID {anatomy}"
            fname = f"COVID({anatomy}).png" if fname.endswith("-0.jpg") else f"COVID({anatomy})_{fname[-5]}.png"
        fields = [listed_pid, fname, written, listed_source]
        if release == "v7a" and source == "rsna" and split == "test":
            fields = fields[:3]  # V3–V7 test lists: the RSNA rows have no source field
        if release == "cxr2" and source == "rsna" and split == "train" and (not misspelled or rng.random() < RNSA_SHARE):
            fields[3] = "rnsa"  # the first RSNA train row, then ~1.5% of them: even a small twin has one
            misspelled = True
        out[split].append(" ".join(fields))
        site = SOURCES[source][-1]
        jobs.append(ImageJob(
            path=str(root / split / fname), height=spec.size, width=spec.size,
            findings={"normal": [], "pneumonia": ["Pneumonia"], "COVID-19": ["COVID-19"]}[label],
            anatomy_seed=(spec.seed, 22, anatomy),
            image_seed=(spec.seed, 23, len(jobs)), difficulty=spec.difficulty, site=site,
            fmt="jpg" if fname.endswith(".jpg") else "png",
        ))
    for name, _ in SPLITS:
        if name == "val" and not with_val:
            continue
        list_name = f"{name}.txt" if suffix is None else f"{name}{suffix}.txt"
        write_text(root / list_name, "".join(line + "\n" for line in out[name]))
    run_parallel(draw_and_save, jobs, workers, "covidx twin")
