"""Patient-disjoint splits and nested, stratified label fractions.

Splits depend only on the split seed; label fractions only on (fraction, subset seed) and the train
pool, never on the training seed, so every method and every training seed sees the same images.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .io import DataError


def _patient_keys(patients: pd.Series, strata: pd.Series) -> pd.Series:
    """Each patient's most frequent stratum key (vectorised: no Python call per patient)."""
    counts = pd.DataFrame({"p": patients.to_numpy(), "k": strata.to_numpy()}).value_counts()
    top = counts.reset_index().drop_duplicates("p")  # value_counts sorts by count, descending
    return pd.Series(top["k"].to_numpy(), index=top["p"].to_numpy())


def split_patients(patients: pd.Series, shares: dict[str, float], seed: int,
                   forced: dict[str, set] | None = None, strata: pd.Series | None = None) -> dict[str, np.ndarray]:
    """Row positions per split, patient-disjoint, with ``shares`` of the *images* in each split.

    Patients are dealt in random order to the split furthest below its image target, so a patient
    with many follow-ups does not skew the shares. ``forced`` pins patients to a split (e.g. the RGT
    protocol's box-image patients go to test); their images count toward that split. With ``strata``
    (one key per row), patients are dealt per stratum of their most frequent key, so each split keeps
    the label proportions.
    """
    names = list(shares)
    total = sum(shares.values())
    pinned = {p: s for s, ps in (forced or {}).items() for p in ps}
    rng = np.random.default_rng([seed, 101])
    sizes = patients.value_counts()
    if strata is not None:
        key = _patient_keys(patients, strata)
        groups = [list(g) for _, g in sorted(key.groupby(key).groups.items(), key=lambda kv: str(kv[0]))]
    else:
        groups = [list(sizes.index)]
    assign: dict = {}
    for group in groups:
        group = sorted(group, key=str)
        n = sum(int(sizes[p]) for p in group)
        deficit = {s: shares[s] / total * n for s in names}
        free = []
        for p in group:
            if p in pinned:
                assign[p] = pinned[p]
                deficit[pinned[p]] -= int(sizes[p])
            else:
                free.append(p)
        for j in rng.permutation(len(free)):
            p = free[j]
            s = max(names, key=deficit.__getitem__)
            assign[p] = s
            deficit[s] -= int(sizes[p])
    split_of = patients.map(assign).to_numpy()
    return {s: np.flatnonzero(split_of == s) for s in names}


def grouped_folds(patients: pd.Series, strata: pd.Series, k: int, seed: int) -> np.ndarray:
    """Fold number per row: patients dealt round-robin within strata (stratified group k-fold)."""
    key = _patient_keys(patients, strata)
    rng = np.random.default_rng([seed, 103])
    fold_of = {}
    counts = np.zeros(k)
    for _, members in sorted(key.groupby(key).groups.items(), key=lambda kv: str(kv[0])):
        members = sorted(members, key=str)
        for j in rng.permutation(len(members)):
            f = int(np.argmin(counts + rng.random(k) * 1e-3))
            fold_of[members[j]] = f
            counts[f] += 1
    return patients.map(fold_of).values.astype(int)


def stratum_keys(labels: pd.DataFrame) -> pd.Series:
    """One stratification key per row: the rarest positive label, 'negative', or 'unknown'."""
    values = labels.to_numpy(dtype=float)
    prevalence = np.nansum(values == 1, axis=0)
    order = np.argsort(prevalence, kind="stable")  # rarest first
    keys = np.full(len(labels), "negative", dtype=object)
    keys[np.isnan(values).all(axis=1)] = "unknown"
    for c in order[::-1]:  # the rarest positive label wins: write it last
        keys[values[:, c] == 1] = labels.columns[c]
    return pd.Series(keys, index=labels.index)


def fraction_ranks(keys: pd.Series, subset_seed: int) -> np.ndarray:
    """A rank in [0, 1) per row; the subset at fraction f is {rank < f}.

    Within each stratum, rows are shuffled by the subset seed and ranked (k + 0.5) / n, so every
    subset holds about f of each stratum and the subsets are nested by construction.
    """
    rng = np.random.default_rng([subset_seed, 107])
    ranks = np.empty(len(keys))
    values = keys.to_numpy()
    for key in sorted(pd.unique(values), key=str):
        idx = np.flatnonzero(values == key)
        perm = idx[rng.permutation(len(idx))]
        ranks[perm] = (np.arange(len(idx)) + rng.random()) / len(idx)
    return ranks


def label_fraction(rows: np.ndarray, keys: pd.Series, fraction: float, subset_seed: int) -> np.ndarray:
    """The nested, stratified subset of ``rows`` (positions) at ``fraction`` (at least one row)."""
    if not (0 < fraction <= 1):
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.asarray(rows)
    ranks = fraction_ranks(keys.iloc[rows].reset_index(drop=True), subset_seed)
    keep = ranks < fraction
    if not keep.any():
        keep[np.argmin(ranks)] = True
    return np.asarray(rows)[keep]


def check_pretraining_rows(data, exclude_sources: list[str] | tuple = (), check_patients: bool = True) -> None:
    """Refuse a data contract whose pretraining rows (train + val) include evaluation images (test,
    shift, loc), their patients, or a source in ``exclude_sources`` (SS-CXR §4.1: COHEN, ACTMED).
    A data check, so it lives here; GMML calls it on the contract it is handed."""
    splits = data.split_rows or {}
    if "train" not in splits:
        return
    used = np.union1d(splits["train"], splits.get("val", np.array([], int)))
    meta = data.images
    # a patient is (source, id) where sources exist: ids are per-site strings and may repeat across sites
    patient = meta["patient_id"].astype(str)
    if "source" in meta.columns:
        patient = meta["source"].astype(str) + ":" + patient
    for name in ("test", "shift", "loc"):
        rows = splits.get(name)
        if rows is None or not len(rows):
            continue
        both = np.intersect1d(used, rows)
        if len(both):
            raise DataError(f"{data.dataset}: the pretraining split (train + val) would include {len(both)} image(s) of "
                            f"the {name!r} split (e.g. {meta['path'].iloc[both[0]]}): pretraining must never see "
                            "evaluation images; fix the DataModule's splits")
        if check_patients:
            pids = set(patient.iloc[used]) & set(patient.iloc[rows])
            if pids:
                raise DataError(f"{data.dataset}: {len(pids)} patient(s) of the {name!r} split also have images in the "
                                f"pretraining split (e.g. {sorted(pids)[0]}); set check_patients: false only if "
                                "that is intended")
    if exclude_sources:
        if "source" not in meta.columns:
            raise DataError(f"{data.dataset}: exclude_sources {list(exclude_sources)} given, but this dataset has no "
                            "'source' column")
        src = meta["source"].iloc[used]
        bad = src[src.isin(list(exclude_sources))]
        if len(bad):
            raise DataError(f"{data.dataset}: the pretraining split holds {len(bad)} image(s) of held-out source(s) "
                            f"{sorted(set(bad))}: set data.init_args.held_out_sources: {list(exclude_sources)}")


# ------------------------------------------------------------------------------ label coverage
#: The splits a run learns from (train, after the label fraction) and scores (val picks the checkpoint
#: and the operating point, test is published). shift and loc are extra reports, not checked here.
COVERAGE_SPLITS = ("train", "val", "test")
_SPLIT_WORDS = {"train": "training split", "val": "validation split", "test": "test split"}


class ExcludedClassWarning(UserWarning):
    """A class a split cannot teach or score (no positive or no negative there), named in setup."""


def _class_words(name: str) -> tuple[str, str]:
    """How a message names a binary task's negatives and positives."""
    return ("normal", "abnormal") if name.lower() == "abnormal" else (f"{name}-negative", f"{name}-positive")


def _counts(values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    part = values[np.asarray(rows, int)]
    return (part == 1).sum(axis=0), (part == 0).sum(axis=0)


def check_label_coverage(index, splits: dict[str, np.ndarray], fraction: float = 1.0) -> dict[str, list[str]]:
    """One rule for every dataset, applied in setup before any image is read.

    A class *counts* in a split when the split holds a positive and a negative of it (known labels; a
    multi-class task's classes one-vs-rest): the training subset (after the label fraction) can learn
    it, the validation and test splits can score it (AUC needs both).

    - A split that cannot give the task at all is a ``DataError``, in train and test (and in val for a
      one-class task, whose validation split picks the checkpoint and operating point on that class):
      a one-class or multi-class task where no class counts (CheXpert's abnormal folds without normal
      images; NIH's cardiomegaly test split without positives, which today publishes accuracy 1.000;
      a COVIDx test split of one class), a multi-label task without a positive of any class
      (``fraction=0.01`` of nih14 leaving one image without findings; a test split of "No Finding").
    - Every class that does not count in a split is named: an ``ExcludedClassWarning`` and
      ``index.notes['excluded_classes'][split]`` (handed on in the data contract's ``notes``). In val
      and test that is an exclusion by name: the metrics leave a class the split cannot score out of
      the mean (``cxrbench.metrics.classification.per_class``). A class the training subset cannot
      teach is still scored at test where the test split can score it; its warning says to read that
      score as an untrained class's.

    Why exclusion and not an error for each such class: a multi-label release has classes too rare
    for a small subset (Hernia, 0.2% of NIH, has no positive in the 800-image smoke twin's training
    split), and refusing those runs would refuse the comparison the other 13 classes still make. Why
    a multi-label split needs only a positive of some class, not a class that counts: a split whose
    images all carry the same findings (a hand-made 4-image NIH folder of "Mass" films in
    tests/test_datamodules_twin.py) has nothing to rank but is named class by class; a split without
    any positive is the case that silently published numbers. Why val warns for several classes: its
    loss still picks checkpoints, and a small dataset's validation split (one image of a 40-image
    twin) cannot hold a positive of each of 14 findings.
    Segmentation tasks: the training split needs an image with a non-empty mask (else ``DataError``);
    a scored split without one only warns (its Dice over empty truths is defined, the positives-only
    Dice is not). Returns the excluded classes per split.
    """
    if index.task == "segmentation":
        _check_mask_coverage(index, splits)
        return {}
    values = index.labels.to_numpy(np.float64)
    classes = list(index.classes)
    excluded: dict[str, list[str]] = {}
    for split in COVERAGE_SPLITS:
        rows = splits.get(split)
        if rows is None or len(rows) == 0:
            continue  # an empty split is reported by the DataModule, with the filters that emptied it
        pos, neg = _counts(values, rows)
        lacking = [c for c, p, n in zip(classes, pos, neg) if p == 0 or n == 0]
        required = split != "val" or len(classes) == 1
        if required and not _gives_the_task(index.task, pos, neg):
            raise DataError(_no_class_message(index.name, index.task, classes, split, len(rows), pos, neg, fraction))
        if lacking:
            excluded[split] = lacking
            warnings.warn(_excluded_message(index.name, split, lacking, classes, pos, neg), ExcludedClassWarning,
                          stacklevel=3)
    index.notes["excluded_classes"] = excluded
    return excluded


def _gives_the_task(task: str, pos: np.ndarray, neg: np.ndarray) -> bool:
    """Whether a split's per-class positive and negative counts leave anything to learn or score (see
    ``check_label_coverage``): a class that counts, or for a multi-label task any positive."""
    if task == "multilabel" and len(pos) > 1:
        return bool((pos > 0).any())
    return bool(((pos > 0) & (neg > 0)).any())


def _fraction_note(split: str, n: int, fraction: float) -> str:
    if split == "train" and fraction < 1:
        return f", {n} images at label fraction {fraction:g}"
    return f", {n} images"


def _no_class_message(dataset: str, task: str, classes: list[str], split: str, n: int, pos, neg,
                      fraction: float) -> str:
    words = _SPLIT_WORDS[split]
    why = ("nothing to learn the task from" if split == "train" else
           "AUC and the operating points need both, and a metric without them would publish a meaningless number")
    fix = ("use a larger label fraction or dataset" if split == "train" and fraction < 1 else
           "use a larger dataset, other split options (protocol, fold, val_share, held-out sources) or filters")
    where = f"split {split!r}{_fraction_note(split, n, fraction)}"
    if len(classes) == 1:
        neg_w, pos_w = _class_words(classes[0])
        return (f"{dataset}: the {classes[0]!r} task needs {neg_w} and {pos_w} images in the {words}; it has "
                f"{int(neg[0])} {neg_w} and {int(pos[0])} {pos_w} images ({where}): {why}. Fix: {fix}")
    counts = ", ".join(f"{c} {int(p)}+/{int(q)}-" for c, p, q in zip(classes, pos, neg))
    lacks = "no positive of any class" if task == "multilabel" else "no class with both a positive and a negative"
    return f"{dataset}: the {words} has {lacks} ({where}; {counts}): {why}. Fix: {fix}"


def _excluded_message(dataset: str, split: str, lacking: list[str], classes: list[str], pos, neg) -> str:
    counts = ", ".join(f"{c} {int(pos[classes.index(c)])}+/{int(neg[classes.index(c)])}-" for c in lacking)
    left = f"{len(classes) - len(lacking)} of {len(classes)} classes left"
    if split == "train":
        meaning = (f"the training subset cannot teach them ({left}); read their test scores, where the test split "
                   "has them, as those of an untrained class")
    else:
        meaning = f"excluded by name ({left}): the metrics cannot score them there and leave them out of the mean"
    return (f"{dataset}: class(es) {lacking} have no positive or no negative in the {_SPLIT_WORDS[split]} "
            f"({counts}); {meaning}")


def _check_mask_coverage(index, splits: dict[str, np.ndarray]) -> None:
    """Segmentation: an image with a non-empty mask in the training split; a warning for scored splits
    without one."""
    if index.masks is None:
        return
    has_mask = np.array([m is not None and len(m[1]) > 0 for m in index.masks], bool)
    for split in COVERAGE_SPLITS:
        rows = splits.get(split)
        if rows is None or len(rows) == 0 or has_mask[np.asarray(rows, int)].any():
            continue
        if split == "train":
            raise DataError(f"{index.name}: the training split ({len(rows)} images) has no image with a non-empty "
                            "mask: nothing to learn the segmentation from. Fix: use a larger label fraction or dataset")
        warnings.warn(f"{index.name}: the {_SPLIT_WORDS[split]} ({len(rows)} images) has no image with a non-empty "
                      "mask: its Dice over empty truths is defined, its positives-only Dice is not",
                      ExcludedClassWarning, stacklevel=3)
