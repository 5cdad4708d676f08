"""A DDP-correct buffer of per-sample results, keyed by dataset index.

Every metric of cxrbench is a pure function of per-sample arrays; this torchmetrics ``Metric`` only
collects them. States are concatenated across ranks by torchmetrics (uneven per-rank counts are
fine) and de-duplicated by the sample's dataset index, because DistributedSampler pads the last
batch of some ranks with repeats of other ranks' samples.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class SampleStore(Metric):
    """Collects named per-sample tensors (first dim = batch) with each sample's dataset index."""

    full_state_update = False

    def __init__(self, fields: tuple[str, ...], **kwargs):
        super().__init__(**kwargs)
        self.fields = tuple(fields)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        for f in self.fields:
            self.add_state(f, default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, **values: torch.Tensor) -> None:
        index = torch.as_tensor(index, device=self.device).reshape(-1).long()
        if set(values) != set(self.fields):
            raise ValueError(f"SampleStore expects fields {self.fields}, got {sorted(values)}")
        for name, v in values.items():
            v = torch.as_tensor(v, device=self.device)
            if v.shape[0] != index.shape[0]:
                raise ValueError(f"{name} has {v.shape[0]} rows but index has {index.shape[0]}: "
                                 "predictions, targets and indices must have the same length")
            getattr(self, name).append(v.detach())
        self.index.append(index)

    def compute(self) -> dict[str, torch.Tensor]:
        """Samples sorted by index, each index once (padding duplicates dropped)."""
        if isinstance(self.index, list) and len(self.index) == 0:  # nothing seen (after sync: a tensor)
            return {"index": torch.zeros(0, dtype=torch.long), **{f: torch.zeros(0) for f in self.fields}}
        index = _cat(self.index)
        uniq, first = _first_occurrence(index)
        out = {"index": uniq}
        for f in self.fields:
            out[f] = _cat(getattr(self, f))[first]
        return out


def _cat(x) -> torch.Tensor:
    return torch.cat(x) if isinstance(x, list) else x


def _first_occurrence(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(index, stable=True)
    sorted_idx = index[order]
    keep = torch.ones_like(sorted_idx, dtype=torch.bool)
    keep[1:] = sorted_idx[1:] != sorted_idx[:-1]
    return sorted_idx[keep], order[keep]
