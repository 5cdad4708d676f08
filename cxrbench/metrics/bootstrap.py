"""Is a number, or a difference between two methods, more than noise? Patient-level bootstrap.

The test images of one split are resampled by *patient* (all images of a drawn patient come
together: follow-up films of one patient are not independent). One set of resamples is drawn per
split and shared by every run on it, so that:

- ``run_boot``: one run's metric on every resample (``interval`` of it: the run's test-set CI);
- ``paired_seed_difference``: row A minus row B on identical resamples of identical test images —
  the paired bootstrap, its CI and a two-sided p-value (the share of replicates on the other side of
  0, doubled). Neither torchmetrics nor the papers' code does this; it is what makes a side-by-side
  table trustworthy.

A leaderboard cell's interval covers both sources of variance (``run_boot`` + ``two_level_boot``): each
bootstrap replicate draws the cell's seeds (runs) with replacement *and*, within each, the test
patients, so a cell whose seeds disagree gets an interval at least as wide as their spread; one seed
gives the test-set interval alone. Paired comparisons draw the seeds both methods share, with their
per-seed differences (``paired_seed_difference``); ``holm`` adjusts a family's p-values.

Metrics: ``auc`` (macro AUC over the classes with both labels in the resample, by ranks: the
Mann–Whitney statistic, ties counted ½ — what torchmetrics' ``binary_auroc`` gives) and ``mean``
(the mean of a per-image score, e.g. Dice).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

N_BOOT = 1000


def auc_by_ranks(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-class AUC [K] of [N, K] scores vs {0, 1, NaN} targets; NaN where a class lacks a label value."""
    preds, target = np.atleast_2d(preds.T).T, np.atleast_2d(target.T).T
    out = np.full(preds.shape[1], np.nan)
    for k in range(preds.shape[1]):
        known = ~np.isnan(target[:, k])
        y, s = target[known, k], preds[known, k]
        pos = int((y == 1).sum())
        neg = len(y) - pos
        if pos and neg:
            ranks = rankdata(s)
            out[k] = (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg)
    return out


def score(kind: str, values: np.ndarray, target: np.ndarray | None = None) -> float:
    if kind == "auc":
        a = auc_by_ranks(values, target)
        return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan
    if kind == "mean":
        return float(np.nanmean(values)) if len(values) else math.nan
    raise ValueError(f"unknown bootstrap metric {kind!r}: 'auc' or 'mean'")


def patient_resamples(patients, n: int = N_BOOT, seed: int = 0) -> list[np.ndarray]:
    """``n`` row-index arrays, each the rows of patients drawn with replacement (as many as there are)."""
    patients = np.asarray(patients).astype(str)
    uniq, inverse = np.unique(patients, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == i) for i in range(len(uniq))]
    rng = np.random.default_rng([seed, 7])
    out = []
    for _ in range(n):
        drawn = rng.integers(0, len(uniq), len(uniq))
        out.append(np.concatenate([rows_of[i] for i in drawn]))
    return out


def _interval(values: list[float], alpha: float) -> tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)])
    if len(v) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def run_boot(kind: str, values: np.ndarray, target: np.ndarray | None, resamples: list[np.ndarray]) -> np.ndarray:
    """One run's metric on each patient resample of its test set [n_boot]."""
    return np.asarray([score(kind, values[idx], None if target is None else target[idx]) for idx in resamples])


def _seed_draws(n_runs: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_runs] run indices drawn with replacement (all of them, in order, for one run)."""
    if n_runs == 1:
        return np.zeros((n_boot, 1), int)
    return np.random.default_rng([seed, 11]).integers(0, n_runs, (n_boot, n_runs))


def two_level_boot(run_boots: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """The cell's seed mean on each replicate: runs drawn with replacement, each scored on its own
    replicate's patient resample (``run_boot``). [n_boot]"""
    boots = np.stack(run_boots)  # [n_runs, n_boot]
    draws = _seed_draws(len(boots), boots.shape[1], seed)
    return np.nanmean(boots[draws, np.arange(boots.shape[1])[:, None]], axis=1)


def interval(boot: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    return _interval(list(boot), alpha)


def paired_seed_difference(boots_a: dict, boots_b: dict, seed: int = 0, alpha: float = 0.05) -> dict:
    """A − B from per-seed replicates {seed: [n_boot]} on one test set. Seeds both sides have are paired
    (the same seed draw enters both: per-seed differences); otherwise each side's seeds are drawn on their
    own. Returns diff (of the seed means), CI, two-sided p, n_boot and whether the seeds were paired."""
    common = sorted(set(boots_a) & set(boots_b))
    if common:
        d = np.stack([boots_a[s] - boots_b[s] for s in common])
        boot = two_level_boot(list(d), seed)
    else:
        boot = two_level_boot(list(boots_a.values()), seed) - two_level_boot(list(boots_b.values()), seed + 1)
    boot = boot[~np.isnan(boot)]
    lo, hi = _interval(list(boot), alpha)
    p = min(1.0, 2 * min(float((boot <= 0).mean()), float((boot >= 0).mean()))) if len(boot) else math.nan
    return {"ci_low": lo, "ci_high": hi, "p": p, "n_boot": int(len(boot)), "paired_seeds": len(common)}


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate).
    Written here because neither scipy nor torchmetrics has it and statsmodels is not in the stack."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if not len(ok):
        return out
    order = ok[np.argsort(p[ok])]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def format_p(p: float, n_boot: int) -> str:
    """A bootstrap p is no finer than its replicates: 0 prints as '< 1/n_boot'."""
    if math.isnan(p):
        return "–"
    floor = 1.0 / max(n_boot, 1)
    return f"< {floor:.3g}" if p < floor else f"{p:.3f}"
