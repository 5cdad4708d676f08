"""Artifacts: what one cell of a pipeline hands to the next (an encoder, heatmaps, a box regressor).

An artifact is a file (or folder) in the producing run's ``artifacts/`` folder, named by its kind
(``ARTIFACT_FILES``). A file artifact is a ``torch.save`` of plain data and tensors only::

    {"kind": "encoder", "format": 2, "payload": {...}, "sha256": "<payload digest>",
     "producer": {"run_id", "method", "seed", "fraction", "dataset", "commit", "recipe_fingerprint", ...}}

so it loads with ``torch.load(weights_only=True)`` — nothing in it can run code — in a fresh process,
without the class of the method that produced it. Written atomically: a reader never sees half an
artifact, and a cell that only produces an artifact is done when its file exists.

Verified before use (``read_artifact`` / ``check_artifact``): the payload against its ``sha256`` (bytes
altered after writing are refused, even where ``torch.load`` still reads them), the producer's run
against the one the consumer expects (a sweep's ``needs``: another run's file copied over the
producer's is refused), the kind and the format. ``artifact_identity`` is what a consumer records in
its own ``result.json`` (``artifacts``): path, kind, sha256 and producer. The folder artifact
(``heatmaps``, ``data_modules.heatmaps``) carries the same header in its ``artifact.json``, its sha256
over the files it lists.

Encoders (``save_encoder`` / ``load_encoder``): payload = {"encoder": {"name", "kwargs"}, "state_dict"},
rebuilt by name through ``cxrbench.models.encoders.build_encoder``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .provenance import commit

if TYPE_CHECKING:
    from .models.encoders import Encoder

FORMAT = 2  # 2: the payload's sha256 in the record (format 1 had none, and is refused)
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
    import torch  # here, not at the top: the spec checks read this module's declarations without torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "format": FORMAT, "payload": payload, "sha256": payload_digest(payload),
              "producer": {**(producer or {}), "commit": (producer or {}).get("commit") or commit()}}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(record, tmp)
    os.replace(tmp, path)
    return path


def payload_digest(obj) -> str:
    """sha256 of an artifact's payload: tensors by dtype, shape and bytes, dicts in key order, plain
    values by type and repr. Computed over what was saved, so it does not depend on the pickle's bytes."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())


def artifact_identity(path: str | Path, record: dict) -> dict:
    """What a consumer records of the artifact it used: path, kind, sha256 and the producer."""
    producer = record.get("producer") or {}
    keep = ("run_id", "method", "seed", "fraction", "fold", "commit", "recipe_fingerprint")
    return {"path": str(Path(path).resolve()), "kind": record.get("kind"), "sha256": record.get("sha256"),
            "producer": {k: producer[k] for k in keep if producer.get(k) is not None}}


def _check_producer(path: Path, record: dict, expect_run: str | None, consumer: str) -> None:
    got = (record.get("producer") or {}).get("run_id")
    if expect_run is not None and got != expect_run:
        raise ArtifactError(f"{path} was written by run {got!r}, but {consumer} expects the artifact of run "
                            f"{expect_run!r}: another run's artifact in its place; run that producer cell again")


def read_artifact(path: str | Path, kind: str, consumer: str = "this cell", expect_run: str | None = None) -> dict:
    """The record of a file artifact of ``kind``, verified: refuses a missing file, an unpicklable or
    foreign file, an artifact of another kind or format, one whose payload does not match its sha256,
    and (``expect_run``) one of another producer run — naming the file and what ``consumer`` needs."""
    import torch  # here, not at the top: the spec checks read this module's declarations without torch

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
        raise ArtifactError(f"{path}: artifact format {record.get('format')} is not the supported format {FORMAT} "
                            "(format 1 carried no content hash): run its producing cell again to re-export it")
    if payload_digest(record["payload"]) != record.get("sha256"):
        raise ArtifactError(f"{path}: its content does not match the sha256 it was written with (altered or damaged "
                            "after it was written); run its producing cell again")
    _check_producer(path, record, expect_run, consumer)
    return record


def check_artifact(path: str | Path, kind: str, consumer: str = "this cell", expect_run: str | None = None) -> dict:
    """Verify an artifact before a consumer starts (``read_artifact``'s checks; a folder artifact
    through its ``artifact.json`` and the sha256 of the files it lists) and return its
    ``artifact_identity``, what the consumer's record says it used."""
    path = Path(path)
    if path.is_dir():
        from data_modules.io import folder_digest  # here: reading a file artifact never imports the data layer

        meta_file = path / "artifact.json"
        if not meta_file.is_file():
            raise ArtifactError(f"{consumer} needs a {kind} artifact at {path}: the folder has no artifact.json "
                                "(an interrupted export?)")
        meta = json.loads(meta_file.read_text())
        if meta.get("kind") != kind:
            raise ArtifactError(f"{path} is a {meta.get('kind')!r} artifact, but {consumer} needs a {kind!r} artifact")
        files = sorted((meta.get("files") or {}).values())
        if not meta.get("sha256"):
            raise ArtifactError(f"{path}: the folder artifact records no sha256 (written by an older cxrbench); run "
                                "its producing cell again to re-export it")
        missing = [f for f in files if not (path / f).is_file()]
        if missing or folder_digest(path, files) != meta["sha256"]:
            raise ArtifactError(f"{path}: its files {'lack ' + ', '.join(missing) if missing else 'do not match the sha256 they were written with'}"
                                " (altered or damaged after the export); run its producing cell again")
        _check_producer(path, meta, expect_run, consumer)
        return artifact_identity(path, meta)
    return artifact_identity(path, read_artifact(path, kind, consumer, expect_run))


# ---------------------------------------------------------------------------------------- encoders
def save_encoder(path: str | Path, encoder, producer: dict | None = None) -> Path:
    """The encoder artifact; refused when any weight is NaN or infinite (a diverged pretraining is never
    handed to a probe, whose board row would then score noise)."""
    import torch

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
        enc, record = load_encoder(encoder_artifact, expect_name=encoder if encoder_kwargs else None,
                                   expect_kind=expect_kind, consumer=consumer, expect_kwargs=encoder_kwargs)
        enc.source_artifact = artifact_identity(encoder_artifact, record)  # the consumer's result names it
        return enc
    enc = build_encoder(encoder, **(encoder_kwargs or {}))
    if expect_kind is not None and enc.kind != expect_kind:
        raise ValueError(f"{consumer} needs a {expect_kind} encoder; {encoder!r} is a {enc.kind} encoder")
    return enc
