"""Sweep specs: tasks × methods × seeds × label fractions, with pipelines between cells.

A spec (YAML, in benchmarks/)::

    name: smoke
    scale: smoke                       # written into every result's provenance
    runs_dir: runs/smoke
    data:                              # dataset roots; ${VAR} is expanded from the environment
      nih: {root: .cache/twin/nih-smoke, twin: {n: 600, size: 128, seed: 0}}   # twin: generated if absent
    defaults: {trainer.max_epochs: 6}  # dotted overrides for every cell
    cells:
      - name: amm-cardiomegaly
        task: nih-cardiomegaly
        method: amm
        config: benchmarks/configs/amm_cardiomegaly.yaml
        data: nih
        seeds: [0, 1]
        fractions: [1.0]
        overrides: {model.init_args.backbone: resnet10t}
        needs: {encoder: pretrain}     # optional: another cell's artifact (same seed), usable in
                                       # overrides as ${needs.encoder} (the artifact checkpoint path)

Each (cell, seed, fraction) is one run whose id is derived from its fully resolved config, so the
same work always lands in the same folder and a changed config is a new run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ARTIFACT = "model.ckpt"


class SpecError(ValueError):
    pass


@dataclass
class Cell:
    name: str
    task: str
    method: str
    seed: int
    fraction: float
    config: dict  # resolved LightningCLI config
    data_name: str
    needs: dict[str, str] = field(default_factory=dict)  # role -> run id of the producing cell
    scale: str = ""

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.config, sort_keys=True, default=str)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        return f"{self.name}-s{self.seed}-f{self.fraction:g}-{digest}"


def _set_dotted(cfg: dict, key: str, value) -> None:
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def _expand_env(value):
    if isinstance(value, str):
        def sub(m):
            if m.group(1) not in os.environ:
                raise SpecError(f"environment variable {m.group(1)} is not set (used in {value!r})")
            return os.environ[m.group(1)]
        return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


@dataclass
class Spec:
    name: str
    scale: str
    runs_dir: Path
    data: dict
    cells: list[Cell]
    path: Path


def load_spec(path: str | Path, repo: Path | None = None) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    repo = repo or Path.cwd()
    for key in ("name", "data", "cells"):
        if key not in raw:
            raise SpecError(f"{path}: missing top-level key {key!r} (a spec needs name, data, cells)")
    data = {}
    for name, entry in raw["data"].items():
        entry = dict(entry or {})
        try:
            entry["root"] = _expand_env(entry.get("root", ""))
        except SpecError as err:
            raise SpecError(f"{path}: data.{name}: {err}") from None
        data[name] = entry
    defaults = raw.get("defaults", {}) or {}
    scale = str(raw.get("scale", "full"))
    runs_dir = Path(_expand_env(str(raw.get("runs_dir", f"runs/{raw['name']}"))))
    cells: list[Cell] = []
    by_key: dict[tuple[str, int, float], Cell] = {}
    names = set()
    for i, c in enumerate(raw["cells"]):
        where = f"{path}: cells[{i}]"
        for key in ("name", "task", "method", "config", "data"):
            if key not in c:
                raise SpecError(f"{where}: missing {key!r}")
        if c["name"] in names:
            raise SpecError(f"{where}: duplicate cell name {c['name']!r}")
        names.add(c["name"])
        if c["data"] not in data:
            raise SpecError(f"{where}: data {c['data']!r} is not declared under data: ({sorted(data)})")
        cfg_path = (repo / c["config"]) if not Path(c["config"]).is_absolute() else Path(c["config"])
        if not cfg_path.is_file():
            raise SpecError(f"{where}: config {cfg_path} does not exist")
        base = yaml.safe_load(cfg_path.read_text()) or {}
        for seed in c.get("seeds", [0]):
            for fraction in c.get("fractions", [1.0]):
                cfg = copy.deepcopy(base)
                overrides = {**defaults, **(c.get("overrides") or {})}
                needs = {}
                for role, producer in (c.get("needs") or {}).items():
                    dep = by_key.get((producer, seed, 1.0)) or next(
                        (v for k, v in by_key.items() if k[0] == producer and k[1] == seed), None)
                    if dep is None:
                        raise SpecError(f"{where}: needs {producer!r}, which is not an earlier cell with seed {seed}")
                    needs[role] = dep.run_id
                for key, value in overrides.items():
                    if isinstance(value, str):
                        for role, rid in needs.items():
                            value = value.replace(f"${{needs.{role}}}", str(runs_dir / rid / ARTIFACT))
                    _set_dotted(cfg, key, value)
                _set_dotted(cfg, "seed_everything", int(seed))
                _set_dotted(cfg, "data.init_args.root", data[c["data"]]["root"])
                _set_dotted(cfg, "data.init_args.fraction", float(fraction))
                cell = Cell(c["name"], c["task"], c["method"], int(seed), float(fraction), cfg, c["data"], needs, scale)
                by_key[(c["name"], int(seed), float(fraction))] = cell
                cells.append(cell)
    return Spec(raw["name"], scale, runs_dir, data, cells, path)
