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
SLOW = ("learns", "trains_end_to_end", "killed_sweep", "two_launchers", "times_out", "parallel_cells", "pipeline_pretrain", "ddp",
        "resumed_cell", "planted_pickle", "cli_fit_then_test", "configs_run_through_the_cli")


def pytest_collection_modifyitems(items):
    for item in items:
        if any(k in item.name for k in SLOW):
            item.add_marker(pytest.mark.slow)


# ------------------------------------------------------------------------------------ learns tests
#: How every "learns" test is measured (``python tests/measure_learns.py``, table in tests/README.md):
#: CXRBENCH_LEARNS_SEED picks the training seed (default 0, what `make test` runs),
#: CXRBENCH_LEARNS_OUT names a JSON-lines file the test appends its measured numbers to, and
#: CXRBENCH_LEARNS_BROKEN=detach zeroes every gradient of the method under test after each backward
#: (a detached loss): the broken variant each learns test must fail for.
class DetachedLoss:
    """A callback that zeroes every gradient of the module after each backward: the method runs, its
    BatchNorm statistics still adapt to the data, but nothing is learned from its loss."""

    def __new__(cls):
        import lightning as L

        class _DetachedLoss(L.Callback):
            def on_after_backward(self, trainer, pl_module):
                for p in pl_module.parameters():
                    p.grad = None

        return _DetachedLoss()


class Learns:
    def __init__(self, node):
        self.test = node.nodeid
        self.seed = int(os.environ.get("CXRBENCH_LEARNS_SEED", "0"))
        self.broken = os.environ.get("CXRBENCH_LEARNS_BROKEN", "")
        if self.broken not in ("", "detach", "mechanism_off"):
            raise ValueError(f"CXRBENCH_LEARNS_BROKEN={self.broken!r}: expected 'detach', 'mechanism_off' (the test's "
                             "own switch: e.g. RGT's shuffled boxes) or nothing")

    def callbacks(self) -> list:
        """Callbacks for the trainer of the method under test: none, or the broken variant's."""
        return [DetachedLoss()] if self.broken == "detach" else []

    def record(self, **metrics) -> None:
        """Appends the test's measured numbers (before its asserts) for the measurement table."""
        out = os.environ.get("CXRBENCH_LEARNS_OUT")
        if out:
            import json

            row = {"test": self.test, "seed": self.seed, "broken": self.broken,
                   "kernels": os.environ.get("ATEN_CPU_CAPABILITY", "default"),
                   **{k: float(v) for k, v in metrics.items()}}
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")


@pytest.fixture
def learns(request):
    return Learns(request.node)
