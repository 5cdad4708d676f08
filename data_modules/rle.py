"""Kaggle SIIM-ACR run-length encoding: relative, column-major, in a 1024×1024 frame.

Each pair is (gap since the end of the previous run, run length); the first gap is counted from
pixel 0 in column-major (Fortran) order. ``-1`` means an empty mask. An image may have several rows,
whose masks are unioned.
"""

from __future__ import annotations

import numpy as np


class RLEError(ValueError):
    pass


def runs(rle: str, height: int = 1024, width: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Absolute (start, length) of every run, in column-major pixel order, checked against the frame."""
    rle = rle.strip()
    if rle in ("-1", ""):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        values = np.asarray(rle.split(), dtype=np.int64)
    except ValueError as err:
        raise RLEError(f"RLE is not a list of integers: {rle[:60]!r}") from err
    if len(values) % 2:
        raise RLEError(f"RLE has an odd number of values ({len(values)}): {rle[:60]!r}")
    gaps, lengths = values[0::2], values[1::2]
    starts = np.cumsum(gaps + np.concatenate([[0], lengths[:-1]]))
    if (values < 0).any() or (lengths == 0).any() or starts[-1] + lengths[-1] > height * width:
        raise RLEError(f"RLE runs fall outside a {height}x{width} mask or are empty: {rle[:60]!r}")
    return starts, lengths


def decode(rle: str, height: int = 1024, width: int = 1024) -> np.ndarray:
    """One relative RLE string -> uint8 mask [height, width] (1 = pneumothorax)."""
    starts, lengths = runs(rle, height, width)
    # Alternating gap/run counts expanded with np.repeat: no Python loop over runs.
    gaps = starts - np.concatenate([[0], (starts + lengths)[:-1]])
    tail = height * width - (starts[-1] + lengths[-1] if len(starts) else 0)
    counts = np.stack([gaps, lengths], 1).ravel()
    counts = np.append(counts, tail)
    flat = np.repeat(np.arange(len(counts), dtype=np.uint8) % 2, counts)
    return flat.reshape(width, height).T


def decode_union(rles: list[str], height: int = 1024, width: int = 1024) -> np.ndarray:
    out = np.zeros((height, width), np.uint8)
    for r in rles:
        out |= decode(r, height, width)
    return out


def encode(mask: np.ndarray) -> str:
    """uint8/bool mask -> relative RLE string ('-1' when empty)."""
    flat = np.ascontiguousarray(np.asarray(mask, bool).T).ravel().view(np.int8)
    edges = np.flatnonzero(np.diff(flat, prepend=0, append=0))
    if len(edges) == 0:
        return "-1"
    starts, ends = edges[0::2], edges[1::2]
    gaps = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{g} {n}" for g, n in zip(gaps, ends - starts))
