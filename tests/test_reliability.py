"""Sweeps that survive hostile checkpoints, concurrent launchers and interruptions, and bad input caught early."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cxrbench.runner.launch import write_cell
from cxrbench.runner.resume import newest_readable_checkpoint
from cxrbench.runner.spec import load_spec

from test_runner import TOY, _bench, _env, _spec

# every epoch kept, and the last one tested (no monitor): the test sees the weights after the resumed epochs
CKPT_ALL = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
             "init_args": {"save_last": True, "save_top_k": -1}}]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_in_a_pending_cells_checkpoint_never_runs(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    spec = load_spec(_spec(tmp_path, root, [{"name": "a", "task": "nih8-cls", "method": "toy", "config": TOY,
                                             "data": "nih", "overrides": {"trainer.max_epochs": 1}}]))
    d = write_cell(spec, spec.cells[0])
    (d / "checkpoints").mkdir()
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "epoch": 0, "payload": _Payload(marker)}, d / "checkpoints/last.ckpt")
    res = _bench(spec.path, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not marker.exists()  # never unpickled with code
    assert list((d / "checkpoints/unreadable").glob("last.ckpt.*"))  # set aside, with a message
    assert "unreadable with weights_only=True" in (d / "stdout.log").read_text()
    assert (d / "result.json").exists()


def test_a_truncated_last_checkpoint_is_set_aside_and_the_newest_readable_one_resumes(tmp_path):
    good = {"epoch": 3, "state_dict": {"w": torch.zeros(2)}}
    torch.save(good, tmp_path / "last-v1.ckpt")
    torch.save({**good, "epoch": 5}, tmp_path / "last.ckpt")
    data = (tmp_path / "last.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(data[: len(data) // 2])  # cut by a kill, and newer
    said = []
    path, state = newest_readable_checkpoint(tmp_path, log=said.append)
    assert path.name == "last-v1.ckpt" and state["epoch"] == 3
    assert not (tmp_path / "last.ckpt").exists() and len(list((tmp_path / "unreadable").iterdir())) == 1
    assert "moved to" in said[0]


def _test_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())["metrics"]


def test_a_resumed_cell_gives_the_uninterrupted_cells_test_metrics(twin_factory, tmp_path):
    """Run a 3-epoch cell; give a second copy of it the first's epoch-0 checkpoint as its last.ckpt (an
    interruption after epoch 0) and run it: with the RNG states restored, the same shuffles and the same
    test metrics; its log has each epoch once and its record says it was resumed."""
    root = twin_factory("nih", n=90, size=64)
    cells = [{"name": name, "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih",
              "overrides": {"trainer.max_epochs": 3, "trainer.callbacks": CKPT_ALL}} for name in ("whole", "resumed")]
    spec = load_spec(_spec(tmp_path, root, cells))
    whole, resumed = (write_cell(spec, c) for c in spec.cells)
    env = _env(tmp_path)
    run = [sys.executable, "-m", "cxrbench.runner.cell"]
    assert subprocess.run(run + [str(whole)], env=env, cwd=tmp_path, capture_output=True).returncode == 0
    first = next((whole / "checkpoints").glob("epoch=0-*.ckpt"))
    (resumed / "checkpoints").mkdir()
    shutil.copy(first, resumed / "checkpoints/last.ckpt")
    shutil.copy(whole / "metrics.csv", resumed / "metrics.csv")  # the log as the interrupted run left it
    res = subprocess.run(run + [str(resumed)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    # the same weights (without the RNG states restored they differ by ~2e-3), hence the same test metrics
    wa = torch.load(whole / "model.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(resumed / "model.ckpt", weights_only=True)["state_dict"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa), {k: (wa[k] - wb[k]).abs().max() for k in wa}
    a, b = _test_metrics(whole), _test_metrics(resumed)
    assert a["auc/mean"] == pytest.approx(b["auc/mean"], abs=1e-6) and a["pr_auc/mean"] == pytest.approx(b["pr_auc/mean"], abs=1e-6)
    rec = json.loads((resumed / "result.json").read_text())
    assert rec["resumed"][0]["epoch"] == 0 and "resumed" not in json.loads((whole / "result.json").read_text())
    rows = list(csv.DictReader((resumed / "metrics.csv").open()))
    assert sorted(int(r["epoch"]) for r in rows if r.get("val/loss")) == [0, 1, 2]


def test_two_launchers_on_one_spec_train_each_cell_once(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    cells = [{"name": n, "task": "nih8-cls", "method": "toy", "config": TOY, "data": "nih",
              "overrides": {"trainer.max_epochs": 6}} for n in ("a", "b")]
    spec_path = _spec(tmp_path, root, cells)
    cmd = [sys.executable, "-m", "cxrbench.cli", "bench", str(spec_path)]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    spec = load_spec(spec_path)
    for c in spec.cells:
        d = spec.runs_dir / c.run_id
        rows = list(csv.DictReader((d / "metrics.csv").open()))
        assert sorted(int(r["epoch"]) for r in rows if r.get("val/loss")) == list(range(6)), (c.name, outs)
        assert (d / "stdout.log").read_text().count("`Trainer.fit` stopped") == 1
    said = "".join(outs)
    assert "[busy]" in said or said.count("[done]") >= 1, said  # the second launcher said why it skipped


def test_siim_rle_problems_are_named_at_setup(twin_factory, tmp_path):
    from data_modules import SIIM
    from data_modules.io import DataError

    src = twin_factory("siim", n=20, size=64)
    for bad, message in (("", r"EncodedPixels is blank on line\(s\) \[2\]"),
                         ("10 5 7", "line 2, ImageId .*: RLE has an odd number of values"),
                         ("1048570 100", "line 2, ImageId .*runs fall outside a 1024x1024 mask")):
        root = tmp_path / f"siim{len(bad)}"
        shutil.copytree(src, root)
        lines = (root / "train-rle.csv").read_text().splitlines()
        head, first = lines[1].split(",", 1)
        lines[1] = f"{head}, {bad}" if bad else f"{head},"
        (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
        with pytest.raises(DataError, match=message):
            SIIM(str(root), cache=False).setup()


def test_an_override_typo_is_refused_by_dry_run_before_anything_runs(twin_factory, tmp_path):
    spec_path = _spec(tmp_path, tmp_path / "nih", [{"name": "typo", "task": "nih8-cls", "method": "toy", "config": TOY,
                                                    "data": "nih", "overrides": {"model.init_args.lrr": 0.1}}])
    for extra in (("--dry-run",), ()):
        res = _bench(spec_path, tmp_path, *extra)
        assert res.returncode == 2 and "Option 'lrr' is not accepted" in res.stderr and "typo-s0" in res.stderr
        assert "Traceback" not in res.stderr and not (tmp_path / "runs").exists()


def test_a_resumed_cells_csv_logger_on_a_process_other_than_rank_0_does_not_crash(tmp_path, monkeypatch):
    """Resuming under DDP: every process builds the cell's loggers, and Lightning gives processes other
    than rank 0 a DummyExperiment; the kept rows of metrics.csv are rank 0's to write (issue 27)."""
    from lightning.pytorch.utilities import rank_zero

    from cxrbench.runner.resume import ResumableCSVLogger

    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n0,4,0.5\n1,9,0.4\n")
    monkeypatch.setattr(rank_zero.rank_zero_only, "rank", 1)
    other = ResumableCSVLogger(str(tmp_path), keep_until_epoch=0, name="", version="")
    other.experiment  # noqa: B018 — Lightning reads it on every process; the kept rows raised a TypeError here
    other.log_metrics({"train/loss": 0.3}, step=14)  # a no-op on rank 1
    other.save()
    monkeypatch.setattr(rank_zero.rank_zero_only, "rank", 0)
    rank0 = ResumableCSVLogger(str(tmp_path), keep_until_epoch=0, name="", version="")
    rank0.log_metrics({"epoch": 1, "train/loss": 0.3}, step=14)
    rank0.save()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[1].startswith("0,4") and len(rows) == 3  # the kept epoch 0, then the new row


def test_a_diverged_run_never_writes_a_result_or_an_encoder(twin_factory, tmp_path):
    """NaN probabilities used to publish an AUC (issue 34: 854 of 854 NaN, auc/mean 0.449 on the board);
    NaN encoder weights used to be exported to the probes. Both now stop, naming what diverged."""
    import lightning as L
    import pytest
    import torch

    from cxrbench.artifacts import ArtifactError, save_encoder
    from cxrbench.callbacks import DivergedRun, WriteResult
    from cxrbench.models.encoders import build_encoder
    from data_modules import NIH
    from toy_methods import ToyClassifier

    class Diverged(ToyClassifier):
        def forward(self, images):
            return super().forward(images) * float("nan")

    root = twin_factory("nih", n=90, size=64)
    dm = NIH(root, protocol="rgt", label_set="nih8", transforms="plain", image_size=32, cache_size=64,
             cache_dir=str(tmp_path / "c"), batch_size=16)
    model = Diverged(num_classes=8, class_names=dm.classes, task="multilabel", threshold="fixed:0.5")
    (tmp_path / "run").mkdir()
    (tmp_path / "ok").mkdir()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[WriteResult(task="nih8-cls", out_dir=str(tmp_path / "run"))])
    with pytest.raises(DivergedRun, match=r"Diverged: \d+ of \d+ test images have a NaN or infinite prob"):
        trainer.test(model, dm, verbose=False)
    assert not (tmp_path / "run" / "result.json").exists()
    healthy = ToyClassifier(num_classes=8, class_names=dm.classes, task="multilabel", threshold="fixed:0.5")
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              callbacks=[WriteResult(task="nih8-cls", out_dir=str(tmp_path / "ok"))]).test(healthy, dm, verbose=False)
    assert (tmp_path / "ok" / "result.json").exists()

    class Constant(ToyClassifier):  # a collapsed model: one probability per class for every image
        def forward(self, images):
            return super().forward(images) * 0.0

    (tmp_path / "flat").mkdir()
    flat = Constant(num_classes=8, class_names=dm.classes, task="multilabel", threshold="fixed:0.5")
    with pytest.raises(DivergedRun, match=r"all \d+ test images get the same probability for every class"):
        L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                  callbacks=[WriteResult(task="nih8-cls", out_dir=str(tmp_path / "flat"))]).test(flat, dm, verbose=False)
    assert not (tmp_path / "flat" / "result.json").exists()

    encoder = build_encoder("unet", width=8)
    with torch.no_grad():
        next(encoder.parameters()).fill_(float("nan"))
    with pytest.raises(ArtifactError, match="encoder tensors hold NaN or inf .* the pretraining diverged"):
        save_encoder(tmp_path / "encoder.pt", encoder, {"run_id": "x"})
    assert not (tmp_path / "encoder.pt").exists()


def test_an_artifact_altered_in_place_or_of_another_run_is_refused_before_use(tmp_path):
    """Artifacts used to be trusted by path (issue 34): bytes altered in place loaded silently, and another
    run's encoder.pt copied over the producer's was consumed without a word."""
    import shutil

    import pytest
    import torch

    from cxrbench.artifacts import ArtifactError, check_artifact, read_artifact, save_encoder
    from cxrbench.models.encoders import build_encoder

    encoder = build_encoder("unet", width=4)
    path = save_encoder(tmp_path / "encoder.pt", encoder, {"run_id": "pre-1", "recipe_fingerprint": "abc"})
    used = check_artifact(path, "encoder", expect_run="pre-1")
    assert used["sha256"] == read_artifact(path, "encoder")["sha256"] and used["producer"]["run_id"] == "pre-1"
    assert used["producer"]["recipe_fingerprint"] == "abc" and len(used["sha256"]) == 64
    shutil.copy(path, tmp_path / "kept.pt")
    record = torch.load(path, map_location="cpu", weights_only=True)  # one weight changed, the file still loads
    first = next(iter(record["payload"]["state_dict"]))
    record["payload"]["state_dict"][first] += 1.0
    torch.save(record, path)
    with pytest.raises(ArtifactError, match="does not match the sha256 it was written with"):
        check_artifact(path, "encoder", expect_run="pre-1")
    other = save_encoder(tmp_path / "other.pt", encoder, {"run_id": "pre-2"})
    shutil.copy(other, path)  # another run's artifact in the producer's place
    with pytest.raises(ArtifactError, match="was written by run 'pre-2', but .* expects the artifact of run 'pre-1'"):
        check_artifact(path, "encoder", expect_run="pre-1")
    old = torch.load(tmp_path / "kept.pt", map_location="cpu", weights_only=True)
    old["format"] = 1  # written before artifacts carried a content hash
    old.pop("sha256")
    torch.save(old, path)
    with pytest.raises(ArtifactError, match="format 1 carried no content hash"):
        read_artifact(path, "encoder")


# ------------------------------------------------------------------------------------------ issue 27
def _resume_each_rank(rank: int, world: int, folder: str) -> list:
    """RNGState and GMML's own hooks in Lightning's order: save (callbacks, then the module; rank 0's dict is the
    file), draw on (the uninterrupted run), scramble every generator, load the file on every process, draw again."""
    import random

    import numpy as np
    import torch.distributed as dist

    from cxrbench.methods import GMML
    from cxrbench.methods.gmml import corrupt
    from cxrbench.runner.resume import RNGState

    torch.manual_seed(100 + rank)
    np.random.seed(200 + rank)
    random.seed(300 + rank)
    gmml = GMML(encoder_kwargs={"img_size": 16, "patch_size": 8, "embed_dim": 8, "depth": 1, "num_heads": 1},
                decoder_dims=(8, 8, 4), seed=0)
    gmml.gen_train = torch.Generator().manual_seed(7919 * rank)  # what GMML seeds under a Trainer (+ rank)
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))

    def draws() -> list:
        masks = corrupt(images, gmml.gen_train)[1]
        return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(), masks.sum((1, 2, 3)).tolist()]

    checkpoint: dict = {}
    RNGState().on_save_checkpoint(None, gmml, checkpoint)
    gmml.on_save_checkpoint(checkpoint)
    if rank == 0:
        torch.save(checkpoint, f"{folder}/last.ckpt")
    dist.barrier()
    uninterrupted = draws()
    torch.manual_seed(999)
    np.random.seed(999)
    random.seed(999)
    gmml.gen_train.manual_seed(999)
    loaded = torch.load(f"{folder}/last.ckpt", weights_only=True)  # every process reads rank 0's file
    gmml.on_load_checkpoint(loaded)  # GMML restores rank 0's generator ...
    RNGState().on_load_checkpoint(None, gmml, loaded)  # ... and RNGState each process's own
    everyone: list = [None] * world
    dist.all_gather_object(everyone, {"uninterrupted": uninterrupted, "resumed": draws()})
    return everyone


def test_each_ddp_process_resumes_its_own_random_draws(tmp_path):
    """Under DDP only rank 0's checkpoint is written; every process used to restore rank 0's CPU generator (and
    GMML rank 0's corruption generator), so after a resume the ranks drew identical noise (issue 27). Now every
    process draws what it would have drawn uninterrupted: torch, numpy, Python and GMML's corruptions."""
    from gloo import on_two_processes

    p0, p1 = on_two_processes(_resume_each_rank, tmp_path, str(tmp_path))
    assert p0["resumed"] == p0["uninterrupted"] and p1["resumed"] == p1["uninterrupted"]
    assert all(a != b for a, b in zip(p0["resumed"], p1["resumed"]))  # no two processes repeat each other


def test_one_process_rng_checkpoint_is_as_before():
    """One process: ``rng_states`` holds the same three generators as before (and a method's own ones), no
    per-rank list, and restoring it continues the same draws."""
    import random

    import numpy as np

    from cxrbench.runner.resume import RNGState

    torch.manual_seed(5)
    checkpoint: dict = {}
    RNGState().on_save_checkpoint(None, None, checkpoint)
    assert set(checkpoint["rng_states"]) >= {"torch", "numpy", "python"} and "ranks" not in checkpoint["rng_states"]
    want = (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random())
    torch.manual_seed(6)
    np.random.seed(6)
    RNGState().on_load_checkpoint(None, None, checkpoint)
    assert (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()) == want


def _thorax_batch(empty: tuple[int, ...]):
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(4, 1, 32, 32)
    for i in range(4):
        if i not in empty:
            masks[i, 0, 4 + 2 * i:20 + i, 6:24 - i] = 1
    return {"image": torch.rand(4, 1, 32, 32, generator=g), "mask": masks, "index": torch.arange(4)}


def test_thorax_box_one_process_steps_as_before():
    """One process: a batch with masks gives the loss it always did (L1 + GIoU + BCE of the confidence against
    the IoU, over the images with a mask); a batch of empty masks is skipped (None), as before. The zero loss
    that keeps DDP processes stepping is for N > 1 (tests/test_ddp_families.py)."""
    import torch.nn.functional as F
    from torchvision.ops import generalized_box_iou_loss

    from cxrbench.methods import ThoraxBoxRegressor
    from cxrbench.models.stn import mask_boxes, paired_iou

    torch.manual_seed(0)
    m = ThoraxBoxRegressor(backbone="resnet10t", image_size=32).eval()
    batch = _thorax_batch(empty=(2,))
    with pytest.warns(UserWarning, match="self.log"):  # outside a Trainer
        loss = m.training_step(batch, 0)
    target, ok = mask_boxes(batch["mask"])
    boxes, logit = m(batch["image"])
    boxes, logit, target = boxes[ok], logit[ok], target[ok]
    iou = paired_iou(boxes, target)
    want = (F.l1_loss(boxes, target) + generalized_box_iou_loss(boxes, target, reduction="mean")
            + F.binary_cross_entropy_with_logits(logit, iou.detach()))
    assert float(loss.detach()) == float(want.detach())
    assert m.training_step(_thorax_batch(empty=(0, 1, 2, 3)), 0) is None
    assert m.validation_step(_thorax_batch(empty=(0, 1, 2, 3)), 0) is None


def _twin_peaks() -> torch.Tensor:
    """Two maps, each with two mirror-image peaks: two qualifying components of exactly equal size."""
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")

    def peak(cy, cx):
        return torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 18)

    a = peak(20, 16) + peak(20, 47)
    assert torch.equal(a, a.flip(-1))
    return torch.stack([a, a.T])[None]  # [1, 2, 64, 64]


def test_byoa_breaks_a_tie_between_equal_components_the_same_way_on_every_path(monkeypatch):
    """Two equally large qualifying components: BYOA used to choose both and write two rows into one centre,
    which CUDA resolves in no fixed order. Now the component whose first pixel comes later in raster order
    wins, whatever order the components are listed in (the old code followed the list: reversed, it took
    the other peak) and on the GPU's labelling path as on the CPU's."""
    import cxrbench.models.byoa as byoa
    from cxrbench.components import Regions, propagate_regions, regions

    prior = byoa.ClassBoxPrior(["a", "b"], torch.full((2, 2), 0.5), torch.full((2, 2), 0.1))
    want = torch.tensor([[47 + 0.5 - 3.2, 20 + 0.5 - 3.2, 47 + 0.5 + 3.2, 20 + 0.5 + 3.2],
                         [20 + 0.5 - 3.2, 47 + 0.5 - 3.2, 20 + 0.5 + 3.2, 47 + 0.5 + 3.2]])  # the later peak of each
    boxes, fallback = byoa.byoa_boxes(_twin_peaks(), prior, with_fallback=True)
    assert not fallback.any() and torch.allclose(boxes[0], want, atol=1e-4)
    def backwards(labels, mask):
        r = regions(labels, mask)
        return Regions(r.flat, r.ids.flip(0), r.size.flip(0), r.pixel.flip(0))

    monkeypatch.setattr(byoa, "regions", backwards)
    assert torch.allclose(byoa.byoa_boxes(_twin_peaks(), prior)[0], want, atol=1e-4)  # components listed backwards
    monkeypatch.setattr(byoa, "label_regions", lambda values, mask, connectivity, canonical: propagate_regions(
        values, mask, connectivity))  # the CUDA path's labels, computed on the CPU
    assert torch.allclose(byoa.byoa_boxes(_twin_peaks(), prior)[0], want, atol=1e-4)
