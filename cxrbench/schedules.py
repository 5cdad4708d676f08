"""Learning-rate schedules, written once: linear warm-up then cosine decay, stepped every batch."""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                  final_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0 to the base lr over ``warmup_steps``, then cosine to ``final_ratio``·lr."""
    total, warm = max(1, int(total_steps)), max(0, int(warmup_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lightning_warmup_cosine(module, optimizer: torch.optim.Optimizer, warmup_epochs: float = 0.0,
                            warmup_fraction: float | None = None, final_ratio: float = 0.0) -> dict:
    """The ``lr_scheduler`` entry of ``configure_optimizers``: steps from the trainer's estimate,
    warm-up given in epochs or as a fraction of all steps (CAMContrast: 30%)."""
    trainer = module.trainer
    total = max(1, int(trainer.estimated_stepping_batches))
    if warmup_fraction is not None:
        warm = int(total * warmup_fraction)
    else:
        warm = int(total * warmup_epochs / max(1, trainer.max_epochs or 1))
    return {"scheduler": warmup_cosine(optimizer, total, warm, final_ratio), "interval": "step"}
