"""What makes two runs the same experiment: the recipe fingerprint and the data identity of a run.

A leaderboard cell pools runs that differ only by what a sweep varies: the training seed, the label
fraction, the CV fold, and where files lie. Everything else in the resolved LightningCLI config is the
*recipe* (model and its arguments, data preset, image size, global batch, epochs, callbacks that
change training); two runs with different recipes are two rows, never one cell.

``recipe_of(config)`` is the resolved config without those keys; ``fingerprint(recipe)`` a short hash
of it; ``differences(recipes)`` the keys whose values differ between recipes (a row's label).
``data_identity(data contract)`` says which data the run saw: dataset, twin spec or real release, split seed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

#: Keys a sweep varies or that say where files lie / how the run is executed: not part of the recipe.
TOP_LEVEL_VOLATILE = {"seed_everything", "ckpt_path", "config", "verbose", "return_predictions", "weights_only"}
TRAINER_VOLATILE = {"logger", "default_root_dir", "enable_progress_bar", "enable_model_summary", "devices",
                    "num_nodes", "strategy", "accelerator", "sync_batchnorm", "log_every_n_steps", "benchmark",
                    "deterministic", "enable_checkpointing", "plugins", "profiler", "barebones", "use_distributed_sampler"}
DATA_VOLATILE = {"root", "cache_dir", "num_workers", "pin_memory", "fraction", "subset_seed", "fold", "cache",
                 "split_seed", "on_missing"}
#: linked from the DataModule at instantiation (the data identity covers them)
MODEL_LINKED = {"num_classes", "class_names", "task"}
#: callbacks that write or log what a run did, never how it trains
REPORTING_CALLBACKS = ("WriteResult", "WritePredictions", "WandbTestMedia", "LearningRateMonitor", "FlushOnCheckpoint",
                       "RNGState", "RichProgressBar", "TQDMProgressBar", "ModelSummary")
CHECKPOINT_PLACE = {"dirpath", "filename", "save_last", "save_top_k", "verbose", "every_n_epochs"}


def _plain(obj):
    """JSON-able: paths as strings, namespaces as dicts."""
    if hasattr(obj, "as_dict"):
        obj = obj.as_dict()
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _is_path(value) -> bool:
    return isinstance(value, str) and ("/" in value or value.endswith((".pt", ".ckpt", ".json"))) and Path(value).exists()


def _callbacks(callbacks) -> list:
    out = []
    for cb in callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []:
        if not isinstance(cb, dict):
            continue
        name = str(cb.get("class_path", "")).rsplit(".", 1)[-1]
        if name in REPORTING_CALLBACKS:
            continue
        args = {k: v for k, v in (cb.get("init_args") or {}).items()
                if not (name == "ModelCheckpoint" and k in CHECKPOINT_PLACE)}
        out.append({"class_path": name, "init_args": args})
    return out


def recipe_of(config) -> dict:
    """The resolved config (a dict or a jsonargparse Namespace) minus seed, fraction, fold, paths and
    execution settings. Artifact paths in the model's arguments become ``"<artifact>"``: which producer
    made the artifact is the row's name and the artifact's own identity, not a place on disk."""
    config = _plain(config) or {}
    recipe = {k: v for k, v in config.items() if k not in TOP_LEVEL_VOLATILE and v is not None}
    trainer = {k: v for k, v in (recipe.get("trainer") or {}).items() if k not in TRAINER_VOLATILE}
    if "callbacks" in trainer:
        trainer["callbacks"] = _callbacks(trainer["callbacks"])
    recipe["trainer"] = trainer
    for part, drop in (("data", DATA_VOLATILE), ("model", MODEL_LINKED)):
        section = recipe.get(part)
        if isinstance(section, dict):
            args = {k: ("<artifact>" if _is_path(v) else v) for k, v in (section.get("init_args") or {}).items()
                    if k not in drop}
            recipe[part] = {"class_path": section.get("class_path"), "init_args": args}
    return recipe


def fingerprint(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True, default=str)
    return out


def short_key(key: str) -> str:
    """'model.init_args.lr' -> 'lr'; 'trainer.max_epochs' -> 'max_epochs'; 'data.class_path' -> 'data'."""
    parts = [p for p in key.split(".") if p != "init_args"]
    if parts[-1] == "class_path":
        return parts[0]
    return parts[-1]


def differences(recipes: dict[str, dict]) -> dict[str, str]:
    """For recipes {fingerprint: recipe} of one method: per fingerprint, a label of what sets it apart
    (``lr=0.01, transforms=amm``), or the fingerprint itself when nothing short tells them apart."""
    flat = {fp: _flat(r) for fp, r in recipes.items()}
    keys = sorted({k for f in flat.values() for k in f})
    varying = [k for k in keys if len({f.get(k) for f in flat.values()}) > 1]
    labels = {}
    for fp, f in flat.items():
        parts = [f"{short_key(k)}={json.loads(f[k]) if k in f else '–'}" for k in varying[:3]]
        label = ", ".join(str(p) for p in parts)
        if len(varying) > 3:
            label += f", +{len(varying) - 3} more"
        labels[fp] = label if label and len(label) <= 80 else f"recipe {fp}"
    return labels


def data_identity(data) -> dict:
    """Dataset, real release or twin spec, and split seed of a data contract (``data_modules.contract``):
    runs on different data never share a cell."""
    from .provenance import data_provenance

    prov = data_provenance(data.root)
    ident = {"dataset": data.datamodule, "data": prov["data"], "split_seed": int(data.split_seed)}
    if prov["data"] == "twin":
        spec = prov.get("twin_spec") or {}
        ident["twin"] = {k: spec[k] for k in sorted(spec)}
    return ident


def data_key(ident: dict | None) -> str:
    """A short readable name of a data identity (the board's data column)."""
    if not ident:
        return "unknown"
    if ident.get("data") == "twin":
        t = ident.get("twin") or {}
        options = "".join(f" {k}={v}" for k, v in sorted((t.get("options") or {}).items()))
        return (f"twin n={t.get('n')} size={t.get('size')} seed={t.get('seed')} difficulty={t.get('difficulty')}"
                f"{options} split_seed={ident.get('split_seed', 0)}")
    return f"real split_seed={ident.get('split_seed', 0)}"


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
