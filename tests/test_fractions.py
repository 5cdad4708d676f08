"""Label fractions: nested, deterministic, stratified; fixed by (fraction, subset seed) alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_modules.io import DataError
from data_modules.splits import label_fraction, stratum_keys


def _keys(n: int, n_strata: int, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n_strata))
    return pd.Series(rng.choice([f"k{i}" for i in range(n_strata)], n, p=p))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), n_strata=st.integers(1, 8), data_seed=st.integers(0, 10**6),
       subset_seed=st.integers(0, 10**6),
       fractions=st.lists(st.floats(0.005, 1.0), min_size=2, max_size=5))
def test_fractions_are_nested_deterministic_and_stratified(n, n_strata, data_seed, subset_seed, fractions):
    keys = _keys(n, n_strata, data_seed)
    rows = np.arange(n) * 3 + 7  # positions of a train split inside a bigger index
    full = pd.Series(index=range(rows.max() + 1), dtype=object)
    full.iloc[rows] = keys.to_numpy()
    subsets = {f: set(label_fraction(rows, full, f, subset_seed)) for f in sorted(fractions)}
    fs = sorted(subsets)
    for a, b in zip(fs, fs[1:]):
        assert subsets[a] <= subsets[b]  # nested
    for f in fs:
        again = set(label_fraction(rows, full, f, subset_seed))
        assert again == subsets[f]  # deterministic
        assert subsets[f] and subsets[f] <= set(rows)
        if len(subsets[f]) > 1:
            for k, members in keys.groupby(keys).groups.items():
                in_k = {rows[i] for i in members}
                got = len(in_k & subsets[f])
                assert abs(got - f * len(in_k)) <= 1, (k, got, f, len(in_k))  # stratified
    assert subsets.get(1.0, set(rows)) == set(rows) or 1.0 not in subsets


def test_other_subset_seed_other_subset_and_training_seed_is_irrelevant():
    import lightning as L

    keys = _keys(1000, 3, 0)
    rows = np.arange(1000)
    L.seed_everything(1)
    a = label_fraction(rows, keys, 0.1, subset_seed=0)
    L.seed_everything(2)
    b = label_fraction(rows, keys, 0.1, subset_seed=0)
    c = label_fraction(rows, keys, 0.1, subset_seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval_is_refused(bad):
    with pytest.raises(DataError, match=r"fraction must be in \(0, 1\]"):
        label_fraction(np.arange(10), _keys(10, 2, 0), bad, 0)


def test_stratum_key_is_the_rarest_positive_label():
    labels = pd.DataFrame({"common": [1, 1, 1, 0, np.nan], "rare": [1, 0, 0, 0, np.nan]}, dtype=float)
    assert stratum_keys(labels).tolist() == ["rare", "common", "common", "negative", "unknown"]
