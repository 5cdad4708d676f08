"""The result record of one run (one leaderboard cell's sample): schema, atomic write, validated read.

A record is ``result.json`` in the run's folder::

    {"run_id": str, "method": str, "task": str, "seed": int, "fraction": float, "fold": int (optional),
     "module": str (optional: the LightningModule class; "method" is the leaderboard row's name),
     "metrics": {"auc/mean": 0.81, "auc/Cardiomegaly": 0.81, "iou_acc@0.1/mean": 0.4, ...},
     "provenance": {"data": "twin" | "real", "scale": "smoke" | "full" | ..., "commit": str, ...},
     "curves": {"roc": {"<class>": {"fpr": [...], "tpr": [...]}}}          (optional)
    }
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .files import atomic_write_text

PREDICTIONS_FILE = "predictions.csv"
REQUIRED = {"run_id": str, "method": str, "task": str, "seed": int, "fraction": (int, float),
            "metrics": dict, "provenance": dict}
PROVENANCE = ("data", "scale", "commit")
RESULT_FILE = "result.json"


class ResultError(ValueError):
    pass


def validate(record: dict, where: str = "result") -> dict:
    for key, typ in REQUIRED.items():
        if key not in record:
            raise ResultError(f"{where}: missing key {key!r} (a result needs {sorted(REQUIRED)})")
        if not isinstance(record[key], typ) or isinstance(record[key], bool):
            raise ResultError(f"{where}: {key!r} should be {typ}, got {type(record[key]).__name__}")
    if "fold" in record and (not isinstance(record["fold"], int) or isinstance(record["fold"], bool)):
        raise ResultError(f"{where}: 'fold' should be an int, got {record['fold']!r}")
    missing = [k for k in PROVENANCE if k not in record["provenance"]]
    if missing:
        raise ResultError(f"{where}: provenance lacks {missing}: every number must say where it came from")
    if record["provenance"]["data"] not in ("twin", "real"):
        raise ResultError(f"{where}: provenance.data must be 'twin' or 'real', got {record['provenance']['data']!r}")
    for k, v in record["metrics"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ResultError(f"{where}: metric {k!r} is not a number ({v!r})")
    return record


def _clean(obj):
    """JSON has no NaN: write null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_result(folder: str | Path, record: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    validate({**record, "metrics": {k: (math.nan if v is None else v) for k, v in record["metrics"].items()}},
             str(folder / RESULT_FILE))
    return atomic_write_text(folder / RESULT_FILE, json.dumps(_clean(record), indent=1, sort_keys=True))


def read_results(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise ResultError(f"results folder {root} does not exist")
    files = sorted(root.rglob(RESULT_FILE))
    if not files:
        raise ResultError(f"results folder {root} holds no {RESULT_FILE}: nothing to put on a leaderboard")
    out = []
    for f in files:
        try:
            rec = json.loads(f.read_text())
        except ValueError as err:
            raise ResultError(f"{f}: not valid JSON ({err})") from err
        rec["metrics"] = {k: (math.nan if v is None else v) for k, v in rec.get("metrics", {}).items()}
        rec = validate(rec, str(f))
        rec["_dir"] = str(f.parent)  # where predictions.csv lies (never written back)
        rec["_mtime"] = f.stat().st_mtime  # the newest re-test of a checkpoint wins (leaderboard.assign_rows)
        out.append(rec)
    return out


def prediction_table(predictions: dict[str, dict], meta, class_names: list[str]) -> "pd.DataFrame":
    """One row per (split, test image): split, index, image, patient_id, then ``label/<class>`` and
    ``prob/<class>`` (classification) or the per-image scores (segmentation: dice, iou, hd95, …)."""
    import pandas as pd

    frames = []
    for split, got in predictions.items():
        index = np.asarray(got["index"])
        rows = meta.iloc[index]
        image = rows["image"] if "image" in rows else rows["path"].map(lambda p: Path(p).name)
        frame = {"split": split, "index": index, "image": np.asarray(image), "patient_id": rows["patient_id"].astype(str).to_numpy()}
        for key, value in got.items():
            if key == "index":
                continue
            value = np.asarray(value)
            if value.ndim == 2:
                for c, name in enumerate(class_names if value.shape[1] == len(class_names) else range(value.shape[1])):
                    frame[f"{key}/{name}"] = value[:, c]
            else:
                frame[key] = value
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_predictions(folder: str | Path, table) -> Path:
    return atomic_write_text(Path(folder) / PREDICTIONS_FILE, table.to_csv(index=False))


def read_predictions(folder: str | Path):
    import pandas as pd

    f = Path(folder) / PREDICTIONS_FILE
    return pd.read_csv(f, dtype={"patient_id": str, "image": str}) if f.is_file() else None


def test_table(metrics: dict[str, float], splits: tuple[str, ...], sizes: dict[str, int] | None = None) -> str:
    """The test metrics as a plain table with one column per evaluation split, named (test, loc, shift …),
    printed by ``cxrbench test`` instead of Lightning's, which has one unnamed column per dataloader and
    repeats every metric logged at the epoch's end in each of them. ``shift/auc/mean`` is the shift
    column's ``auc/mean``; IoU-accuracy (``iou_acc@…``) is scored on the ``loc`` split."""
    columns: dict[str, dict[str, float]] = {s: {} for s in splits or ("test",)}
    for key, value in metrics.items():
        head, _, rest = key.partition("/")
        if head in columns and head != "test" and rest:
            columns[head][rest] = value
        elif key.startswith("iou_acc@") and "loc" in columns:
            columns["loc"][key] = value
        else:
            columns.setdefault("test", {})[key] = value
    columns = {s: v for s, v in columns.items() if v}
    if not columns:
        return "no test metrics"
    sizes = sizes or {}
    heads = [f"{s} (n={sizes[s]})" if s in sizes else s for s in columns]
    rows = sorted({k for v in columns.values() for k in v})
    cell = lambda v: "" if v is None else f"{v:.4f}" if isinstance(v, float) and not float(v).is_integer() else f"{v:g}"  # noqa: E731
    table = [["metric", *heads]] + [[r, *(cell(columns[s].get(r)) for s in columns)] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
