"""Where a number came from: twin or real data, at what scale, from which commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def commit() -> str:
    """The git commit of this checkout (or $CXRBENCH_COMMIT), with '+dirty' for local changes."""
    if os.environ.get("CXRBENCH_COMMIT"):
        return os.environ["CXRBENCH_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")


def data_provenance(root: str | Path) -> dict:
    """{'data': 'twin'|'real', 'scale': ..., 'dataset_root': ..., 'twin_spec': {...}}."""
    from data_modules.twin.io import read_manifest

    root = Path(root)
    spec = read_manifest(root)
    if spec is None:
        return {"data": "real", "scale": "full", "dataset_root": str(root)}
    return {"data": "twin", "scale": f"twin n={spec['n']} size={spec['size']}", "dataset_root": str(root),
            "twin_spec": spec}
