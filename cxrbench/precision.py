"""Mixed precision with the scores kept in fp32 (issue 33).

``trainer.precision: bf16-mixed`` (Lightning's autocast) runs matmuls and convolutions in bf16, about
15× the fp32 peak of an H100 (``runner/budget.py``), and changes numbers. A head's logits in bf16 keep
8 bits of mantissa: images with nearly equal scores tie and AUC is pulled towards 0.5. So a method's
``fp32_modules`` (its heads) run outside autocast on fp32 inputs, and the losses and scores computed
from their outputs are fp32 too. What precision a run used is part of its recipe (``trainer.precision``
is in the resolved config), so a bf16 run is its own leaderboard row. The configs train in fp32 (the
papers name no precision, and a bf16 row needs its own measurement before it stands beside theirs);
an overlay's ``defaults: {trainer.precision: bf16-mixed}`` runs a suite in bf16. Its CPU check:
``tests/test_precision.py`` (CPU autocast runs bf16 too).
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def run_in_fp32(module: nn.Module, name: str = "") -> nn.Module:
    """Make ``module`` run outside autocast, on its floating inputs cast to fp32 (idempotent). Its
    parameters and state dict are untouched: an fp32 checkpoint loads either way."""
    if getattr(module, "_runs_in_fp32", False):
        return module
    inner = module.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if not torch.is_autocast_enabled(device):
            return inner(*args, **kwargs)
        cast = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        with torch.autocast(device_type=device, enabled=False):
            return inner(*cast, **kwargs)

    module.forward = forward
    module._runs_in_fp32 = True
    return module
