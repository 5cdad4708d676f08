"""The papers' own numbers, shown beside ours on the leaderboards — read as data.

Each paper's room holds them (``benchmarks/<paper>/references.yaml``); cxrbench never imports from
``benchmarks/``: a sweep spec names its files (``references:``, collected through includes and
overlays) and ``cxrbench leaderboard --references`` takes them, by default every
``benchmarks/*/references.yaml`` under the current folder. Keys: (task, row, metric key, fraction),
where the row is the leaderboard row's name — the sweep's method name (``result.json``'s ``method``),
e.g. ``amm-densenet121`` — and values are (value, source): as printed in the paper (fractions of 1), with
the table each comes from.

A file::

    notes: {TASK: what its board says beside the paper's numbers}
    aliases: {amm: amm-densenet121}       # a row also keyed under another name
    tables:
      - source: RGT Table II
        task: nih8-cls
        metric: auc/mean                  # one column: a value per row ...
        rows: {rgt: 0.839, vit: 0.728}
      - source: RGT Table I
        task: nih8-loc
        metrics: [iou_acc@0.1/mean, iou_acc@0.2/mean]   # ... or a list per row, one value per metric,
        rows: {rgt: [0.591, 0.424]}
      - source: CAMContrast Table 8
        task: nih14-linear
        metric: auc/mean
        fractions: [0.01, 1.0]            # ... or one value per label fraction (default: fraction 1.0)
        percent: true                     # printed in %: keyed as value / 100 (or a list of the metrics that are)
        rows: {camcontrast: [63.74, 72.85]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

Key = tuple[str, str, str, float]


class ReferencesError(ValueError):
    pass


@dataclass(frozen=True)
class References:
    values: dict[Key, tuple[float, str]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    files: tuple[Path, ...] = ()

    def reference(self, task: str, method: str, metric: str, fraction: float = 1.0) -> tuple[float, str] | None:
        return self.values.get((task, method, metric, float(fraction)))


def default_reference_files(root: str | Path | None = None) -> list[Path]:
    """Every paper room's references.yaml under ``root`` (default: the current folder)."""
    return sorted(Path(root or Path.cwd()).glob("benchmarks/*/references.yaml"))


def load_references(paths=None) -> References:
    """The references of the files named (``None``: ``default_reference_files()``), merged; a key that
    two files give different values, or a task two files note differently, is refused."""
    files = tuple(Path(p) for p in (default_reference_files() if paths is None else paths))
    values: dict[Key, tuple[float, str]] = {}
    notes: dict[str, str] = {}
    origin: dict = {}
    for path in files:
        file_values, file_notes = read_reference_file(path)
        for kind, into, new in (("reference", values, file_values), ("note for", notes, file_notes)):
            for key, value in new.items():
                if key in into and into[key] != value:
                    raise ReferencesError(f"{path}: {kind} {key} is {value!r}, but {origin[kind, key]} has "
                                         f"{into[key]!r}")
                into[key] = value
                origin[kind, key] = path
    return References(values, notes, files)


def reference(task: str, method: str, metric: str, fraction: float = 1.0) -> tuple[float, str] | None:
    """One lookup in the default files (``load_references()``)."""
    return load_references().reference(task, method, metric, fraction)


def read_reference_file(path: Path) -> tuple[dict[Key, tuple[float, str]], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ReferencesError(f"references file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("tables", []), list):
        raise ReferencesError(f"{path}: a references file is a mapping with tables: [...] (and notes:, aliases:)")
    values: dict[Key, tuple[float, str]] = {}
    for i, table in enumerate(raw.get("tables") or []):
        named = isinstance(table, dict) and "source" in table
        where = f"{path}: tables[{i}]" + (f" ({table['source']})" if named else "")
        for key, value in _table_values(table, where).items():
            if key in values:
                raise ReferencesError(f"{where}: {key} is given twice in this file")
            values[key] = value
    values.update(_aliased(values, raw.get("aliases") or {}, path))
    notes = raw.get("notes") or {}
    if not isinstance(notes, dict) or not all(isinstance(v, str) for v in notes.values()):
        raise ReferencesError(f"{path}: notes must map a task to its text")
    return values, dict(notes)


def _table_values(table, where: str) -> dict[Key, tuple[float, str]]:
    """One table's (task, row, metric, fraction) -> (value, source)."""
    if not isinstance(table, dict):
        raise ReferencesError(f"{where}: a table is a mapping (source, task, metric(s), rows)")
    missing = [k for k in ("source", "task", "rows") if k not in table]
    if missing or ("metric" in table) == ("metrics" in table):
        raise ReferencesError(f"{where}: a table needs source, task, rows and one of metric / metrics "
                             f"(missing: {missing or ['metric or metrics']})")
    columns = _columns(table, where)
    percent = table.get("percent", False)
    out = {}
    for row, given in table["rows"].items():
        row_values = given if isinstance(given, list) else [given]
        if len(row_values) != len(columns):
            raise ReferencesError(f"{where}: row {row!r} has {len(row_values)} value(s) for {len(columns)} column(s)")
        for (metric, fraction), value in zip(columns, row_values):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ReferencesError(f"{where}: row {row!r}, {metric}: {value!r} is not a number")
            if percent is True or (isinstance(percent, list) and metric in percent):
                value = value / 100
            out[(str(table["task"]), str(row), metric, float(fraction))] = (value, str(table["source"]))
    return out


def _columns(table: dict, where: str) -> list[tuple[str, float]]:
    """(metric, fraction) of each value of a row, in order."""
    if "metrics" in table:
        if "fractions" in table:
            raise ReferencesError(f"{where}: fractions: goes with a single metric:, not metrics:")
        return [(str(m), float(table.get("fraction", 1.0))) for m in table["metrics"]]
    if "fractions" in table:
        return [(str(table["metric"]), float(f)) for f in table["fractions"]]
    return [(str(table["metric"]), float(table.get("fraction", 1.0)))]


def _aliased(values: dict[Key, tuple[float, str]], aliases: dict, path: Path) -> dict[Key, tuple[float, str]]:
    """``aliases: {name: row}``: every key of ``row`` also under ``name``."""
    out = {}
    for alias, row in aliases.items():
        keys = [k for k in values if k[1] == row]
        if not keys:
            raise ReferencesError(f"{path}: aliases: {alias!r} stands for {row!r}, which no table has")
        for task, _, metric, fraction in keys:
            if (task, alias, metric, fraction) in values:
                raise ReferencesError(f"{path}: aliases: {alias!r} is also a row of its own")
            out[(task, alias, metric, fraction)] = values[(task, row, metric, fraction)]
    return out
