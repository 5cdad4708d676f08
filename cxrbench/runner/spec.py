"""Sweep specs: tasks × methods × seeds × label fractions (× folds), with pipelines between cells.

A spec (YAML, in benchmarks/)::

    name: smoke
    scale: smoke                       # written into every result's provenance
    runs_dir: runs/smoke
    data:                              # dataset roots; ${VAR} is expanded from the environment
      nih: {root: .cache/twin/nih-smoke, twin: {n: 600, size: 128, seed: 0}}   # twin: generated if absent
    defaults: {trainer.max_epochs: 6}  # dotted overrides for every cell
    include: [benchmarks/amm_table5.yaml]   # optional: other specs' data and cells, then these
    cells:
      - name: simclr-nih               # a producer: no task, no test; done when its artifact is written
        method: simclr
        config: benchmarks/configs/simclr_nih.yaml
        data: nih
        produces: [encoder]            # artifact kinds (cxrbench.artifacts.ARTIFACT_FILES)
      - name: simclr-linear
        task: nih14-linear             # a leaderboard task: the cell is tested and writes result.json
        method: simclr                 # the leaderboard row's name
        config: benchmarks/configs/linear_nih14.yaml
        data: nih
        seeds: [0, 1]
        fractions: [0.01, 1.0]
        folds: [0, 1, 2, 3, 4]         # optional: sets data.init_args.fold; aggregated like seeds
        needs: {encoder: simclr-nih}   # or {encoder: {cell: simclr-nih, artifact: encoder, seed: 0, fraction: 1.0}}
        overrides: {model.init_args.encoder_artifact: "${needs.encoder}"}

``needs``: the producer cell of each role, the artifact kind (default: the role's name), and the
producer's seed (default: the consumer's seed), fraction (default 1.0: pretraining sees all its
data) and fold (default: the consumer's fold if the producer has folds). The match is exact or the
spec is refused, naming both sides — never a fallback to another run. ``${needs.ROLE}`` may appear in
any string of the cell's config; it is resolved to the artifact's absolute path when the cell is
written (after every command-line option, e.g. ``--runs-dir``).

Each (cell, seed, fraction, fold) is one run whose id is derived from its config with the data
root replaced by the dataset's name (and twin spec) and each artifact path by its producer's run
id: the same work lands in the same folder wherever the data or the runs folder lives, and a
changed config, dataset or producer is a new run.
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

from ..artifacts import ARTIFACT_FILES, artifact_path

PLACEHOLDER = re.compile(r"\$\{needs\.([A-Za-z_][A-Za-z0-9_]*)\}")


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class Need:
    role: str
    cell: str  # producing cell's name
    artifact: str  # kind
    run_id: str  # producing run


@dataclass
class Cell:
    name: str
    task: str | None
    method: str
    seed: int
    fraction: float
    config: dict  # LightningCLI config; ${needs.ROLE} placeholders unresolved
    data_name: str
    needs: dict[str, Need] = field(default_factory=dict)
    produces: tuple[str, ...] = ()
    scale: str = ""
    fold: int | None = None
    identity: dict = field(default_factory=dict)  # what stands for the data root in the run id

    @property
    def run_id(self) -> str:
        canonical = _substitute(self.config, {r: f"<{n.run_id}:{n.artifact}>" for r, n in self.needs.items()})
        canonical = copy.deepcopy(canonical)
        canonical.setdefault("data", {}).setdefault("init_args", {})["root"] = self.identity
        blob = json.dumps([canonical, sorted(self.produces)], sort_keys=True, default=str)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        fold = "" if self.fold is None else f"-k{self.fold}"
        return f"{self.name}-s{self.seed}-f{self.fraction:g}{fold}-{digest}"

    def resolved_config(self, runs_dir: Path) -> dict:
        """The config with every ``${needs.ROLE}`` replaced by the producer's artifact (absolute path)."""
        runs_dir = Path(runs_dir).resolve()
        return _substitute(self.config, {r: str(self.artifact(r, runs_dir)) for r in self.needs})

    def artifact(self, role: str, runs_dir: Path) -> Path:
        n = self.needs[role]
        return artifact_path(Path(runs_dir).resolve() / n.run_id, n.artifact)


def _substitute(value, mapping: dict[str, str]):
    if isinstance(value, str):
        def sub(m):
            if m.group(1) not in mapping:
                raise SpecError(f"{value!r} names ${{needs.{m.group(1)}}}, but the cell's needs are {sorted(mapping)}")
            return mapping[m.group(1)]
        return PLACEHOLDER.sub(sub, value)
    if isinstance(value, dict):
        return {k: _substitute(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, mapping) for v in value]
    return value


def _placeholders(value) -> set[str]:
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(_placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_placeholders(v) for v in value)) if value else set()
    return set()


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

    def select(self, names: list[str]) -> list[str]:
        """Keep the cells named (and every producer they need, transitively); returns the names of
        the producers brought in. Unknown names are refused."""
        known = {c.name for c in self.cells}
        unknown = sorted(set(names) - known)
        if unknown:
            raise SpecError(f"{self.path}: --only names unknown cell(s) {unknown}; cells are {sorted(known)}")
        by_id = {c.run_id: c for c in self.cells}
        keep = {c.run_id for c in self.cells if c.name in names}
        todo = list(keep)
        while todo:
            for n in by_id[todo.pop()].needs.values():
                if n.run_id not in keep:
                    keep.add(n.run_id)
                    todo.append(n.run_id)
        added = sorted({by_id[r].name for r in keep} - set(names))
        self.cells = [c for c in self.cells if c.run_id in keep]
        return added


def _int_list(value, what: str, where: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise SpecError(f"{where}: {what} must be a non-empty list of integers, e.g. {what}: [0, 1, 2]; got {value!r}")
    return value


def _fraction_list(value, where: str) -> list[float]:
    ok = isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  and 0 < v <= 1 for v in value)
    if not ok:
        raise SpecError(f"{where}: fractions must be a non-empty list of numbers in (0, 1], e.g. [0.01, 1.0]; got {value!r}")
    return [float(v) for v in value]


def known_tasks() -> set[str]:
    from ..leaderboard import BOARDS

    return {t for b in BOARDS for t in b.tasks}


def _read_with_includes(path: Path, repo: Path, seen: tuple = ()) -> dict:
    """The spec's YAML with ``include: [other specs]`` merged in: their data and cells first (each
    included cell keeps the included spec's defaults under its own overrides), then this spec's."""
    if path.resolve() in seen:
        raise SpecError(f"{path}: include cycle through {[str(p) for p in seen]}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a sweep spec is a mapping with name, data, cells; got {type(raw).__name__}")
    includes = raw.pop("include", None) or []
    if not includes:
        return raw
    data, cells = {}, []
    for inc in includes:
        inc_path = Path(inc) if Path(inc).is_absolute() else repo / inc
        if not inc_path.is_file():
            raise SpecError(f"{path}: include {inc} does not exist")
        sub = _read_with_includes(inc_path, repo, seen + (path.resolve(),))
        for name, entry in (sub.get("data") or {}).items():
            if name in data and data[name] != entry:
                raise SpecError(f"{path}: data {name!r} differs between included specs ({inc})")
            data[name] = entry
        defaults = sub.get("defaults") or {}
        for c in sub.get("cells") or []:
            cells.append({**c, "overrides": {**defaults, **(c.get("overrides") or {})}} if defaults else c)
    for name, entry in (raw.get("data") or {}).items():
        data[name] = entry
    raw["data"], raw["cells"] = data, cells + list(raw.get("cells") or [])
    return raw


def load_spec(path: str | Path, repo: Path | None = None, runs_dir: str | Path | None = None) -> Spec:
    """Parse and check a sweep spec; ``runs_dir`` overrides the spec's (the ``--runs-dir`` option)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec {path} does not exist")
    repo = repo or Path.cwd()
    raw = _read_with_includes(path, repo)
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
    runs_dir = Path(runs_dir) if runs_dir else Path(_expand_env(str(raw.get("runs_dir", f"runs/{raw['name']}"))))
    tasks = known_tasks()
    cells: list[Cell] = []
    by_key: dict[tuple, Cell] = {}
    declared: dict[str, dict] = {}
    for i, c in enumerate(raw["cells"]):
        where = f"{path}: cells[{i}]" + (f" ({c['name']})" if isinstance(c, dict) and "name" in c else "")
        for key in ("name", "method", "config", "data"):
            if key not in c:
                raise SpecError(f"{where}: missing {key!r}")
        if c["name"] in declared:
            raise SpecError(f"{where}: duplicate cell name {c['name']!r}")
        task, produces = c.get("task"), tuple(c.get("produces") or ())
        if task is None and not produces:
            raise SpecError(f"{where}: a cell needs a task (a leaderboard row) or produces (an artifact), or both")
        if task is not None and task not in tasks:
            raise SpecError(f"{where}: task {task!r} is on no leaderboard; known tasks: {sorted(tasks)}")
        bad = [k for k in produces if k not in ARTIFACT_FILES]
        if bad:
            raise SpecError(f"{where}: produces unknown artifact kind(s) {bad}; known: {sorted(ARTIFACT_FILES)}")
        if c["data"] not in data:
            raise SpecError(f"{where}: data {c['data']!r} is not declared under data: ({sorted(data)})")
        cfg_path = (repo / c["config"]) if not Path(c["config"]).is_absolute() else Path(c["config"])
        if not cfg_path.is_file():
            raise SpecError(f"{where}: config {cfg_path} does not exist")
        base = yaml.safe_load(cfg_path.read_text()) or {}
        seeds = _int_list(c.get("seeds", [0]), "seeds", where)
        fractions = _fraction_list(c.get("fractions", [1.0]), where)
        folds = _int_list(c["folds"], "folds", where) if "folds" in c else [None]
        needs_spec = {}
        for role, n in (c.get("needs") or {}).items():
            n = {"cell": n} if isinstance(n, str) else dict(n)
            n.setdefault("artifact", role)
            producer = declared.get(n.get("cell"))
            if producer is None:
                raise SpecError(f"{where}: needs {n.get('cell')!r} for {role!r}, which is not an earlier cell "
                                f"(earlier cells: {sorted(declared)})")
            if n["artifact"] not in producer["produces"]:
                raise SpecError(f"{where}: needs a {n['artifact']!r} artifact from {n['cell']!r}, which produces "
                                f"{list(producer['produces']) or 'no artifact'} (set artifact: or produces:)")
            needs_spec[role] = n
        overrides = {**defaults, **(c.get("overrides") or {})}
        used = _placeholders(overrides) | _placeholders(base)
        if used - set(needs_spec):
            raise SpecError(f"{where}: uses ${{needs.{sorted(used - set(needs_spec))[0]}}} but needs only "
                            f"{sorted(needs_spec) or 'nothing'}")
        identity = {"data": c["data"], **({"twin": data[c["data"]]["twin"]} if "twin" in data[c["data"]] else {})}
        for seed in seeds:
            for fraction in fractions:
                for fold in folds:
                    needs = {}
                    for role, n in needs_spec.items():
                        p = declared[n["cell"]]
                        key = (n["cell"], int(n.get("seed", seed)), float(n.get("fraction", 1.0)),
                               n["fold"] if "fold" in n else (fold if p["folds"] != [None] else None))
                        dep = by_key.get(key)
                        if dep is None:
                            have = f"seeds {p['seeds']}, fractions {p['fractions']}" + (
                                f", folds {p['folds']}" if p["folds"] != [None] else "")
                            raise SpecError(
                                f"{where} (seed {seed}, fraction {fraction:g}{'' if fold is None else f', fold {fold}'}): "
                                f"needs {n['cell']!r} at seed {key[1]}, fraction {key[2]:g}"
                                f"{'' if key[3] is None else f', fold {key[3]}'}, which {n['cell']!r} does not run "
                                f"({have}). Add it there, or state seed:/fraction: under needs.{role}")
                        needs[role] = Need(role, n["cell"], n["artifact"], dep.run_id)
                    cfg = copy.deepcopy(base)
                    for key, value in overrides.items():
                        _set_dotted(cfg, key, copy.deepcopy(value))
                    _set_dotted(cfg, "seed_everything", int(seed))
                    _set_dotted(cfg, "data.init_args.root", data[c["data"]]["root"])
                    _set_dotted(cfg, "data.init_args.fraction", float(fraction))
                    if fold is not None:
                        _set_dotted(cfg, "data.init_args.fold", int(fold))
                    cell = Cell(c["name"], task, str(c["method"]), int(seed), float(fraction), cfg, c["data"], needs,
                                produces, scale, fold, identity)
                    by_key[(c["name"], int(seed), float(fraction), fold)] = cell
                    cells.append(cell)
        declared[c["name"]] = {"produces": produces, "seeds": seeds, "fractions": fractions, "folds": folds}
    return Spec(raw["name"], scale, runs_dir, data, cells, path)
