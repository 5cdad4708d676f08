"""Shared fixtures: small twins generated once per test session (per xdist worker)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two xdist workers on two cores: a torch thread pool per worker (and per cell
    # subprocess, through OMP_NUM_THREADS) only makes them fight; measured 5–20× slower training steps.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


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


#: Tests that train for real or drive whole sweeps (the bulk of the suite's minutes). `make test-fast`
#: (pytest -m "not slow") leaves them out for an inner loop; `make test` and CI run everything.
SLOW = ("learns", "killed_sweep", "two_launchers", "times_out", "parallel_cells", "pipeline_pretrain", "ddp",
        "resumed_cell", "planted_pickle", "cli_fit_then_test", "configs_run_through_the_cli")


def pytest_collection_modifyitems(items):
    for item in items:
        if any(k in item.name for k in SLOW):
            item.add_marker(pytest.mark.slow)
