"""What the runner and the leaderboards do about the filesystem the user gave them.

- **One-line errors.** A read-only, full or missing folder is the user's to fix, so it is reported as
  ``cannot write PATH: read-only file system`` (``CannotWrite``, raised by ``writing(path)`` around a
  write) or ``PATH: reason`` (``describe_os_error`` for any other ``OSError``), never as a traceback.
- **Litter of interrupted writes.** Every atomic write here writes ``.NAME.tmp<pid>`` (or
  ``.STEM.tmp<pid>.EXT``) beside its target and renames it into place; a killed writer leaves it behind.
  ``remove_interrupted_writes`` removes those whose writer process is gone (the pid is in the name: a
  live writer's file is never touched); ``remove_truncated_checkpoints`` removes checkpoints cut by a kill.
- **Stale outputs.** A folder rebuilt by a writer that records what it produced (``OUTPUTS_FILE``) loses
  the files an earlier build produced and this one no longer does (``remove_stale_outputs``); nothing
  that writer did not produce is removed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path

# The one atomic text writer. It lives on the lowest floor (the data layer writes its caches and lists
# with it too, and never imports cxrbench); the reporting layer (results, runner, leaderboards) takes
# it from here, its own module for the filesystem.
from data_modules.io import atomic_write_text

__all__ = ["CannotWrite", "atomic_write_text", "describe_os_error", "interrupted_writes",
           "remove_interrupted_writes", "remove_own_partial_writes", "remove_stale_outputs",
           "remove_truncated_checkpoints", "truncated_zip", "writer_alive", "writing"]

#: ``.NAME.tmp<pid>`` or ``.STEM.tmp<pid>.EXT``: what ``atomic_write_text``, ``save_artifact``, the heatmap
#: writer, the runner's model.ckpt copy and the leaderboard's plots write before renaming into place
TEMPORARY = re.compile(r"^\..+\.tmp(?P<pid>\d+)(\.[A-Za-z0-9]+)?$")
#: errors that can only come from writing: the path is named as one that cannot be written
WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: the file in which a rebuilt folder lists what its writer produced (for ``remove_stale_outputs``)
OUTPUTS_FILE = ".outputs.json"


class CannotWrite(OSError):
    """A write the filesystem refused (read-only, full, no permission, missing folder); its message is
    one line naming the path."""

    def __init__(self, path: str | Path, reason: str, code: int | None = None):
        super().__init__(code, reason, str(path))
        self.line = f"cannot write {path}: {reason}"

    def __str__(self) -> str:
        return self.line


def _reason(err: OSError) -> str:
    text = err.strerror or (os.strerror(err.errno) if err.errno else str(err))
    return text[:1].lower() + text[1:]


def _shown_path(err: OSError, fallback: str | Path | None) -> str | Path | None:
    """The path a user knows: the one the error names, unless that is a writer's temporary file (then
    the target it was for, which the caller passes as ``fallback``)."""
    named = err.filename
    if err.errno in WRITE_ERRNOS and err.filename2 is not None:
        named = err.filename2  # a copy or rename that could not write names its source first
    if named is not None and not TEMPORARY.match(Path(str(named)).name):
        return named
    return fallback if fallback is not None else named


def describe_os_error(err: OSError, path: str | Path | None = None) -> str:
    """One line for an ``OSError``: ``cannot write PATH: reason`` when it can only come from a write
    (read-only, full disk, quota), else ``PATH: reason``. ``path`` stands in when the error names none
    (a failed ``write()`` names no file)."""
    if isinstance(err, CannotWrite):
        return str(err)
    if err.errno is None:  # raised with a message of its own (FileNotFoundError("...")): keep it
        return str(err)
    shown = _shown_path(err, path)
    if err.errno in WRITE_ERRNOS:
        return f"cannot write {shown}: {_reason(err)}" if shown is not None else f"cannot write: {_reason(err)}"
    return f"{shown}: {_reason(err)}" if shown is not None else _reason(err)


def _torch_write_failed(err: RuntimeError) -> bool:
    # torch.save reports a failed write of its zip container (a full disk) only as this RuntimeError
    return "inline_container" in str(err) or "file write failed" in str(err)


@contextmanager
def writing(path: str | Path):
    """Around a write of ``path`` (a file or a folder written into): any ``OSError`` becomes
    ``CannotWrite`` naming it (or the file the error names), and so does torch.save's failed write."""
    try:
        yield
    except CannotWrite:
        raise
    except OSError as err:
        raise CannotWrite(_shown_path(err, path), _reason(err), err.errno) from err
    except RuntimeError as err:
        if not _torch_write_failed(err):
            raise
        raise CannotWrite(path, "the write failed (is the disk full?)", errno.EIO) from err


# --------------------------------------------------------------------------------- interrupted writes
def writer_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def interrupted_writes(folder: str | Path) -> list[Path]:
    """The temporaries in ``folder`` (not below it) whose writer process is gone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for entry in sorted(folder.iterdir()):
        m = TEMPORARY.match(entry.name)
        if m and not writer_alive(int(m["pid"])):
            out.append(entry)
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_interrupted_writes(folder: str | Path, log=print) -> list[Path]:
    """Remove what killed writers left in ``folder`` (an artifact's ``.encoder.pt.tmp<pid>``, a heatmap
    store's ``.heatmaps.tmp<pid>/``, a ``.result.json.tmp<pid>``); returns what was removed."""
    removed = interrupted_writes(folder)
    for path in removed:
        _remove(path)
        log(f"removed {path}: left by an interrupted write (its process {TEMPORARY.match(path.name)['pid']} is gone)")
    return removed


def remove_own_partial_writes(folder: str | Path) -> None:
    """After this process failed writing into ``folder`` (a full disk), remove its own temporaries."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        m = TEMPORARY.match(entry.name)
        if m and int(m["pid"]) == os.getpid():
            _remove(entry)


# ------------------------------------------------------------------------------ truncated checkpoints
def truncated_zip(path: Path) -> bool:
    """A torch.save file (a zip) whose end is missing: it starts as a zip but has no central directory.
    Reads the first 4 bytes and the last few kB, never the whole checkpoint. A file that is not a zip at
    all is not called truncated (it may be something else the user put there)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return False
        return not zipfile.is_zipfile(path)
    except OSError:
        return False


def remove_truncated_checkpoints(folder: str | Path, log=print) -> list[Path]:
    """Remove the ``*.ckpt`` in ``folder`` and in its ``unreadable/`` (where unreadable ones were set
    aside) that a kill cut short: nothing can ever load them, and at paper scale each is gigabytes."""
    folder = Path(folder)
    found = [p for d in (folder, folder / "unreadable") if d.is_dir()
             for p in sorted(d.iterdir()) if ".ckpt" in p.name and p.is_file() and truncated_zip(p)]
    for path in found:
        path.unlink(missing_ok=True)
        log(f"removed {path}: a checkpoint cut short by an interrupted write")
    return found


# ------------------------------------------------------------------------------------- stale outputs
def remove_stale_outputs(out: str | Path, produced: list[Path], owned: tuple[str, ...] = (), log=print) -> list[Path]:
    """Record ``produced`` (files in ``out``) in ``out``'s ``OUTPUTS_FILE`` and remove the files the
    previous record lists that are not produced any more (a plot of a task that is gone). A folder built
    before such records existed has none: then the files matching the writer's own name patterns
    ``owned`` (globs) stand for the earlier build. Called after every new file is written, so an
    interrupted rebuild leaves at worst a stale file, never a gap."""
    out = Path(out)
    record = out / OUTPUTS_FILE
    names = sorted({Path(p).name for p in produced})
    before = _recorded_outputs(record) if record.exists() else sorted({p.name for g in owned for p in out.glob(g)})
    stale = [out / n for n in sorted(set(before) - set(names)) if (out / n).is_file()]
    with writing(record):
        atomic_write_text(record, json.dumps(names, indent=1))
    for path in stale:
        path.unlink(missing_ok=True)
        log(f"removed {path}: an earlier build made it, this one does not")
    return stale


def _recorded_outputs(record: Path) -> list[str]:
    try:
        names = json.loads(record.read_text())
    except (OSError, ValueError):
        return []
    # only plain names of files in that folder: a damaged record never reaches outside it
    return [n for n in names if isinstance(n, str) and n == Path(n).name and not n.startswith(".")] \
        if isinstance(names, list) else []
