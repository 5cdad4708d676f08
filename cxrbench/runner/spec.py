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
        lr_grid: [0.01, 0.1]           # optional: one run per lr (model.init_args.lr) for each seed × fraction;
                                       # the board keeps the one best on validation and names the lr it chose

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

Validation refuses, before any cell runs (so also in ``--dry-run``), naming the file, the cell and the
key, what would otherwise pass silently: a method that is no registered name, nor one with a variant
after a dash (``amm-densenet121``), nor ``random`` (a misspelling would become a leaderboard row of its
own; the closest name is suggested); an override, or a default, of a key the sweep sets itself for every
run (``SWEEP_OWNED``: seed, data root, fraction, fold, run folder, logger, the runner's checkpoint and
result callbacks' arguments), which would be silently replaced; folds of a dataset without folds, or
outside its ``n_folds``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
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
    lr_search: dict | None = None  # {"grid": [...], "lr": this run's}: one grid point of a search

    @property
    def run_id(self) -> str:
        canonical = _substitute(self.config, {r: f"<{n.run_id}:{n.artifact}>" for r, n in self.needs.items()})
        canonical = copy.deepcopy(canonical)
        canonical.setdefault("data", {}).setdefault("init_args", {})["root"] = self.identity
        blob = json.dumps([canonical, sorted(self.produces)], sort_keys=True, default=str)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        fold = "" if self.fold is None else f"-k{self.fold}"
        lr = "" if self.lr_search is None else f"-lr{self.lr_search['lr']:g}"
        return f"{self.name}-s{self.seed}-f{self.fraction:g}{fold}{lr}-{digest}"

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
        keep = self.with_producers({c.run_id for c in self.cells if c.name in names})
        added = sorted({by_id[r].name for r in keep} - set(names))
        self.cells = [c for c in self.cells if c.run_id in keep]
        return added

    def with_producers(self, run_ids: set[str]) -> set[str]:
        """``run_ids`` and every producer run they need, transitively."""
        by_id = {c.run_id: c for c in self.cells}
        keep = set(run_ids)
        todo = list(keep)
        while todo:
            for n in by_id[todo.pop()].needs.values():
                if n.run_id not in keep:
                    keep.add(n.run_id)
                    todo.append(n.run_id)
        return keep


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
    from ..boards import known_tasks as tasks

    return tasks()


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
    lr_grid: list[float] | None = None


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


CELL_KEYS = {"name", "task", "method", "config", "data", "seeds", "fractions", "folds", "needs", "overrides",
             "produces", "lr_grid"}


def _validate_cell(c, where: str, data: dict, tasks: set[str], earlier: dict[str, _Entry], defaults: dict,
                   repo: Path) -> _Entry:
    if not isinstance(c, dict):
        raise SpecError(f"{where}: a cell is a mapping with name, method, config, data; got {c!r}")
    unknown = sorted(set(c) - CELL_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], CELL_KEYS, n=1)
        raise SpecError(f"{where}: unknown key(s) {unknown}" + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; a cell takes {sorted(CELL_KEYS)}")
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
    _check_sweep_owned(overrides, set(c.get("overrides") or {}), where)
    effective = _with_overrides(config, overrides)
    _check_method(str(c["method"]), effective, where)
    _check_folds(folds, effective, where)
    lr_grid = _lr_grid(c.get("lr_grid"), task, produces, overrides, effective, where)
    return _Entry(c["name"], where, task, str(c["method"]), config, c["data"], seeds, fractions, folds, needs,
                  overrides, produces, lr_grid)


def _lr_grid(value, task, produces, overrides: dict, config: dict, where: str) -> list[float] | None:
    """``lr_grid: [..]``: the cell's learning rate chosen per run on its validation split (CAMContrast
    §4.2, Table A.1): one run per grid point, the board keeps the best (``leaderboard.choose_lr``)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: lr_grid must be a non-empty list of learning rates, e.g. [0.001, 0.01, 0.1]; "
                        f"got {value!r} (leave it out for the config's fixed lr)")
    try:
        grid = [float(v) for v in value]
    except (TypeError, ValueError):
        raise SpecError(f"{where}: lr_grid must hold numbers; got {value!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in grid) or len(set(grid)) != len(grid):
        raise SpecError(f"{where}: lr_grid must hold distinct positive learning rates; got {value!r}")
    if task is None or produces:
        raise SpecError(f"{where}: lr_grid searches an evaluation: the cell needs a task and produces nothing "
                        "(a producer's consumers need one artifact, not one per grid point)")
    if "model.init_args.lr" in overrides:
        raise SpecError(f"{where}: overrides model.init_args.lr and has an lr_grid: the grid sets the lr of each run")
    if "lr" not in ((config.get("model") or {}).get("init_args") or {}):
        raise SpecError(f"{where}: lr_grid needs a config whose model takes model.init_args.lr")
    return sorted(grid)


# ------------------------------------------------------------------------- what a cell may not say
#: Keys the sweep sets for every run itself: an override of one would be silently replaced (the run and
#: its record would say one thing, the override another), so it is refused, naming what sets it.
SWEEP_OWNED = {
    "seed_everything": "the cell's seeds: [...]",
    "data.init_args.root": "the spec's data: entry of the cell's dataset (its root)",
    "data.init_args.fraction": "the cell's fractions: [...]",
    "data.init_args.fold": "the cell's folds: [...]",
    "trainer.default_root_dir": "runs_dir (each run writes into runs_dir/RUN_ID)",
    "trainer.logger": "the runner (metrics.csv in the run folder, and W&B)",
    "trainer.enable_progress_bar": "the runner (off: a cell's output is its stdout.log)",
}
#: Callback arguments the runner sets on every run (``cell.cell_trainer``), by the callback's class name.
SWEEP_OWNED_CALLBACK_ARGS = {
    "ModelCheckpoint": {"dirpath": "the runner (the run's checkpoints/ folder)",
                        "save_last": "the runner (always on: a killed cell resumes from it)"},
    "WriteResult": {k: "the runner (the cell's own task, method, seed, fold and run folder)"
                    for k in ("task", "method", "out_dir", "run_id", "seed", "fold", "scale")},
}
#: The value the runner gives such an argument where it is always the same: an override saying so is kept.
RUNNER_VALUES = {"save_last": True}


def _set_paths(key: str, value) -> list[tuple[str, object]]:
    """The dotted keys an override sets, down to its leaves (``data: {init_args: {fraction: x}}`` sets
    ``data.init_args.fraction``), with their values."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _set_paths(f"{key}.{k}", v)]
    return [(key, value)]


def _owned_callback_args(key: str, callbacks) -> list[tuple[str, str]]:
    if key != "trainer.callbacks" or not isinstance(callbacks, list):
        return []
    found = []
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, dict):
            continue
        owned = SWEEP_OWNED_CALLBACK_ARGS.get(str(cb.get("class_path", "")).rpartition(".")[2], {})
        found += [(f"{key}[{i}].init_args.{arg}", owned[arg]) for arg, value in (cb.get("init_args") or {}).items()
                  if arg in owned and not (arg in RUNNER_VALUES and value == RUNNER_VALUES[arg])]
    return found


def _sweep_owned(key: str, value) -> list[tuple[str, str]]:
    """(dotted key, what sets it) of every sweep-owned key that the override ``key: value`` sets."""
    found = []
    for path, leaf in _set_paths(key, value):
        found += [(path, owner) for owned, owner in SWEEP_OWNED.items()
                  if path == owned or path.startswith(owned + ".")]
        found += _owned_callback_args(path, leaf)
    return found


def _check_sweep_owned(overrides: dict, own_keys: set[str], where: str) -> None:
    """``own_keys``: the cell's own overrides; the others came from the spec's defaults."""
    for key, value in overrides.items():
        owned = _sweep_owned(key, value)
        if owned:
            path, owner = owned[0]
            origin = "" if key in own_keys else " (from the spec's defaults)"
            raise SpecError(f"{where}: overrides {path}, which the sweep sets itself for every run from {owner}: "
                            f"the override{origin} would be silently replaced; set it there")


#: Row names that are no registered method: the baseline without any pretraining (a random encoder).
ROWS_WITHOUT_METHOD = ("random",)


def _check_method(name: str, config: dict, where: str) -> None:
    """The cell's method (its leaderboard row) is a registered method, a registered name with a variant
    after a dash (``amm-densenet121``, ``simclr-crop``, ``gmml-covid``), or a row without a method
    (``random``): a misspelled name would become a row of its own."""
    registered, unimported = _registered_methods(config)
    if _is_row_of(name, registered):
        return
    close = difflib.get_close_matches(name, sorted(registered) + list(ROWS_WITHOUT_METHOD), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SpecError(f"{where}: method {name!r} is no registered method, so it would become a leaderboard row of "
                    f"its own; {hint}a cell's method is a registered name ({', '.join(sorted(registered))}), "
                    f"such a name with a variant after a dash (amm-densenet121), or {' / '.join(ROWS_WITHOUT_METHOD)}"
                    + (f" ({unimported})" if unimported else ""))


def _is_row_of(name: str, registered) -> bool:
    return name in ROWS_WITHOUT_METHOD or any(name == m or name.startswith(m + "-") for m in registered)


def _registered_methods(config: dict) -> tuple[set[str], str]:
    """The registry, with the cell's own model imported first (a method registered outside cxrbench,
    e.g. a user's module on PYTHONPATH, registers itself when its module is imported), and why that
    module could not be imported ("" when it could)."""
    import importlib

    from ..methods import METHODS

    module = str(((config.get("model") or {}).get("class_path")) or "").rpartition(".")[0]
    problem = ""
    if module:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 — any failure leaves its methods unregistered: say why
            problem = f"the cell's model module {module} could not be imported: {type(err).__name__}: {err}"
    return set(METHODS), problem


def _init_parameters(cls) -> dict:
    """The arguments ``cls(...)`` takes, following ``**kwargs`` up the base classes."""
    import inspect

    params: dict = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        sig = inspect.signature(klass.__init__)
        params.update({k: p for k, p in sig.parameters.items() if k != "self" and k not in params
                       and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)})
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return params


def _data_class(config: dict):
    import importlib

    module, _, name = str((config.get("data") or {}).get("class_path") or "").rpartition(".")
    try:
        return getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return None  # the config check before the sweep names it


def _check_folds(folds: list, config: dict, where: str) -> None:
    """``folds:`` of a dataset with cross-validation, each in ``[0, n_folds)`` (the config's n_folds or
    the DataModule's default). Unchecked, a fold the dataset lacks would fail only when its cell starts,
    after every producer before it has trained."""
    cls = _data_class(config)
    if folds == [None] or cls is None:
        return
    params = _init_parameters(cls)
    if "fold" not in params:
        raise SpecError(f"{where}: folds: {cls.__name__} has no folds (its DataModule takes no fold argument); "
                        "drop folds:")
    if "n_folds" not in params:
        return
    n = ((config.get("data") or {}).get("init_args") or {}).get("n_folds", params["n_folds"].default)
    if not isinstance(n, int) or isinstance(n, bool):
        return  # required or not a number: the config check before the sweep names it
    for fold in folds:
        if not 0 <= fold < n:
            raise SpecError(f"{where}: folds: fold {fold} is outside {cls.__name__}'s {n} folds (0..{n - 1}); "
                            "set data.init_args.n_folds for more")


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
                    for lr in e.lr_grid or [None]:
                        search = None
                        if lr is not None:
                            config = copy.deepcopy(config)
                            _set_dotted(config, "model.init_args.lr", lr)
                            search = {"grid": list(e.lr_grid), "lr": lr}
                        cell = Cell(e.name, e.task, e.method, int(seed), float(fraction), config, e.data, needs,
                                    e.produces, scale, fold, identity, search)
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
def _with_overrides(config: dict, overrides: dict) -> dict:
    cfg = copy.deepcopy(config)
    for key, value in overrides.items():
        _set_dotted(cfg, key, copy.deepcopy(value))
    return cfg


def _run_config(e: _Entry, seed: int, fraction: float, fold: int | None, root: str) -> dict:
    """The entry's config with its overrides, then the run's seed, data root, fraction and fold."""
    cfg = _with_overrides(e.config, e.overrides)
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
