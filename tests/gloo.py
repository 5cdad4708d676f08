"""Run a function on two CPU processes (gloo) and get rank 0's answer: the harness of the DDP tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp


def _run(rank: int, world: int, folder: str, fn, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=world)
    try:
        answer = fn(rank, world, *args)
        if rank == 0:
            Path(folder, "answer.json").write_text(json.dumps(answer))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def on_two_processes(fn, tmp_path, *args, world: int = 2):
    """``fn(rank, world, *args)`` on ``world`` processes in one process group; returns what rank 0's call
    returned (JSON-able). ``fn`` must be importable (a module-level function)."""
    mp.spawn(_run, args=(world, str(tmp_path), fn, args), nprocs=world, join=True)
    return json.loads(Path(tmp_path, "answer.json").read_text())
