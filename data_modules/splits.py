"""Patient-disjoint splits and nested, stratified label fractions.

Splits depend only on the split seed; label fractions only on (fraction, subset seed) and the train
pool, never on the training seed, so every method and every training seed sees the same images.
"""

from __future__ import annotations

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
