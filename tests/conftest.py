"""Shared fixtures: small twins generated once per test session (per xdist worker)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def twin_factory(tmp_path_factory):
    from data_modules.twin import generate

    made = {}

    def make(dataset: str, n: int = 60, seed: int = 0, size: int = 128, **kw):
        key = (dataset, n, seed, size, tuple(sorted(kw.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"twin_{dataset}") / dataset
            made[key] = generate(dataset, out, n=n, seed=seed, size=size, workers=1, **kw)
        return made[key]

    return make
