"""A malformed W&B project or entity stops a sweep, a cell or a LightningCLI run with a message naming
the option, before anything is written. (Whether an entity exists cannot be known offline: that is
`wandb sync`'s to report, and nothing here tests it.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxrbench.wandb_names import WandbNameError, check_logger_config, check_wandb_env, name_problem

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TOY = str(TESTS / "configs/toy_nih8.yaml")

NAMES = ["cxrbench", "my-team_2", "with space", "ünïcode", "a" * 128, "a" * 129, "a/b", "a\\b", "a#b", "a?b",
         "a%b", "a:b", "team/", ":"]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _env(tmp_path, **wandb):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env["CXRBENCH_CACHE"] = str(tmp_path / "cache")
    env["WANDB_MODE"] = "offline"
    env["CXRBENCH_WANDB"] = "1"
    for k in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY"):
        env.pop(k, None)
    env.update(wandb)
    return env


@pytest.mark.parametrize("name", NAMES)
def test_project_names_are_judged_as_wandb_itself_judges_them(name):
    from wandb.errors import UsageError
    from wandb.sdk.wandb_settings import Settings

    try:
        Settings(project=name)
        wandb_accepts = True
    except UsageError:
        wandb_accepts = False
    assert (name_problem(name, "project") is None) == wandb_accepts


def test_env_names_are_checked_only_when_wandb_is_on_and_the_message_names_the_variable():
    check_wandb_env({})  # project cxrbench, no entity
    check_wandb_env({"WANDB_PROJECT": "p", "WANDB_ENTITY": ""})  # empty entity = W&B's default entity
    with pytest.raises(WandbNameError, match=r"WANDB_ENTITY.*'/'"):
        check_wandb_env({"WANDB_ENTITY": "org/team"})
    with pytest.raises(WandbNameError, match=r"WANDB_PROJECT\) is empty"):
        check_wandb_env({"WANDB_PROJECT": ""})
    with pytest.raises(WandbNameError, match=r"WANDB_PROJECT\) has 129 characters"):
        check_wandb_env({"WANDB_PROJECT": "p" * 129})
    check_wandb_env({"WANDB_PROJECT": "a/b", "CXRBENCH_WANDB": "0"})  # W&B off: its names are not used


def test_a_configured_wandb_logger_is_checked_with_lightnings_and_wandbs_fallbacks():
    wb = "lightning.pytorch.loggers.WandbLogger"
    check_logger_config(None, env={"WANDB_PROJECT": "a/b"})  # no W&B logger: nothing to check
    check_logger_config({"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"name": "a/b"}}, env={})
    with pytest.raises(WandbNameError, match=r"--trainer\.logger\.init_args\.project"):
        check_logger_config({"class_path": wb, "init_args": {"project": "a?b"}}, env={})
    # no project given: Lightning falls back to WANDB_PROJECT, W&B to WANDB_ENTITY
    with pytest.raises(WandbNameError, match=r"from WANDB_PROJECT"):
        check_logger_config({"class_path": wb, "init_args": {"project": None}}, env={"WANDB_PROJECT": "x%y"})
    with pytest.raises(WandbNameError, match=r"from WANDB_ENTITY"):
        check_logger_config({"class_path": wb, "init_args": {}}, env={"WANDB_ENTITY": "a:b"})
    with pytest.raises(WandbNameError, match=r"trainer\.logger\[1\]\.init_args\.entity"):
        check_logger_config([{"class_path": "lightning.pytorch.loggers.CSVLogger"},
                             {"class_path": wb, "init_args": {"project": "ok", "entity": "t#1"}}], env={})
    check_logger_config({"class_path": wb, "init_args": {"project": "ok", "entity": "my-team"}},
                        env={"WANDB_PROJECT": "a/b"})  # the explicit project wins over the variable


def _spec(tmp_path) -> Path:
    """A sweep whose dataset is a twin still to be generated: a run that got past the check would write it."""
    spec = {"name": "t", "scale": "test", "runs_dir": str(tmp_path / "runs"),
            "data": {"nih": {"root": str(tmp_path / "data/nih"), "twin": {"n": 40, "size": 64, "seed": 0}}},
            "defaults": {}, "cells": [{"name": "toy", "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih"}]}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _bench(tmp_path, spec, *extra, **wandb):
    return subprocess.run([sys.executable, "-m", "cxrbench.cli", "bench", str(spec), *extra], capture_output=True,
                          text=True, cwd=tmp_path, env=_env(tmp_path, **wandb), timeout=300)


def test_bench_refuses_a_malformed_name_before_any_data_or_run_folder_is_made(tmp_path):
    spec = _spec(tmp_path)
    before = _files(tmp_path)
    for extra, var, value, shown in (([], "WANDB_PROJECT", "cxr/bench", "'/'"),
                                     (["--dry-run"], "WANDB_ENTITY", "my#team", "'#'")):
        res = _bench(tmp_path, spec, *extra, **{var: value})
        assert res.returncode == 2, res.stderr
        assert f"(from {var})" in res.stderr and shown in res.stderr and "Nothing was run or written" in res.stderr
        assert "Traceback" not in res.stderr
        assert _files(tmp_path) == before  # no twin, no runs/, no cache, no wandb/
    # with W&B off the same variable is never used: the dry run goes through
    off = _bench(tmp_path, spec, "--dry-run", WANDB_PROJECT="cxr/bench", CXRBENCH_WANDB="0")
    assert off.returncode == 0 and "1 cells" in off.stdout, off.stderr


def test_a_cell_started_directly_refuses_before_its_lock_and_trainer(tmp_path):
    from cxrbench.runner.launch import write_cell
    from cxrbench.runner.spec import load_spec

    spec = load_spec(_spec(tmp_path))
    run_dir = write_cell(spec, spec.cells[0])
    before = _files(run_dir)
    res = subprocess.run([sys.executable, "-m", "cxrbench.runner.cell", str(run_dir)], capture_output=True, text=True,
                         cwd=tmp_path, env=_env(tmp_path, WANDB_PROJECT="a:b"), timeout=300)
    assert res.returncode == 2 and "(from WANDB_PROJECT)" in res.stderr, res.stderr
    assert _files(run_dir) == before == ["cell.json", "config.yaml"]


def test_cxrbench_fit_refuses_a_malformed_wandb_logger_before_the_trainer_exists(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)  # real data: past the check, fit would start writing
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "cxrbench.cli", "fit", "--config", TOY, "--data.init_args.root", str(root),
                          "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
                          "--trainer.logger.init_args.project", "chest?xray",
                          "--trainer.logger.init_args.save_dir", str(out), "--trainer.default_root_dir", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=300)
    assert res.returncode != 0
    assert "--trainer.logger.init_args.project" in res.stderr and "'?'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists() and not (tmp_path / "wandb").exists()
