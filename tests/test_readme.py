"""Every command in README.md's ```bash blocks runs, or is at least well formed.

Each command gets a rule by what it is; a command no rule knows fails the test (add a rule here):

- ``cxrbench twin|summary``: run for real, shrunk (``--n`` a few dozen images, ``--size 64``, one
  worker); an optional ``[--opt value]`` is run both without and with it (into its own ``--out``).
- ``cxrbench fit|validate|test|predict --config …``: run for real on the twin the README made, with
  small overrides appended (one short epoch at 64 px, CPU); ``--print_config`` as written.
- ``cxrbench bench SPEC …``: a ``--dry-run`` as written; a real sweep is minutes to days, so with
  ``--dry-run`` appended to its own options: the spec loads, every cell's config goes through the
  LightningCLI parser, and the options parse (``CXR_DATA`` points at an empty folder: a dry run needs
  the variable, not the data).
- ``make TARGET``: ``make -n TARGET`` (the target exists and expands), and every ``cxrbench bench``
  line its recipe holds is dry-run as above.

The commands run in README order in one scratch folder that looks like the repository root (a
``benchmarks`` link), so ``data/nih`` made by ``cxrbench twin`` is what ``cxrbench fit`` reads and
nothing lands in the checkout. A config, spec, target or option that does not exist fails here: the
last test feeds the harness broken commands of each kind to show it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: images per twin in the scratch folder (nih: enough cardiomegaly rows for the AMM cell's splits)
TWIN_N = {"nih": 120}
TWIN_N_DEFAULT = 30
#: appended to a Lightning command (later options win): one short epoch at 64 px on the CPU
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--data.init_args.image_size", "64",
        "--data.init_args.eval_size", "64", "--data.init_args.cache_size", "64", "--data.init_args.batch_size", "8",
        "--data.init_args.num_workers", "0"]
LIGHTNING = ("fit", "validate", "test", "predict")


@dataclass
class Command:
    line: int                       # README line number
    text: str                       # as written, comment removed
    variants: list[list[str]] = field(default_factory=list)  # argv without / with each optional [..] part

    @property
    def argv(self) -> list[str]:
        return self.variants[0]

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def readme_commands(text: str) -> list[tuple[int, list[Command]]]:
    """(block number, its commands) for every ```bash block; ``\\`` continuations joined."""
    blocks: list[tuple[int, list[Command]]] = []
    fence, pending, start = None, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("```"):
            if fence is None:
                fence = s[3:].strip() or "text"
                if fence == "bash":
                    blocks.append((len(blocks) + 1, []))
            else:
                fence = None
            continue
        if fence != "bash" or (not s and not pending):
            continue
        if not pending:
            start = n
        if s.endswith("\\"):
            pending += s[:-1] + " "
            continue
        tokens = shlex.split(pending + s, comments=True)
        pending = ""
        if tokens:
            blocks[-1][1].append(_command(start, tokens))
    return blocks


def _command(line: int, tokens: list[str]) -> Command:
    base, optional, group = [], [], None
    for t in tokens:
        if group is None and t.startswith("["):
            group, t = [], t[1:]
        if group is not None:
            end = t.endswith("]")
            group.append(t[:-1] if end else t)
            if end:
                optional.append(group)
                group = None
        else:
            base.append(t)
    if group is not None:
        raise AssertionError(f"README.md:{line}: unclosed [ in {' '.join(tokens)}")
    cmd = Command(line, " ".join(tokens), [base])
    cmd.variants += [base + g for g in optional]
    return cmd


def rule(argv: list[str]) -> str | None:
    """What the test does with a README command (None: no rule, the test fails)."""
    if argv[0] == "make" and len(argv) >= 2 and all(re.fullmatch(r"[\w.-]+", a) for a in argv[1:]):
        return "make -n"
    if argv[0] != "cxrbench" or len(argv) < 2:
        return None
    sub = argv[1]
    if sub in ("twin", "summary"):
        return "run"
    if sub in LIGHTNING:
        return "run" if "--print_config" in argv else "run tiny"
    if sub == "bench":
        return "run" if "--dry-run" in argv else "dry-run"
    return None


ALL = readme_commands(README.read_text())
COMMANDS = [c for _, cmds in ALL for c in cmds]


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def cxrbench(argv: list[str]) -> Outcome:
    """``cxrbench ARGS`` in this process (one import of torch and Lightning for the whole README)."""
    from cxrbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse, LightningCLI and our own error exits
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                err.write(str(e.code))
    return Outcome(int(code or 0), out.getvalue(), err.getvalue())


def shrunk_twin(argv: list[str], variant: int) -> list[str]:
    args, dataset = list(argv[1:]), argv[2]
    out: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in ("--n", "--size", "--workers"):
            i += 2
            continue
        if args[i] == "--out" and variant:  # an alternative of the same twin: another folder
            out += ["--out", f"{args[i + 1]}-variant{variant}"]
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out + ["--n", str(TWIN_N.get(dataset, TWIN_N_DEFAULT)), "--size", "64", "--workers", "1"]


def dry_run(argv: list[str]) -> list[str]:
    """``cxrbench bench SPEC OPTS`` as a dry run with the same options."""
    return argv[1:] + ([] if "--dry-run" in argv else ["--dry-run"])


_DRY_RUNS: dict[tuple, Outcome] = {}


def bench_dry_run(argv: list[str]) -> Outcome:
    """A dry run once per (spec, options) and process: `make bench-smoke` and the README's own line are one
    (every scratch folder is an empty copy of the repository root, so the answer is the same in each)."""
    key = tuple(dry_run(argv))
    if key not in _DRY_RUNS:
        _DRY_RUNS[key] = cxrbench(list(key))
    return _DRY_RUNS[key]


def check(cmd: Command, workdir: Path, variant: int = 0) -> str | None:
    """Run or check one command variant in ``workdir``; a message if it failed, else None."""
    argv = cmd.variants[variant]
    how = rule(argv)
    if how is None:
        return f"{cmd}: no rule for this command (add one to tests/test_readme.py)"
    if how == "make -n":
        res = subprocess.run(["make", "-n", "-C", str(REPO), *argv[1:]], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            return f"{cmd}: `make -n` failed: {res.stderr.strip()}"
        for line in res.stdout.splitlines():  # the sweep a target runs: its spec and options well formed
            tokens = shlex.split(line)
            if len(tokens) > 2 and Path(tokens[0]).name == "cxrbench" and tokens[1] == "bench":
                got = bench_dry_run(tokens)
                if got.code != 0:
                    return f"{cmd}: its recipe's `{line.strip()}` is not well formed: {got.err.strip()}"
        return None
    before = set(workdir.rglob("*"))
    if argv[1] == "twin":
        got = cxrbench(shrunk_twin(argv, variant))
    elif how == "run tiny":
        got = cxrbench(argv[1:] + TINY)
    elif how == "dry-run" or argv[1] == "bench":
        got = bench_dry_run(argv)
    else:
        got = cxrbench(argv[1:])
    if got.code != 0:
        return f"{cmd} (variant {variant}): exit {got.code}: {(got.err or got.out).strip()[-2000:]}"
    new = {p.name for p in set(workdir.rglob("*")) - before}
    expected = {"twin": "twin.json", "fit": "last.ckpt", "test": "result.json", "predict": "predictions.csv"}
    if argv[1] == "summary" and not got.out.strip():
        return f"{cmd}: printed nothing"
    if "--print_config" in argv:
        config = yaml.safe_load(got.out)
        if not (isinstance(config, dict) and "class_path" in (config.get("model") or {})):
            return f"{cmd}: did not print a config with a model: {got.out[:300]!r}"
    elif argv[1] in expected and expected[argv[1]] not in new:
        return f"{cmd}: wrote no {expected[argv[1]]} (new files: {sorted(new)[:20]})"
    return None


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch folder that looks like the repository root to the README's relative paths."""
    (tmp_path / "benchmarks").symlink_to(REPO / "benchmarks")
    (tmp_path / "CXR_DATA").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXRBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_DATA", str(tmp_path / "CXR_DATA"))
    monkeypatch.setenv("CXRBENCH_WANDB", "0")
    monkeypatch.setenv("WANDB_MODE", "offline")
    return tmp_path


# ------------------------------------------------------------------------------------------------ tests


def test_every_bash_block_has_commands_and_every_command_a_rule():
    assert ALL, "README.md has no ```bash block"
    for block, cmds in ALL:
        assert cmds, f"```bash block {block} of README.md yields no command"
    missing = [str(c) for c in COMMANDS for v in c.variants if rule(v) is None]
    assert not missing, "README commands without a rule in tests/test_readme.py:\n" + "\n".join(missing)


def test_readme_data_and_lightning_commands_run_on_a_tiny_twin(workdir):
    """twin → summary → fit → test → print_config, in README order, in one folder."""
    ran, failures = [], []
    for cmd in COMMANDS:
        if rule(cmd.argv) not in ("run", "run tiny") or cmd.argv[1] == "bench":
            continue
        for v in range(len(cmd.variants)):
            failure = check(cmd, workdir, v)
            ran.append(cmd.argv[1])
            if failure:
                failures.append(failure)
    assert not failures, "\n\n".join(failures)
    assert {"twin", "summary", "fit", "test"} <= set(ran)  # the README's own walk-through is all here


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if rule(c.argv) in ("make -n", "dry-run")
                                 or (rule(c.argv) == "run" and c.argv[1] == "bench")], ids=str)
def test_readme_sweep_and_make_commands_are_well_formed(cmd, workdir):
    for v in range(len(cmd.variants)):
        assert check(cmd, workdir, v) is None


def test_inline_make_targets_and_scripts_named_in_the_readme_exist():
    """The commands quoted in the prose: `make X` targets exist, `python path.py` / `python -m mod` name
    a script or module of this checkout."""
    text = README.read_text()
    targets = set(re.findall(r"`make ([\w.-]+)`", text))
    assert targets, "no `make X` in README prose"
    res = subprocess.run(["make", "-n", "-C", str(REPO), *sorted(targets)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    scripts = re.findall(r"`python (?!-m )(\S+\.py)[^`]*`", text)
    modules = re.findall(r"`python -m ([\w.]+)[^`]*`", text)
    assert scripts and modules
    assert [s for s in scripts if not (REPO / s).is_file()] == []
    import sys

    sys.path.insert(0, str(REPO))
    try:
        assert [m for m in modules if importlib.util.find_spec(m) is None] == []
    finally:
        sys.path.remove(str(REPO))


def test_a_broken_readme_command_fails_the_harness(workdir):
    """Broken commands of every kind the rules handle are caught (so the tests above can fail)."""
    broken = readme_commands("\n".join([
        "```bash",
        "make no-such-target",
        "cxrbench bench benchmarks/no_such_spec.yaml --dry-run",
        "cxrbench bench benchmarks/smoke.yaml --no-such-option 4",
        "cxrbench fit --config benchmarks/amm/configs/no_such_config.yaml --print_config",
        "cxrbench fit --config benchmarks/amm/configs/amm_cardiomegaly.yaml --model.init_args.no_such_arg 1 --print_config",
        "cxrbench twin nih --out data/x --n 10 --no-such-flag 1",
        "cxrbench summary data/never-made",
        "cxrbench frobnicate data/nih",
        "```",
    ]))[0][1]
    assert len(broken) == 8
    for cmd in broken:
        assert check(cmd, workdir) is not None, f"not caught: {cmd}"
    ok = readme_commands("```bash\ncxrbench twin covidx --out data/c --n 5 [--vocabulary binary]  # a comment\n```")
    (cmd,) = ok[0][1]
    assert cmd.variants == [["cxrbench", "twin", "covidx", "--out", "data/c", "--n", "5"],
                            ["cxrbench", "twin", "covidx", "--out", "data/c", "--n", "5", "--vocabulary", "binary"]]


def test_the_readme_names_every_dataset_make_bench_all_reads(workdir):
    from cxrbench.runner.spec import load_spec

    spec = load_spec("benchmarks/all.yaml")
    used = {c.data_name for c in spec.cells}
    sentence = re.search(r"`make bench-all` needs `CXR_DATA` holding (.*?) in the release", README.read_text())
    assert sentence, "README no longer says what `make bench-all` needs"
    assert set(re.findall(r"`(\w+)/`", sentence.group(1))) == used


def test_every_benchmark_script_starts_as_a_file_from_any_folder(tmp_path):
    """`python benchmarks/X.py --help` from another folder: a script that imports ``benchmarks.*`` must
    put the checkout on the path itself (byoa_gmml.py did not, and failed before parsing its arguments)."""
    import sys

    scripts = sorted(p for p in [*(REPO / "benchmarks").glob("*.py"), *(REPO / "benchmarks").glob("*/*.py")]
                     if p.name != "__init__.py" and p.parent.name != "perf")  # a paper room's scripts too
    assert len(scripts) >= 5
    failed = {}
    for script in scripts:
        res = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0 or "usage" not in res.stdout.lower():
            failed[script.name] = res.stderr[-300:]
    assert failed == {}, failed
