"""The benchmark runner: sweep specs -> cells -> runs (local, DDP, or SLURM through submitit)."""

from .spec import Cell, SpecError, load_spec

__all__ = ["Cell", "SpecError", "load_spec"]
