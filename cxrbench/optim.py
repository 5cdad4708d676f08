"""The one optimizer and schedule builder: every family base's ``configure_optimizers`` calls ``build``.

A method states its paper's recipe as an ``OptimizerRecipe`` (``Method.optimizer_recipe``) and, only
where the paper splits them, its parameter groups (``Method.optimizer_groups``); nothing else of the
optimizer is written per method. The no-weight-decay rule is written once, here: with
``exempt_from_decay`` set, 1-D tensors (norms' scales and biases), every ``.bias`` and the parameters
whose names match its patterns decay at 0 (timm's ``param_groups_weight_decay``, what DeiT and
PS-ViT use); ``None`` means every parameter decays at ``weight_decay`` (plain ``torch.optim``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .schedules import lightning_warmup_cosine

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("warmup_cosine", "plateau", "constant")


@dataclass(frozen=True)
class OptimizerRecipe:
    """A paper's optimisation, as arguments.

    optimizer: 'sgd' (momentum, Nesterov when ``nesterov`` and momentum > 0), 'adam' or 'adamw'.
    schedule: 'warmup_cosine' (linear warm-up over ``warmup_epochs`` or ``warmup_fraction`` of the
        steps, then cosine to ``final_ratio`` × lr, stepped per batch), 'plateau' (ReduceLROnPlateau on
        ``plateau_monitor``) or 'constant'.
    exempt_from_decay: None, or name patterns exempt from weight decay beside 1-D tensors and biases.
    """

    optimizer: str
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "warmup_cosine"
    warmup_epochs: float = 0.0
    warmup_fraction: float | None = None
    final_ratio: float = 0.0
    exempt_from_decay: tuple[str, ...] | None = None
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    plateau_monitor: str = "val/loss"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def decay_groups(module: torch.nn.Module, weight_decay: float, exempt: tuple[str, ...]) -> list[dict]:
    """The module's trainable parameters as no-decay and decay groups, each named (``group``)."""
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(module, weight_decay, no_weight_decay_list=tuple(exempt))
    # timm gives one group when weight_decay is 0 (nothing decays), else [no-decay, decay]. The decay group
    # goes first (GMML's and CAMContrast's order): clipping by the global gradient norm sums the norms in
    # group order, so the order is part of a run's exact numbers.
    named = [{**g, "group": "decay" if g.get("weight_decay", 0.0) > 0 else "no_decay"} for g in groups]
    return sorted(named, key=lambda g: g["group"] != "decay")


def build(module, recipe: OptimizerRecipe, groups: list[dict] | None = None):
    """``configure_optimizers``' return value for ``module``: the optimizer over ``groups`` (default:
    every trainable parameter, split by the no-decay rule when the recipe has one) and its schedule."""
    r = recipe
    if groups is None:
        groups = (decay_groups(module, r.weight_decay, r.exempt_from_decay) if r.exempt_from_decay is not None
                  else [{"params": [p for p in module.parameters() if p.requires_grad]}])
    elif r.exempt_from_decay is not None:
        raise ValueError(f"{type(module).__name__}: a recipe's no-decay rule applies to the whole module; "
                         "give either parameter groups or exempt_from_decay")
    if r.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0,
                              weight_decay=r.weight_decay)
    elif r.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=r.lr, weight_decay=r.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=r.lr, weight_decay=r.weight_decay)
    if r.schedule == "constant":
        return opt
    if r.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=r.plateau_factor,
                                                           patience=r.plateau_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": r.plateau_monitor}}
    return {"optimizer": opt,
            "lr_scheduler": lightning_warmup_cosine(module, opt, r.warmup_epochs, r.warmup_fraction, r.final_ratio)}


def recipe_from_hparams(hparams, **overrides) -> OptimizerRecipe:
    """The recipe of a method whose arguments name it (optimizer, lr, momentum, nesterov, weight_decay,
    warmup_epochs, warmup_fraction), with ``overrides`` on top."""
    keys = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "warmup_epochs", "warmup_fraction")
    return OptimizerRecipe(**{**{k: hparams[k] for k in keys if k in hparams}, **overrides})


__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimizerRecipe", "build", "decay_groups", "recipe_from_hparams"]
