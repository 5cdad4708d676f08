"""W&B project and entity names, checked before a Trainer is built or anything is written.

What can be known before training, and what cannot:

- Offline (the default here: no ``WANDB_API_KEY``), W&B has no server to ask, so it cannot know
  whether an entity or a project exists; it writes the run under whatever names it is given, and
  ``wandb sync`` is the first step that learns (and reports) that an entity does not exist or is not
  yours. Nothing here can do better without a network, so nothing here pretends to.
- Whether a name is *well formed* is known now. W&B's own rule for project names (``wandb.Settings``):
  at most 128 characters, none of ``/ \\ # ? % :``. Offline, W&B only applies it when the run starts
  — in a sweep cell after the data are read and the model is built, leaving a half-made run folder —
  and it applies no rule at all to the entity. The entity is a path segment of every run's address
  (``entity/project/run``) just as the project is, so the same rule is applied to it here.
- A project set to the empty string would file every run under an unnamed project: refused. An
  empty entity is W&B's "no entity" (your default one), so it passes.

``check_wandb_env`` covers the sweep runner (``WANDB_PROJECT`` / ``WANDB_ENTITY``; ``cxrbench bench``
and each cell call it first); ``check_logger_config`` covers a ``WandbLogger`` configured for
``cxrbench fit|validate|test|predict`` (``--trainer.logger``), before LightningCLI builds the Trainer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

#: W&B's characters refused in a project name (wandb.sdk.wandb_settings.Settings.validate_project)
FORBIDDEN = "/\\#?%:"
MAX_LENGTH = 128
DEFAULT_PROJECT = "cxrbench"  # the runner's project when WANDB_PROJECT is not set


class WandbNameError(ValueError):
    """A W&B project or entity name that W&B would refuse or misfile; names the option it came from."""


def name_problem(value: str, kind: str) -> str | None:
    """Why ``value`` is not a usable W&B ``kind`` ("project" or "entity") name, or None."""
    if value == "":
        return None if kind == "entity" else "is empty"
    if len(value) > MAX_LENGTH:
        return f"has {len(value)} characters; a W&B {kind} name may have at most {MAX_LENGTH}"
    bad = sorted({c for c in value if c in FORBIDDEN}, key=FORBIDDEN.index)
    if bad:
        return f"contains {' '.join(repr(c) for c in bad)}; none of {' '.join(FORBIDDEN)} may appear in a W&B {kind} name"
    return None


def check_name(value: str | None, kind: str, option: str, off: str = "") -> None:
    """Raise ``WandbNameError`` naming ``option`` if ``value`` is not a usable W&B name (None = unset);
    ``off`` says how to turn W&B off instead."""
    if value is None:
        return
    problem = name_problem(str(value), kind)
    if problem:
        raise WandbNameError(f"W&B {kind} {str(value)!r} (from {option}) {problem}. Nothing was run or written; "
                             f"fix {option}{f' or {off}' if off else ''}.")


def wandb_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("CXRBENCH_WANDB", "1") != "0"


def check_wandb_env(env: Mapping[str, str] | None = None) -> None:
    """The names the sweep runner's WandbLogger will use (``runner/cell.py``: ``WANDB_PROJECT``, default
    ``cxrbench``; ``WANDB_ENTITY``, default unset), when W&B is on."""
    env = os.environ if env is None else env
    if not wandb_enabled(env):
        return
    off = "set CXRBENCH_WANDB=0 to run without W&B"
    check_name(env.get("WANDB_PROJECT", DEFAULT_PROJECT), "project", "WANDB_PROJECT", off)
    check_name(env.get("WANDB_ENTITY"), "entity", "WANDB_ENTITY", off)


def _get(obj, key):
    """``obj[key]`` of a dict or a jsonargparse Namespace (both have ``get``), else its attribute."""
    return obj.get(key) if hasattr(obj, "get") else getattr(obj, key, None)


def _wandb_loggers(logger) -> Iterator[tuple[str, object]]:
    """(option prefix, init_args) of every WandbLogger in a parsed ``trainer.logger`` value (a logger,
    a list of them, True/False or None)."""
    items = logger if isinstance(logger, (list, tuple)) else [logger]
    for i, item in enumerate(items):
        if item is None or isinstance(item, bool):
            continue
        class_path = _get(item, "class_path")
        if isinstance(class_path, str) and class_path.rsplit(".", 1)[-1] == "WandbLogger":
            yield ("--trainer.logger" if len(items) == 1 else f"trainer.logger[{i}]"), _get(item, "init_args") or {}


def check_logger_config(logger, env: Mapping[str, str] | None = None) -> None:
    """Every ``WandbLogger`` in a LightningCLI ``trainer.logger`` value: its ``project`` (else
    ``WANDB_PROJECT``, as Lightning falls back) and ``entity`` (else ``WANDB_ENTITY``, as W&B does)."""
    env = os.environ if env is None else env
    for prefix, args in _wandb_loggers(logger):
        project, entity = _get(args, "project"), _get(args, "entity")
        off = f"configure another {prefix.lstrip('-')} than the WandbLogger"
        if project:
            check_name(project, "project", f"{prefix}.init_args.project", off)
        else:
            check_name(env.get("WANDB_PROJECT"), "project", "WANDB_PROJECT", off)
        if entity is not None:
            check_name(entity, "entity", f"{prefix}.init_args.entity", off)
        else:
            check_name(env.get("WANDB_ENTITY"), "entity", "WANDB_ENTITY", off)


__all__ = ["WandbNameError", "check_name", "check_wandb_env", "check_logger_config", "name_problem", "FORBIDDEN",
           "MAX_LENGTH"]
