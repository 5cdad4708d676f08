"""Artifacts: what one cell of a pipeline hands to the next (an encoder, heatmaps, a box regressor).

An artifact is a file (or folder) in the producing run's ``artifacts/`` folder, named by its kind
(``ARTIFACT_FILES``). A file artifact is a ``torch.save`` of plain data and tensors only::

    {"kind": "encoder", "format": 1, "payload": {...}, "producer": {"run_id", "method", "seed",
     "fraction", "dataset", "commit", ...}}

so it loads with ``torch.load(weights_only=True)`` — nothing in it can run code — in a fresh process,
without the class of the method that produced it. Written atomically: a reader never sees half an
artifact, and a cell that only produces an artifact is done when its file exists.

Encoders (``save_encoder`` / ``load_encoder``): payload = {"encoder": {"name", "kwargs"}, "state_dict"},
rebuilt by name through ``cxrbench.models.encoders.build_encoder``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .provenance import commit

if TYPE_CHECKING:
    from .models.encoders import Encoder

FORMAT = 1
#: kind -> file (or folder) name inside a run's ``artifacts/``. A method that exports a new kind adds it here.
ARTIFACT_FILES = {
    "encoder": "encoder.pt",
    "heatmaps": "heatmaps",
    "thorax_boxes": "thorax_boxes.pt",
}


class ArtifactError(ValueError):
    """A missing, unreadable or mismatched artifact; the message names the file and both sides."""


def artifact_path(run_dir: str | Path, kind: str) -> Path:
    if kind not in ARTIFACT_FILES:
        raise ArtifactError(f"unknown artifact kind {kind!r}; known kinds: {sorted(ARTIFACT_FILES)}")
    return Path(run_dir) / "artifacts" / ARTIFACT_FILES[kind]


def save_artifact(path: str | Path, kind: str, payload: dict, producer: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "format": FORMAT, "payload": payload,
              "producer": {**(producer or {}), "commit": (producer or {}).get("commit") or commit()}}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(record, tmp)
    os.replace(tmp, path)
    return path


def read_artifact(path: str | Path, kind: str, consumer: str = "this cell") -> dict:
    """The record of a file artifact of ``kind``; refuses a missing file, an unpicklable or foreign
    file, and an artifact of another kind — naming the file, its kind and what ``consumer`` needs."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{consumer} needs a {kind} artifact at {path}, which does not exist: has the "
                            "producing cell finished? (`cxrbench bench SPEC --dry-run` shows its status)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, or a pickle that is more than tensors and plain data
        raise ArtifactError(f"{path} is not a readable cxrbench artifact (loaded with weights_only=True): {err}") from err
    if not isinstance(record, dict) or "kind" not in record or "payload" not in record:
        raise ArtifactError(f"{path} is not a cxrbench artifact (no 'kind'/'payload'); {consumer} needs a {kind} artifact")
    if record["kind"] != kind:
        raise ArtifactError(f"{path} is a {record['kind']!r} artifact (from {record.get('producer', {}).get('run_id', '?')}), "
                            f"but {consumer} needs a {kind!r} artifact")
    if record.get("format") != FORMAT:
        raise ArtifactError(f"{path}: artifact format {record.get('format')} is not the supported format {FORMAT}")
    return record


def check_artifact(path: str | Path, kind: str, consumer: str = "this cell") -> None:
    """Refuse a missing artifact or one of another kind before a consumer starts. A folder artifact
    (heatmaps) is checked through its ``artifact.json`` (``{"kind": ..., "format": ...}``)."""
    path = Path(path)
    if path.is_dir():
        import json

        meta_file = path / "artifact.json"
        if not meta_file.is_file():
            raise ArtifactError(f"{consumer} needs a {kind} artifact at {path}: the folder has no artifact.json "
                                "(an interrupted export?)")
        got = json.loads(meta_file.read_text()).get("kind")
        if got != kind:
            raise ArtifactError(f"{path} is a {got!r} artifact, but {consumer} needs a {kind!r} artifact")
        return
    read_artifact(path, kind, consumer)


# ---------------------------------------------------------------------------------------- encoders
def save_encoder(path: str | Path, encoder, producer: dict | None = None) -> Path:
    """The encoder artifact; refused when any weight is NaN or infinite (a diverged pretraining is never
    handed to a probe, whose board row would then score noise)."""
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactError(f"{path}: {len(bad)} of {len(state)} encoder tensors hold NaN or inf (e.g. {bad[0]}): "
                            "the pretraining diverged (check its learning rate and its val/loss); not exported")
    return save_artifact(path, "encoder", {"encoder": encoder.spec(), "state_dict": state}, producer)


def load_encoder(path: str | Path, expect_name: str | None = None, expect_kind: str | None = None,
                 consumer: str = "this cell", expect_kwargs: dict | None = None):
    """Rebuild an encoder artifact by name and load its weights (every tensor, strictly).

    ``expect_name`` / ``expect_kind`` ("cnn" or "vit"): what the consumer's architecture needs; an
    artifact of another one is refused with both names. ``expect_kwargs``: the consumer's encoder
    arguments; one the encoder class lists in ``adaptable_kwargs`` (a ViT's ``img_size``) rebuilds
    the encoder with the consumer's value and adapts the weights (the position embedding resampled,
    logged), any other difference (patch size, width, depth…) is refused naming both values.
    Returns (encoder, record).
    """
    import inspect

    from .models.encoders import ENCODERS, build_encoder

    record = read_artifact(path, "encoder", consumer)
    spec = record["payload"]["encoder"]
    if expect_name is not None and spec["name"] != expect_name:
        raise ArtifactError(f"{path} holds a {spec['name']!r} encoder {spec['kwargs']}, but {consumer} is built "
                            f"for a {expect_name!r} encoder")
    kwargs = dict(spec["kwargs"])
    factory = ENCODERS.get(spec["name"])
    if expect_kwargs:
        defaults = {k: p.default for k, p in inspect.signature(factory).parameters.items()
                    if p.default is not inspect.Parameter.empty} if factory is not None else {}
        stored = {**defaults, **kwargs}
        adaptable = getattr(factory, "adaptable_kwargs", ())
        for key, want in expect_kwargs.items():
            have = stored.get(key, "<unset>")
            if have == want:
                continue
            if key not in adaptable:
                raise ArtifactError(f"{path} holds a {spec['name']!r} encoder with {key}={have!r}, but {consumer} is "
                                    f"built for {key}={want!r}: another architecture, refused (only "
                                    f"{list(adaptable) or 'nothing'} can be adapted on loading)")
            kwargs[key] = want
    encoder = build_encoder(spec["name"], **kwargs)
    if expect_kind is not None and encoder.kind != expect_kind:
        raise ArtifactError(f"{path} holds a {spec['name']!r} encoder ({encoder.kind}), but {consumer} needs a "
                            f"{expect_kind} encoder")
    state = encoder.adapt_state_dict(record["payload"]["state_dict"], spec["kwargs"])
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{path}: the weights do not fit a {spec['name']!r} encoder {spec['kwargs']}: "
                            f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return encoder, record


def make_encoder(encoder: str, encoder_kwargs: dict | None, encoder_artifact: str | None, consumer: str,
                 expect_kind: str | None = None) -> Encoder:
    """The artifact's encoder when one is given (its own architecture), else ``encoder`` at random init.

    With an artifact, ``encoder_kwargs`` (when given) are what the consumer expects: ``encoder`` must
    then be the artifact's encoder, an adaptable argument (a ViT's ``img_size``) is adapted (the
    position embedding resampled and logged), any other difference is refused."""
    from .models.encoders import build_encoder

    if encoder_artifact:
        return load_encoder(encoder_artifact, expect_name=encoder if encoder_kwargs else None, expect_kind=expect_kind,
                            consumer=consumer, expect_kwargs=encoder_kwargs)[0]
    enc = build_encoder(encoder, **(encoder_kwargs or {}))
    if expect_kind is not None and enc.kind != expect_kind:
        raise ValueError(f"{consumer} needs a {expect_kind} encoder; {encoder!r} is a {enc.kind} encoder")
    return enc
