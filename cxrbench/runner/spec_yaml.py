"""The YAML side of a sweep spec: one file with its includes and overlay read into one mapping, and a
cell's config (one file or a list of files) read into one dict. ``spec.py`` validates and expands what
this returns; the format is documented in its docstring.

Precedence, lowest first, of what a cell's overrides end up holding: an included spec's defaults, its
cell's overrides; then for an overlay: the base's defaults, the overlay's defaults, the base cell's
overrides, the overlay's patch of that cell. The spec's own ``defaults`` stay apart (``load_spec``
puts them under every cell, included ones too) so that an overlay can merge over them.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml


class SpecError(ValueError):
    pass


def read_spec(path: Path, repo: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The spec at ``path`` as one mapping: its overlay applied, then its includes merged in. Keys:
    name, scale, runs_dir (where given), data, defaults, cells (a list), references (a list)."""
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise SpecError(f"{path}: include/overlay cycle: {chain}")
    raw = _read_mapping(path)
    seen = seen + (path.resolve(),)
    if "overlay" in raw:
        raw = _apply_overlay(path, raw, repo, seen)
    elif isinstance(raw.get("cells"), dict):
        raise SpecError(f"{path}: cells is a mapping (cell patches), which only an overlay has; "
                        f"a spec's cells are a list, or add `overlay: BASE_SPEC`")
    raw = _merge_includes(path, raw, repo, seen)
    raw["references"] = _as_list(raw.get("references"), path, "references")
    raw["defaults"] = _mapping(raw.get("defaults"), path, "defaults")
    return raw


def _read_mapping(path: Path) -> dict:
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a sweep spec is a mapping with name, data, cells; got {type(raw).__name__}")
    return raw


def _mapping(value, path: Path, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{path}: {key} must be a mapping; got {value!r}")
    return value


def repo_path(value: str, repo: Path) -> Path:
    """A path as a spec writes it: absolute, or relative to the repository root."""
    return Path(value) if Path(value).is_absolute() else repo / value


def _as_list(value, path: Path, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SpecError(f"{path}: {key} must be a path or a list of paths; got {value!r}")


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


# ------------------------------------------------------------------------------------------ includes
def _merge_includes(path: Path, raw: dict, repo: Path, seen: tuple[Path, ...]) -> dict:
    """``include: [other specs]``: their data and cells first (each included cell keeps the included
    spec's defaults under its own overrides), then this spec's; references are collected."""
    includes = _as_list(raw.pop("include", None), path, "include")
    if not includes:
        return raw
    data, cells, references = {}, [], []
    for inc in includes:
        inc_path = repo_path(inc, repo)
        if not inc_path.is_file():
            raise SpecError(f"{path}: include {inc} does not exist")
        sub = read_spec(inc_path, repo, seen)
        for name, entry in (sub.get("data") or {}).items():
            if name in data and data[name] != entry:
                raise SpecError(f"{path}: data {name!r} differs between included specs ({inc})")
            data[name] = entry
        cells += [_under_defaults(c, sub["defaults"]) for c in sub.get("cells") or []]
        references += sub["references"]
    data.update(raw.get("data") or {})
    raw["data"], raw["cells"] = data, cells + list(raw.get("cells") or [])
    raw["references"] = _unique(references + _as_list(raw.get("references"), path, "references"))
    return raw


def _under_defaults(cell, defaults: dict):
    if not defaults or not isinstance(cell, dict):
        return cell
    return {**cell, "overrides": {**defaults, **(cell.get("overrides") or {})}}


# ------------------------------------------------------------------------------------------ overlays
OVERLAY_KEYS = {"overlay", "name", "scale", "runs_dir", "data", "defaults", "cells", "drop", "add", "include",
                "references"}


def _apply_overlay(path: Path, raw: dict, repo: Path, seen: tuple[Path, ...]) -> dict:
    """``overlay: BASE``: the base spec's cells, patched, dropped and added to; its data entries replaced
    by name, its defaults merged under this spec's. Name and runs_dir are this spec's own (a twin must
    not write into the paper-scale runs folder); scale and references are inherited unless given."""
    unknown = sorted(set(raw) - OVERLAY_KEYS)
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {unknown} in an overlay; it takes {sorted(OVERLAY_KEYS)}")
    if "name" not in raw:
        raise SpecError(f"{path}: an overlay needs its own name: (its runs must not land in its base's runs_dir)")
    base_path = repo_path(str(raw["overlay"]), repo)
    if not base_path.is_file():
        raise SpecError(f"{path}: overlay {raw['overlay']} does not exist")
    base = read_spec(base_path, repo, seen)
    data, defaults = _mapping(raw.get("data"), path, "data"), _mapping(raw.get("defaults"), path, "defaults")
    where = f"{path} (overlay of {raw['overlay']})"
    cells = _patched_cells(where, base["cells"], raw.get("cells") or {}, raw.get("drop") or [], raw.get("add") or [])
    out = {"name": raw["name"], "scale": raw.get("scale", base.get("scale", "full")),
           "data": {**_mapping(base.get("data"), base_path, "data"), **data},
           "defaults": {**base["defaults"], **defaults},
           "cells": cells,
           "references": _unique(base["references"] + _as_list(raw.get("references"), path, "references"))}
    for key in ("runs_dir", "include"):
        if key in raw:
            out[key] = raw[key]
    return out


def _patched_cells(where: str, cells: list, patches, drop, add) -> list:
    names = [c.get("name") if isinstance(c, dict) else None for c in cells]
    if not isinstance(patches, dict):
        raise SpecError(f"{where}: cells: patches the base's cells by name (name: {{key: value}}); "
                        "cells the base does not have go under add:")
    if not isinstance(drop, list):
        raise SpecError(f"{where}: drop must be a list of the base's cell names; got {drop!r}")
    for key, asked in (("cells", list(patches)), ("drop", drop)):
        for name in asked:
            if name not in names:
                raise SpecError(f"{where}: {key}: {name!r} is no cell of the base; its cells are {names}")
    both = sorted(set(patches) & set(drop))
    if both:
        raise SpecError(f"{where}: {both} both patched (cells:) and dropped (drop:)")
    out = []
    for name, cell in zip(names, cells):
        if name in drop:
            continue
        out.append(_patch_cell(where, cell, patches[name]) if name in patches else cell)
    return _with_added(where, out, add)


def _patch_cell(where: str, cell: dict, patch) -> dict:
    """``overrides`` merge over the base cell's (dotted key by dotted key); any other key replaces."""
    if not isinstance(patch, dict):
        raise SpecError(f"{where}: cells.{cell['name']}: a patch is a mapping of cell keys; got {patch!r}")
    out = {**cell, **{k: copy.deepcopy(v) for k, v in patch.items() if k != "overrides"}}
    if "overrides" in patch:
        out["overrides"] = {**(cell.get("overrides") or {}), **(patch["overrides"] or {})}
    return out


def _with_added(where: str, cells: list, add) -> list:
    """``add: [cells]``, appended, or inserted before the cell an entry names under ``before:`` (a
    producer has to come before the base cells that are patched to need it)."""
    if not isinstance(add, list) or not all(isinstance(c, dict) for c in add):
        raise SpecError(f"{where}: add must be a list of cells (mappings); got {add!r}")
    out = list(cells)
    for entry in add:
        entry = dict(entry)
        before = entry.pop("before", None)
        if before is None:
            out.append(entry)
            continue
        names = [c.get("name") for c in out]
        if before not in names:
            raise SpecError(f"{where}: add: {entry.get('name')!r} goes before {before!r}, which is no cell "
                            f"here; cells are {names}")
        out.insert(names.index(before), entry)
    return out


# ------------------------------------------------------------------------------------ config lists
def read_config(value, repo: Path, where: str) -> dict:
    """A cell's ``config:``: one LightningCLI config file, or a list merged in order as repeating
    ``--config`` does (``merge_config``)."""
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise SpecError(f"{where}: config must be a path or a non-empty list of paths; got {value!r}")
    merged: dict = {}
    for f in files:
        cfg_path = repo_path(f, repo)
        if not cfg_path.is_file():
            raise SpecError(f"{where}: config {cfg_path} does not exist")
        loaded = yaml.safe_load(cfg_path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise SpecError(f"{where}: config {cfg_path} is not a mapping")
        merged = merge_config(merged, loaded)
    return merged


def merge_config(base: dict, over: dict) -> dict:
    """``over`` on top of ``base`` the way jsonargparse applies a second ``--config`` (checked against it
    in tests/test_specs.py): the top-level sections (trainer, model, data, …) merge, and so do
    ``init_args`` and class specs ({class_path, init_args}); a list of as many items as the earlier one
    merges item by item (a callback's init_args are kept when only its monitor is given again); any other
    value — a number, a list of another length, a dict-valued argument such as ``encoder_kwargs`` —
    replaces the earlier one whole. A new ``class_path`` keeps the earlier init_args (jsonargparse keeps
    those the new class accepts: compose classes with the same arguments; the parser check before a
    sweep refuses an argument the new class lacks)."""
    return _merge(base, over, section=True)


def _is_class_spec(value) -> bool:
    return isinstance(value, dict) and ("class_path" in value or "init_args" in value)


def _merge(base: dict, over: dict, section: bool) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        old = out.get(key)
        mergeable = isinstance(old, dict) and isinstance(value, dict) and (
            section or key == "init_args" or (_is_class_spec(old) and _is_class_spec(value)))
        if mergeable:
            out[key] = _merge(old, value, section=False)
        elif isinstance(old, list) and isinstance(value, list) and len(old) == len(value):
            out[key] = [_merge(o, v, section=False) if _is_class_spec(o) and _is_class_spec(v) else copy.deepcopy(v)
                        for o, v in zip(old, value)]
        else:
            out[key] = copy.deepcopy(value)
    return out
