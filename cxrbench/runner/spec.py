"""Sweep specs: tasks × methods × seeds × label fractions (× folds), with pipelines between cells.

A spec (YAML; a paper's in ``benchmarks/<paper>/``)::

    name: sscxr
    scale: full                        # written into every result's provenance
    runs_dir: runs/sscxr
    data:                              # dataset roots; ${VAR} is expanded from the environment
      nih: {root: "${CXR_DATA}/nih"}   # a twin: {root: .cache/twin/nih-smoke, twin: {n: 600, size: 128}}, made if absent
    defaults: {trainer.max_epochs: 6}  # dotted overrides for every cell
    include: [benchmarks/amm/paper.yaml]   # optional: other specs' data and cells, then these
    references: benchmarks/sscxr/references.yaml   # the paper's printed numbers, for the leaderboards
    cells:
      - name: simclr-nih               # a producer: no task, no test; done when its artifact is written
        method: simclr
        config: benchmarks/pretraining_baselines/configs/simclr_nih.yaml
        data: nih
        produces: [encoder]            # artifact kinds (cxrbench.artifacts.ARTIFACT_FILES)
      - name: supcon-nih
        method: supcon
        config: [benchmarks/pretraining_baselines/configs/simclr_nih.yaml,   # a list: merged in order, as
                 benchmarks/pretraining_baselines/configs/supcon_nih.yaml]   # repeated --config merges them
        data: nih
        produces: [encoder]
      - name: simclr-linear
        task: nih14-linear             # a leaderboard task: the cell is tested and writes result.json
        method: simclr                 # the leaderboard row's name
        config: benchmarks/pretraining_baselines/configs/linear_nih14.yaml
        data: nih
        seeds: [0, 1]
        fractions: [0.01, 1.0]
        folds: [0, 1, 2, 3, 4]         # optional: sets data.init_args.fold; aggregated like seeds
        needs: {encoder: simclr-nih}   # or {encoder: {cell: simclr-nih, artifact: encoder, seed: 0, fraction: 1.0}}
        overrides: {model.init_args.encoder_artifact: "${needs.encoder}"}

``include``: the included specs' data (an entry named twice must agree) and cells, each included cell
keeping its spec's defaults under its own overrides; then this spec's cells. The spec's own defaults
go under every cell, included ones too. References are collected from every included spec.

An **overlay** rescales another spec instead of copying its cells (a paper's twin or smoke scale)::

    overlay: benchmarks/stn/paper.yaml  # the base: its cells are this spec's cells
    name: stn_twin                      # required: its own name and runs_dir (default runs/<name>)
    scale: smoke                        # inherited when absent, as are the base's references
    data: {chexpert: {root: .cache/twin/chexpert-stn, twin: {n: 1000, size: 96}}}   # replaces the base's entry
    defaults: {trainer.accelerator: cpu}   # merged over the base's defaults
    cells:                              # patches, keyed by a base cell's name
      vgg16: {folds: [0, 1], overrides: {model.init_args.vgg_width: 0.0625}}   # overrides merge over the
                                        # base cell's; any other key (seeds, needs, even name) replaces
    drop: [thorax-crop]                 # base cells left out
    add:                                # cells the base does not have, appended, or placed before: a base cell
      - {name: extra, method: vgg16, config: ..., data: chexpert, before: stn}

Needs are not rewritten: a patch renaming a producer must patch its consumers' needs too. A patch or
drop naming a cell the base lacks, an overlay of a missing file and a cycle of includes or
overlays are refused, naming the file and the key. An overlay may itself be the base of another (a
smoke scale can be a twin cut down); its cells' overrides end up as: the base's defaults, then the
overlay's, then the base cell's overrides, then the patch.

``config`` is one LightningCLI config or a list of them merged in order with the semantics of
repeating ``--config`` (``spec_yaml.merge_config``): the cell runs what
``cxrbench fit --config A --config B`` would, and its run id is that of the merged dict — the file
names never enter it.

``needs``: the producer cell of each role, the artifact kind (default: the role's name), and the
producer's seed (default: the consumer's seed), fraction (default 1.0: pretraining sees all its
data) and fold (default: the consumer's fold if the producer has folds). The producer is an earlier
cell, and the match is exact or the spec is refused, naming both sides — never a fallback to another
run. ``${needs.ROLE}`` may appear in any string of the cell's config; it is resolved to the
artifact's absolute path when the cell is written (after every command-line option, e.g.
``--runs-dir``).

Each (cell, seed, fraction, fold) is one run whose id is derived from its config with the data
root replaced by the dataset's name (and twin spec) and each artifact path by its producer's run
id: the same work lands in the same folder wherever the data or the runs folder lives, and a
changed config, dataset or producer is a new run.

``load_spec`` is four steps: parse (``spec_yaml.read_spec``: YAML, includes, overlay), validate (each
cell's keys, task, data, config, seeds/fractions/folds, needs), expand (seeds × fractions × folds,
each consumer matched to its producer's run) and resolve (each run's config).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import ARTIFACT_FILES, artifact_path
from .spec_yaml import SpecError, read_config, read_spec

__all__ = ["Cell", "Need", "Spec", "SpecError", "load_spec"]

PLACEHOLDER = re.compile(r"\$\{needs\.([A-Za-z_][A-Za-z0-9_]*)\}")


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
    references: tuple[Path, ...] = ()  # the papers' printed numbers (references.yaml files) for its boards

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


# ---------------------------------------------------------------------------------------- validate
@dataclass
class _Entry:
    """One cell of the spec as declared and checked, before seeds × fractions × folds."""
    name: str
    where: str  # "SPEC: cells[i] (name)", the prefix of every error about it
    task: str | None
    method: str
    config: dict  # the merged config file(s)
    data: str
    seeds: list[int]
    fractions: list[float]
    folds: list[int | None]
    needs: dict[str, dict]  # role -> {cell, artifact, [seed], [fraction], [fold]}
    overrides: dict  # the spec's defaults under the cell's own
    produces: tuple[str, ...]


def _check_top_level(raw: dict, path: Path) -> None:
    for key in ("name", "data", "cells"):
        if key not in raw:
            raise SpecError(f"{path}: missing top-level key {key!r} (a spec needs name, data, cells)")
    if not isinstance(raw["data"], dict):
        raise SpecError(f"{path}: data must map dataset names to {{root: ...}}; got {raw['data']!r}")
    if not isinstance(raw["cells"], list):
        raise SpecError(f"{path}: cells must be a list of cells; got {type(raw['cells']).__name__}")


def _resolve_data(declared: dict, path: Path) -> dict:
    data = {}
    for name, entry in declared.items():
        entry = dict(entry or {})
        try:
            entry["root"] = _expand_env(entry.get("root", ""))
        except SpecError as err:
            raise SpecError(f"{path}: data.{name}: {err}") from None
        data[name] = entry
    return data


def _resolve_references(names: list[str], repo: Path, path: Path) -> tuple[Path, ...]:
    files = tuple(Path(n) if Path(n).is_absolute() else repo / n for n in names)
    for name, f in zip(names, files):
        if not f.is_file():
            raise SpecError(f"{path}: references {name} does not exist")
    return files


def _validate_cells(raw: dict, data: dict, repo: Path, path: Path) -> list[_Entry]:
    tasks = known_tasks()
    entries: dict[str, _Entry] = {}
    for i, c in enumerate(raw["cells"]):
        where = f"{path}: cells[{i}]" + (f" ({c['name']})" if isinstance(c, dict) and "name" in c else "")
        entry = _validate_cell(c, where, data, tasks, entries, raw["defaults"], repo)
        entries[entry.name] = entry
    return list(entries.values())


def _validate_cell(c, where: str, data: dict, tasks: set[str], earlier: dict[str, _Entry], defaults: dict,
                   repo: Path) -> _Entry:
    if not isinstance(c, dict):
        raise SpecError(f"{where}: a cell is a mapping with name, method, config, data; got {c!r}")
    for key in ("name", "method", "config", "data"):
        if key not in c:
            raise SpecError(f"{where}: missing {key!r}")
    if c["name"] in earlier:
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
    config = read_config(c["config"], repo, where)
    seeds = _int_list(c.get("seeds", [0]), "seeds", where)
    fractions = _fraction_list(c.get("fractions", [1.0]), where)
    folds = _int_list(c["folds"], "folds", where) if "folds" in c else [None]
    needs = {role: _validate_need(role, n, where, earlier) for role, n in (c.get("needs") or {}).items()}
    overrides = {**defaults, **(c.get("overrides") or {})}
    used = _placeholders(overrides) | _placeholders(config)
    if used - set(needs):
        raise SpecError(f"{where}: uses ${{needs.{sorted(used - set(needs))[0]}}} but needs only "
                        f"{sorted(needs) or 'nothing'}")
    return _Entry(c["name"], where, task, str(c["method"]), config, c["data"], seeds, fractions, folds, needs,
                  overrides, produces)


def _validate_need(role: str, n, where: str, earlier: dict[str, _Entry]) -> dict:
    n = {"cell": n} if isinstance(n, str) else dict(n)
    n.setdefault("artifact", role)
    producer = earlier.get(n.get("cell"))
    if producer is None:
        raise SpecError(f"{where}: needs {n.get('cell')!r} for {role!r}, which is not an earlier cell "
                        f"(earlier cells: {sorted(earlier)})")
    if n["artifact"] not in producer.produces:
        raise SpecError(f"{where}: needs a {n['artifact']!r} artifact from {n['cell']!r}, which produces "
                        f"{list(producer.produces) or 'no artifact'} (set artifact: or produces:)")
    return n


# ------------------------------------------------------------------------------------------ expand
def _expand(entries: list[_Entry], data: dict, scale: str) -> list[Cell]:
    """Every (seed, fraction, fold) of every entry, in order, each consumer matched to its producer's run."""
    by_entry = {e.name: e for e in entries}
    by_key: dict[tuple, Cell] = {}
    cells = []
    for e in entries:
        identity = {"data": e.data, **({"twin": data[e.data]["twin"]} if "twin" in data[e.data] else {})}
        for seed in e.seeds:
            for fraction in e.fractions:
                for fold in e.folds:
                    needs = {role: _producer_run(e, role, n, seed, fraction, fold, by_entry, by_key)
                             for role, n in e.needs.items()}
                    config = _run_config(e, seed, fraction, fold, data[e.data]["root"])
                    cell = Cell(e.name, e.task, e.method, int(seed), float(fraction), config, e.data, needs,
                                e.produces, scale, fold, identity)
                    by_key[(e.name, int(seed), float(fraction), fold)] = cell
                    cells.append(cell)
    return cells


def _producer_run(e: _Entry, role: str, n: dict, seed: int, fraction: float, fold: int | None,
                  by_entry: dict[str, _Entry], by_key: dict[tuple, Cell]) -> Need:
    p = by_entry[n["cell"]]
    key = (n["cell"], int(n.get("seed", seed)), float(n.get("fraction", 1.0)),
           n["fold"] if "fold" in n else (fold if p.folds != [None] else None))
    dep = by_key.get(key)
    if dep is None:
        have = f"seeds {p.seeds}, fractions {p.fractions}" + (f", folds {p.folds}" if p.folds != [None] else "")
        raise SpecError(
            f"{e.where} (seed {seed}, fraction {fraction:g}{'' if fold is None else f', fold {fold}'}): "
            f"needs {n['cell']!r} at seed {key[1]}, fraction {key[2]:g}"
            f"{'' if key[3] is None else f', fold {key[3]}'}, which {n['cell']!r} does not run "
            f"({have}). Add it there, or state seed:/fraction: under needs.{role}")
    return Need(role, n["cell"], n["artifact"], dep.run_id)


# ----------------------------------------------------------------------------------------- resolve
def _run_config(e: _Entry, seed: int, fraction: float, fold: int | None, root: str) -> dict:
    """The entry's config with its overrides, then the run's seed, data root, fraction and fold."""
    cfg = copy.deepcopy(e.config)
    for key, value in e.overrides.items():
        _set_dotted(cfg, key, copy.deepcopy(value))
    _set_dotted(cfg, "seed_everything", int(seed))
    _set_dotted(cfg, "data.init_args.root", root)
    _set_dotted(cfg, "data.init_args.fraction", float(fraction))
    if fold is not None:
        _set_dotted(cfg, "data.init_args.fold", int(fold))
    return cfg


def load_spec(path: str | Path, repo: Path | None = None, runs_dir: str | Path | None = None) -> Spec:
    """Parse and check a sweep spec; ``runs_dir`` overrides the spec's (the ``--runs-dir`` option)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec {path} does not exist")
    repo = repo or Path.cwd()
    raw = read_spec(path, repo)
    _check_top_level(raw, path)
    data = _resolve_data(raw["data"], path)
    scale = str(raw.get("scale", "full"))
    runs_dir = Path(runs_dir) if runs_dir else Path(_expand_env(str(raw.get("runs_dir", f"runs/{raw['name']}"))))
    cells = _expand(_validate_cells(raw, data, repo, path), data, scale)
    return Spec(raw["name"], scale, runs_dir, data, cells, path, _resolve_references(raw["references"], repo, path))
