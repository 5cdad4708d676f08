"""Is a number, or a difference between two methods, more than noise? Patient-level bootstrap.

The test images of one split are resampled by *patient* (all images of a drawn patient come
together: follow-up films of one patient are not independent). One set of resamples is drawn per
split and shared by every run on it, so that:

- ``seed_mean_ci``: the CI of a method's metric averaged over its seeds (the leaderboard's number),
  each resample scoring every seed's predictions on the same images;
- ``paired_difference``: method A minus method B on identical resamples of identical test images —
  the paired bootstrap, its CI and a two-sided p-value (the share of resamples on the other side of
  0, doubled). Neither torchmetrics nor the papers' code does this; it is what makes a side-by-side
  table trustworthy.

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


def seed_mean(kind: str, runs: list[tuple[np.ndarray, np.ndarray | None]], idx: np.ndarray | None = None) -> float:
    """The seed-averaged metric of ``runs`` (per seed: values, targets on the same rows), on rows ``idx``."""
    return float(np.mean([score(kind, v if idx is None else v[idx], None if t is None else (t if idx is None else t[idx]))
                          for v, t in runs]))


def seed_mean_boot(kind: str, runs: list[tuple[np.ndarray, np.ndarray | None]],
                   resamples: list[np.ndarray]) -> np.ndarray:
    """The seed-averaged metric on each resample: computed once per method and test set, then shared by
    its CI and every paired comparison it enters (n methods cost n, not n², bootstrap passes)."""
    return np.asarray([seed_mean(kind, runs, idx) for idx in resamples])


def seed_mean_ci(kind: str, runs: list[tuple[np.ndarray, np.ndarray | None]], resamples: list[np.ndarray],
                 alpha: float = 0.05, boot: np.ndarray | None = None) -> tuple[float, float]:
    """CI of the seed-averaged metric. ``runs``: per seed, (values, targets) on the same rows, aligned."""
    boot = seed_mean_boot(kind, runs, resamples) if boot is None else boot
    return _interval(list(boot), alpha)


def paired_difference(kind: str, runs_a: list, runs_b: list, resamples: list[np.ndarray],
                      alpha: float = 0.05, boot_a: np.ndarray | None = None, boot_b: np.ndarray | None = None) -> dict:
    """A − B of the seed-averaged metrics on identical resamples: difference, CI, two-sided p.
    ``boot_a`` / ``boot_b``: each side's ``seed_mean_boot`` on these resamples, when already computed."""
    diff = seed_mean(kind, runs_a) - seed_mean(kind, runs_b)
    boot_a = seed_mean_boot(kind, runs_a, resamples) if boot_a is None else boot_a
    boot_b = seed_mean_boot(kind, runs_b, resamples) if boot_b is None else boot_b
    boot = boot_a - boot_b
    boot = boot[~np.isnan(boot)]
    lo, hi = _interval(list(boot), alpha)
    p = min(1.0, 2 * min(float((boot <= 0).mean()), float((boot >= 0).mean()))) if len(boot) else math.nan
    return {"diff": diff, "ci_low": lo, "ci_high": hi, "p": p, "n_boot": int(len(boot))}
