"""Every method family on two CPU processes (gloo, torch DDP) with half the global batch each computes
what one process computes with the whole batch: the loss, the gradients and the test metrics (issue 27).

One spawn of two processes runs every family (the module fixture ``two``); each test compares one family
with the same computation in this process (no process group: one process, the whole batch).

Per family:
- step: ``training_step`` on this process's half of a global batch of ``B`` = 8, run inside DDP's
  forward (``_Step``, what Lightning's DDP wrapper does), then one backward. Compared: the loss (the mean
  over the processes of their step's loss: DDP's gradient average is the gradient of that mean; for a
  contrastive loss every process computes the whole batch's loss) and every gradient.
- test: after one SGD step with those gradients (lr ``LR``), the method's test loop (``on_test_start``,
  ``on_test_epoch_start``, ``test_step`` per batch of 3, ``on_test_epoch_end``) over each split of 11
  images, split the way Lightning splits them: ``DistributedSampler`` without shuffling, so process 1 gets
  5 images and a repeat of image 0 (the sampler's padding). Compared: ``test_metrics`` and
  ``test_predictions`` (the per-sample arrays) with one process's over the 11 images.

Tolerances (float32; the two halves sum in another order than the whole batch): the loss within 1e-5
(relative); every gradient tensor within 1e-4 of its own largest entry, a tensor whose gradient is below
1e-3 of the family's largest entry measured on that floor (float32 noise; measured at most 2.3e-5, AMM;
the broken variants below differ by 7e-4 … 3e5); test metrics and per-sample arrays within 1e-6 absolute.

Every check also runs a broken variant it must fail for, in the same spawn, and asserts that it would:
``no_allreduce`` (process 0's gradient of its own half: a parameter DDP does not reduce), ``no_gather``
(the contrastive families with ``cxrbench.losses.gather`` replaced by the identity: each process contrasts
its own half) and ``no_sync`` (the metric stores computed without gathering: torchmetrics' sync off; a
store's ``dist_reduce_fx=None`` is no such variant: torchmetrics gathers list states without a reduction
too). The second half of the training batch is dimmed (× 0.6), so one half never gives the whole batch's
answer by chance.

Not identical on N processes, and why (README "Global batch" says the same):
- BatchNorm in train mode normalises with each process's batch statistics on the CPU (SyncBatchNorm is
  GPU-only), and dropout draws per process: families with BatchNorm or dropout step in eval mode (running
  statistics, no dropout): AMM, U-Net, SimCLR, CAMContrast, RGT (the radiomics BatchNorm), STN (VGG's dropout).
- GMML draws its corruption per process (its own generator, donors from its own slice, noise μ and σ of
  its slice) and averages the L1 over its own corrupted pixels. ``test_gmml`` replaces the corruption by a
  fixed one that is a function of each image alone, with the same number of pixels per image: then the
  loss and the gradients are one process's.
- The pretraining test loss (a MeanMetric of batch losses) counts the sampler's padded repeat: GMML's
  ``loss`` is checked against one process over the padded index list; the per-image stores are exact.
- The thorax-box regressor on a process whose batch holds only empty masks steps with a zero loss
  (``test_thorax_box_steps_on_a_process_without_masks``), and the loss is over the global batch's images
  with a mask: the reduced gradient is one process's over the whole batch.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.slow  # one spawn of two processes: about a minute on two busy cores

B, N_TEST, SIZE, LR, CHUNK = 8, 11, 32, 0.05, 3
LOSS_REL, GRAD_REL, FLOOR, METRIC_ABS = 1e-5, 1e-4, 1e-3, 1e-6
CONTRASTIVE = ("simclr", "camcontrast", "rgt")


# ------------------------------------------------------------------------------------------ data
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, g: torch.Generator, size: int = SIZE, views: int = 0) -> torch.Tensor:
    shape = (n, views, 1, size, size) if views else (n, 1, size, size)
    return torch.rand(shape, generator=g)


def _binary(n: int, g: torch.Generator) -> torch.Tensor:
    y = torch.zeros(n, 1)
    y[torch.randperm(n, generator=g)[: n // 2]] = 1  # both classes in any split
    return y


def _boxes(n: int, k: int, size: int, g: torch.Generator, with_class=lambda i: True) -> dict:
    """Loc split extras: one box per image, of class ``i % k`` where ``with_class(i)``, else of no task class."""
    boxes, labels = [], []
    for i in range(n):
        x0, y0 = (torch.randint(0, size // 2, (2,), generator=g)).tolist()
        boxes.append(torch.tensor([[x0, y0, x0 + size // 3, y0 + size // 3]], dtype=torch.float32))
        labels.append(torch.tensor([i % k if with_class(i) else -1]))
    return {"boxes": boxes, "box_labels": labels}


def _masks(n: int, g: torch.Generator, size: int = SIZE, empty=(3, 7)) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size)
    for i in range(n):
        if i in empty:
            continue
        y, x = torch.randint(2, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(4, size // 2, (2,), generator=g).tolist()
        m[i, 0, y:y + h, x:x + w] = 1
    return m


def _take(batch: dict, rows) -> dict:
    rows = torch.as_tensor(rows, dtype=torch.long)
    return {k: [v[i] for i in rows.tolist()] if isinstance(v, list) else v[rows] for k, v in batch.items()}


def _with_index(batch: dict) -> dict:
    n = len(batch["image"])
    return {**batch, "index": torch.arange(n)}


# ------------------------------------------------------------------------------------------ families
def _amm():
    from cxrbench.methods import AMM

    m = AMM(backbone="resnet10t", backbone_stage=-2, num_classes=1, class_names=["Cardiomegaly"])
    m.data = SimpleNamespace(test_splits=("test", "val", "loc"))  # split_name reads only this
    return m


def _amm_batch():
    g = _gen(1)
    return {"image": _images(B, g), "label": _binary(B, g)}


def _amm_tests():
    g = _gen(2)
    test = {"image": _images(N_TEST, g), "label": _binary(N_TEST, g)}
    val = {"image": _images(N_TEST, g), "label": _binary(N_TEST, g)}
    # four box images: 0 and 2 (process 0) hold a Cardiomegaly box, 1 and 3 (process 1) none of the task's
    loc = {"image": _images(4, g), "label": _binary(4, g), **_boxes(4, 1, SIZE, g, with_class=lambda i: i % 2 == 0)}
    return {"test": test, "val": val, "loc": loc}


UNET = {"encoder": "unet", "encoder_kwargs": {"width": 4, "depth": 3}}


def _unet():
    from cxrbench.methods import EncoderSegmenter

    return EncoderSegmenter(**UNET)


def _seg_batch():
    g = _gen(3)
    return {"image": _images(B, g), "mask": _masks(B, g)}


def _seg_tests():
    g = _gen(4)
    return {"test": {"image": _images(N_TEST, g), "mask": _masks(N_TEST, g),
                     "orig_size": torch.full((N_TEST, 2), 2 * SIZE)}}


def _simclr():
    from cxrbench.methods import SimCLR

    return SimCLR(**UNET, proj_dim=8, tau=0.1, online_probe=True, num_classes=1, class_names=["abnormal"])


def _simclr_batch():
    g = _gen(5)
    return {"image": _images(B, g, views=2), "label": _binary(B, g)}


def _simclr_tests():
    g = _gen(6)
    return {"test": {"image": _images(N_TEST, g), "label": _binary(N_TEST, g)}}


def _linear():
    from cxrbench.methods import LinearProbe

    return LinearProbe(**UNET, num_classes=3, class_names=["a", "b", "c"], task="multilabel")


def _linear_batch():
    g = _gen(7)
    share = torch.tensor([0.8, 0.2]).repeat_interleave(B // 2)[:, None]  # mostly positive, then mostly negative
    return {"image": _images(B, g), "label": (torch.rand(B, 3, generator=g) < share).float()}


def _linear_tests():
    g = _gen(8)
    return {"test": {"image": _images(N_TEST, g), "label": (torch.rand(N_TEST, 3, generator=g) < 0.5).float()}}


def _rgt():
    from cxrbench.methods import RGT

    m = RGT(num_classes=2, class_names=["c0", "c1"], task="multilabel", img_size=SIZE, patch_size=8, dim=16, depth=1,
            heads=2, rad_depth=1, warmup_epochs=0)
    m.prior_center.fill_(0.5)  # the class box prior a DataModule's box file would give
    m.prior_size.fill_(0.3)
    m.data = SimpleNamespace(test_splits=("test", "loc"))
    return m


def _rgt_batch():
    g = _gen(9)
    return {"image": _images(B, g), "label": (torch.rand(B, 2, generator=g) < 0.5).float()}


def _rgt_tests():
    g = _gen(10)
    test = {"image": _images(N_TEST, g), "label": (torch.rand(N_TEST, 2, generator=g) < 0.5).float()}
    loc = {"image": _images(4, g), "label": torch.ones(4, 2), **_boxes(4, 2, SIZE, g)}
    return {"test": test, "loc": loc}


def _camcontrast():
    from cxrbench.methods import CAMContrast

    return CAMContrast(**UNET, heatmap_channels=(4, 4, 4), proj_dim=8, tau=0.1)


def _camcontrast_batch():
    g = _gen(11)
    return {"image": _images(B, g), "heatmap": _images(B, g, size=14)}


def _camcontrast_tests():
    return {"test": {"image": _images(N_TEST, _gen(12))}}  # test images have no heatmap crop


GMML_VIT = {"img_size": SIZE, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}


def _gmml():
    from cxrbench.methods import GMML

    return GMML(encoder_kwargs=GMML_VIT, decoder="paper", decoder_dims=(16, 16, 8), seed=0)


def _gmml_batch():
    return {"image": _images(B, _gen(13))}


def _gmml_tests():
    return {"test": {"image": _images(N_TEST, _gen(14))}}


def fixed_corrupt(images, generator, **_):
    """GMML's corruption made a function of each image alone, with the same pixel count per image: the
    same rectangles (one draw of GMML's own ``rectangle_union``) on every image, filled with 1 − pixel."""
    from cxrbench.methods.gmml import rectangle_union

    b, _, h, w = images.shape
    m = torch.from_numpy(rectangle_union(h, w, 0.5 * h * w, 0.3, _gen(0)))[None, None].expand(b, 1, h, w)
    return torch.where(m, 1 - images, images), m, torch.full((b,), -1, dtype=torch.long)


STN_SIZE = 80  # the localisation net needs >= 78 px


def _stn():
    from cxrbench.methods import STN

    m = STN(image_size=STN_SIZE, vgg_width=0.0625, vgg_hidden=16, num_classes=1, class_names=["abnormal"])
    m.data = SimpleNamespace(test_splits=("test", "val"))  # the operating point at 95% val recall
    return m


def _stn_batch():
    g = _gen(15)
    return {"image": _images(B, g, size=STN_SIZE), "label": _binary(B, g)}


def _stn_tests():
    g = _gen(16)
    return {s: {"image": _images(N_TEST, g, size=STN_SIZE), "label": _binary(N_TEST, g)} for s in ("test", "val")}


#: family -> (build, training batch, test splits, mode of the step: eval where BatchNorm or dropout is)
FAMILIES = {
    "classification": (_amm, _amm_batch, _amm_tests, "eval"),
    "segmentation": (_unet, _seg_batch, _seg_tests, "eval"),
    "simclr": (_simclr, _simclr_batch, _simclr_tests, "eval"),
    "linear": (_linear, _linear_batch, _linear_tests, "train"),  # strict probe: the encoder stays in eval
    "rgt": (_rgt, _rgt_batch, _rgt_tests, "eval"),
    "camcontrast": (_camcontrast, _camcontrast_batch, _camcontrast_tests, "eval"),
    "gmml": (_gmml, _gmml_batch, _gmml_tests, "train"),  # a ViT without dropout: train mode
    "stn": (_stn, _stn_batch, _stn_tests, "eval"),
}


# ------------------------------------------------------------------------------------------ one step, one test
class _Step(nn.Module):
    """The training step as a module's forward, so that it runs inside DDP's (Lightning's DDP wrapper)."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.training_step(batch, 0)


def _build(name: str):
    build, batch, tests, mode = FAMILIES[name]
    torch.manual_seed(0)
    m = build()
    m.train(mode == "train")
    batch = _with_index(batch())
    batch["image"][B // 2:] *= 0.6  # the halves differ: one process's half never gives the whole batch's answer
    return m, batch, {k: _with_index(v) for k, v in tests().items()}


def _grads(m) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.requires_grad and p.grad is not None}


def _sgd(m) -> None:
    with torch.no_grad():
        for p in m.parameters():
            if p.grad is not None:
                p -= LR * p.grad


def _test(m, tests: dict, rank: int, world: int, sync: bool = True, indices=None) -> dict:
    """The method's test loop over ``tests`` (split -> batch), each split cut as DistributedSampler cuts it."""
    from torch.utils.data import DistributedSampler
    from torchmetrics import Metric

    names = m.data.test_splits if m.data is not None else ("test",)
    m.eval()
    m.test_metrics, m.test_predictions = {}, {}
    m.on_test_start()
    m.on_test_epoch_start()
    with torch.no_grad():
        for split, data in tests.items():
            n = len(data["image"])
            rows = (indices or {}).get(split) or list(DistributedSampler(range(n), world, rank, shuffle=False))
            for i, chunk in enumerate(torch.as_tensor(rows).split(CHUNK)):
                m.test_step(_take(data, chunk), i, names.index(split))
    metrics = [mod for mod in m.modules() if isinstance(mod, Metric)]
    kept = [(mod._to_sync, mod.sync_on_compute) for mod in metrics]
    if not sync:  # the broken variant: every store computes its own process's samples only
        for mod in metrics:
            mod._to_sync = mod.sync_on_compute = False
    m.on_test_epoch_end()
    for mod, (to_sync, on_compute) in zip(metrics, kept):
        mod._to_sync, mod.sync_on_compute = to_sync, on_compute
    preds = {s: {k: v.tolist() for k, v in arrays.items()} for s, arrays in m.test_predictions.items()}
    return {"metrics": dict(m.test_metrics), "predictions": preds}


def _one_process(name: str, monkeypatch) -> dict:
    """The reference: one process, the whole batch."""
    if name == "gmml":
        monkeypatch.setattr("cxrbench.methods.gmml.corrupt", fixed_corrupt)
    m, batch, tests = _build(name)
    loss = m.training_step(batch, 0)
    loss.backward()
    out = {"loss": float(loss.detach()), "grads": _grads(m),
           "requires_grad": sorted(n for n, p in m.named_parameters() if p.requires_grad)}
    _sgd(m)
    out.update(_test(m, tests, 0, 1))
    if name == "gmml":  # the MeanMetric test loss counts the sampler's padding: one process over the padded list
        out["padded_loss"] = _test(m, tests, 0, 1, indices={"test": list(range(N_TEST)) + [0]})["metrics"]["loss"]
    return out


def _half_batch_each(rank: int, world: int, name: str) -> tuple[dict, dict]:
    """One family on this process: its half of the batch inside DDP, the broken variants, the test loop."""
    import torch.distributed as dist

    import cxrbench.losses

    if name == "gmml":
        import cxrbench.methods.gmml

        cxrbench.methods.gmml.corrupt = fixed_corrupt
    m, batch, tests = _build(name)
    half = _take(batch, torch.arange(B).chunk(world)[rank])

    def ddp_step(model):
        ddp = nn.parallel.DistributedDataParallel(_Step(model))  # kept until the backward: its reducer averages
        loss = ddp(half)
        loss.backward()  # DDP averages every gradient over the processes
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        return float(mean) / world, _grads(model)

    out, grads = {}, {}
    out["loss"], grads["ddp"] = ddp_step(m)
    out["rank_losses"] = [None] * world
    dist.all_gather_object(out["rank_losses"], float(m.training_step(half, 0).detach()))
    broken = _build(name)[0]  # the same initial weights (seeded)
    broken.training_step(half, 0).backward()  # no all-reduce: this process's own half
    grads["no_allreduce"] = _grads(broken)
    if name in CONTRASTIVE:
        real, cxrbench.losses.gather = cxrbench.losses.gather, lambda x: x
        try:
            broken = _build(name)[0]
            out["no_gather_loss"], grads["no_gather"] = ddp_step(broken)
        finally:
            cxrbench.losses.gather = real
    _sgd(m)
    out["no_sync"] = _test(m, tests, rank, world, sync=False)
    out.update(_test(m, tests, rank, world))
    return out, grads


def _thorax(rank: int, world: int) -> list[dict]:
    """The thorax-box regressor where process 1's batch holds only empty masks: both processes step."""
    import torch.distributed as dist

    from cxrbench.methods import ThoraxBoxRegressor

    def build():
        torch.manual_seed(0)
        # eval mode: BatchNorm's batch statistics over 4 images per process are not those over 8 (CPU
        # processes do not sync them), and the comparison is of the loss's normalisation
        return ThoraxBoxRegressor(backbone="resnet10t", image_size=SIZE).eval()

    g = _gen(17)
    halves = [{"image": _images(4, g), "mask": _masks(4, g, empty=()), "index": torch.arange(4)},
              {"image": _images(4, g), "mask": torch.zeros(4, 1, SIZE, SIZE), "index": torch.arange(4, 8)}]
    batch = halves[rank]
    m = build()
    ddp = nn.parallel.DistributedDataParallel(_Step(m))  # kept until the backward: its reducer averages
    loss = ddp(batch)  # was None on process 1: DDP waited for its gradients forever
    mine = {"loss": float(loss.detach()), "tensor_with_grad": isinstance(loss, torch.Tensor) and loss.requires_grad}
    loss.backward()
    reduced = _grads(m)
    local = build()
    local._step(batch)[0].backward()  # this process's own mean, no collective
    local = _grads(local)
    whole = build()  # one process with the whole batch: the mean over its images with a mask
    whole._step({k: torch.cat([h[k] for h in halves]) for k in halves[0]})[0].backward()
    whole = _grads(whole)
    mine["all_grads"] = len(reduced) == len(whole) == sum(1 for p in m.parameters() if p.requires_grad)
    if rank == 1:
        mine["own_grads_zero"] = all(float(v.abs().max()) == 0 for v in local.values())
    scale = max(float(v.abs().max()) for v in whole.values())
    mine["err"] = max(float((reduced[k] - whole[k]).abs().max()) for k in whole) / scale
    # what DDP averaged while each process divided by its own count: (process 0's own mean + 0) / 2
    mine["err_local_mean"] = max(float((local[k] / world - whole[k]).abs().max()) for k in whole) / scale
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    return everyone


def _every_family(rank: int, world: int, folder: str) -> dict:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # self.log outside a Trainer, timm and MONAI notices
    answers, grads = {}, {}
    for name in FAMILIES:
        answers[name], grads[name] = _half_batch_each(rank, world, name)
    answers["thorax"] = _thorax(rank, world)
    if rank == 0:
        torch.save(grads, f"{folder}/grads.pt")
    return answers


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Every family's answers on two processes (one spawn), and their gradients."""
    from gloo import on_two_processes

    folder = tmp_path_factory.mktemp("ddp_families")
    answers = on_two_processes(_every_family, folder, str(folder))
    return answers, torch.load(folder / "grads.pt", weights_only=True)


# ------------------------------------------------------------------------------------------ comparisons
def _grad_error(got: dict, want: dict) -> float:
    """max over tensors of max|got − want| / max|want|, each tensor on its own scale; a tensor whose
    gradient is below ``FLOOR`` of the family's largest entry is measured on that floor (its entries are
    float32 noise, e.g. the blocks timm's ResNets start at zero)."""
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    top = max(float(v.abs().max()) for v in want.values())
    return max(float((got[k] - want[k]).abs().max()) / max(float(want[k].abs().max()), FLOOR * top) for k in want)


def _same(a, b, tol: float = METRIC_ABS) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return abs(a - b) <= tol


def _check(name: str, two, monkeypatch, skip_metrics=()) -> tuple[dict, dict]:
    answers, grads = two
    got, one = answers[name], _one_process(name, monkeypatch)
    # the step: every parameter that trains has a gradient, on one process and under DDP
    assert sorted(grads[name]["ddp"]) == one["requires_grad"] == sorted(one["grads"])
    assert got["loss"] == pytest.approx(one["loss"], rel=LOSS_REL)
    err = _grad_error(grads[name]["ddp"], one["grads"])
    assert err <= GRAD_REL, err
    assert _grad_error(grads[name]["no_allreduce"], one["grads"]) > GRAD_REL  # the broken variant fails this check
    # the test: the same metrics and per-sample arrays, and without the gather of the stores they differ
    mine = {k: v for k, v in got["metrics"].items() if k not in skip_metrics}
    ref = {k: v for k, v in one["metrics"].items() if k not in skip_metrics}
    assert _same(mine, ref), {k: (mine.get(k), ref.get(k)) for k in set(mine) | set(ref)
                              if not _same(mine.get(k, "absent"), ref.get(k, "absent"))}
    assert _same(got["predictions"], one["predictions"])
    assert not _same(got["no_sync"], {"metrics": one["metrics"], "predictions": one["predictions"]})
    return got, one


def _check_contrastive(name: str, two, got: dict, one: dict, whole_loss_per_process: bool = True) -> None:
    """Every process computes the whole global batch's loss (RGT: its NT-Xent term; its focal term is each
    process's mean); without the gather, another loss and another gradient."""
    grads = two[1]
    if whole_loss_per_process:
        assert got["rank_losses"][0] == pytest.approx(got["rank_losses"][1], rel=LOSS_REL)
    assert got["no_gather_loss"] != pytest.approx(one["loss"], rel=LOSS_REL)  # the broken variants fail the checks
    assert _grad_error(grads[name]["no_gather"], one["grads"]) > GRAD_REL


# ------------------------------------------------------------------------------------------ the tests
def test_classification(two, monkeypatch):
    """AMM (binary): loss and gradients; test AUC, PR-AUC, the operating point chosen on the gathered
    validation split, IoU-accuracy with a process that saw no box of the task's class."""
    got, _ = _check("classification", two, monkeypatch)
    assert got["metrics"]["n_images"] == N_TEST and got["metrics"]["loc/n_pairs"] == 2
    assert "threshold" in got["metrics"]


def test_segmentation(two, monkeypatch):
    """U-Net: the Dice loss over the global batch (its sums all-reduced): loss and gradients as one process's
    over the whole batch; test Dice / IoU / HD95 and per-image arrays as one process's."""
    got, _ = _check("segmentation", two, monkeypatch)
    assert got["metrics"]["n_images"] == N_TEST and got["metrics"]["n_positive"] == N_TEST - 2


def test_simclr(two, monkeypatch):
    """SimCLR (NT-Xent over the gathered views, online probe): loss, gradients, probe AUC, feature norms."""
    got, one = _check("simclr", two, monkeypatch)
    _check_contrastive("simclr", two, got, one)
    assert len(got["predictions"]["test"]["index"]) == N_TEST


def test_linear_probe(two, monkeypatch):
    """A strict linear probe (frozen encoder in eval mode, train-mode head): multi-label AUCs."""
    got, _ = _check("linear", two, monkeypatch)
    assert got["metrics"]["n_images"] == N_TEST


def test_rgt(two, monkeypatch):
    """RGT: focal + NT-Xent (gathered) over the fused class tokens, BYOA and radiomics on each process's
    images; test AUCs and IoU-accuracy of the class-token attention."""
    got, one = _check("rgt", two, monkeypatch)
    _check_contrastive("rgt", two, got, one, whole_loss_per_process=False)
    assert got["metrics"]["loc/n_pairs"] == 4


def test_camcontrast_stage_2(two, monkeypatch):
    """CAMContrast stage 2: NT-Xent between image and heatmap crops over the gathered global batch."""
    got, one = _check("camcontrast", two, monkeypatch)
    _check_contrastive("camcontrast", two, got, one)


def test_gmml(two, monkeypatch):
    """GMML with a fixed corruption (a function of each image; equal pixel counts): loss and gradients of
    one process; per-image feature norms exact; the test loss counts the sampler's padded repeat."""
    got, one = _check("gmml", two, monkeypatch, skip_metrics=("loss",))
    assert got["metrics"]["loss"] == pytest.approx(one["padded_loss"], abs=METRIC_ABS)
    assert got["metrics"]["loss"] != pytest.approx(one["metrics"]["loss"], abs=1e-4)


def test_stn(two, monkeypatch):
    """STN: BCE through the spatial transformer; AUC, the 95%-recall operating point chosen on the
    gathered validation split, the affine parameters of every test image (``affine/*``)."""
    got, _ = _check("stn", two, monkeypatch)
    assert got["metrics"]["n_images"] == N_TEST and "affine/s_x/mean" in got["metrics"]


def test_thorax_box_steps_on_a_process_without_masks(two):
    """Process 1's batch holds only empty masks: it steps with a zero loss (the whole graph, zero gradients),
    so DDP completes the step (it used to return None and hang DDP); process 0's loss is its share of the
    global batch's mean over images with a mask, so the reduced gradient is one process's over the whole
    batch, i.e. process 0's own (it was half of it while each process divided by its own count)."""
    p0, p1 = two[0]["thorax"]
    assert p1["tensor_with_grad"] and p1["loss"] == 0 and p1["own_grads_zero"]
    assert p0["all_grads"] and p1["all_grads"] and p0["err"] <= GRAD_REL and p1["err"] <= GRAD_REL, (p0, p1)
    assert p0["err_local_mean"] > 0.1  # the per-process mean (process 0's own / 2) is another gradient


# ---- GMML's corruption generator in a checkpoint: each process's own (issue 27)
def _gmml_checkpoint_round_trip(rank: int, world: int, path: str) -> dict:
    import torch.distributed as dist

    model = _gmml()
    model.gen_train = torch.Generator().manual_seed(1000 + rank)  # as _train_generator seeds it: per rank
    torch.rand(5, generator=model.gen_train)
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)  # every process runs the hook; rank 0's dictionary is written
    if rank == 0:
        torch.save(checkpoint, path)
    dist.barrier()
    expected = torch.rand(3, generator=model.gen_train).tolist()  # what this process draws next
    resumed = _gmml()
    resumed.on_load_checkpoint(torch.load(path, weights_only=True))
    got = torch.rand(3, generator=resumed.gen_train).tolist()
    answers: list = [None] * world
    dist.all_gather_object(answers, {"expected": expected, "got": got})
    return {"ranks": answers}


def test_gmml_checkpoint_restores_each_processs_own_corruption_generator(tmp_path):
    from gloo import on_two_processes

    ranks = on_two_processes(_gmml_checkpoint_round_trip, tmp_path, str(tmp_path / "gmml.ckpt"))["ranks"]
    assert [r["got"] for r in ranks] == [r["expected"] for r in ranks]  # rank 1 no longer restores rank 0's
    assert ranks[0]["got"] != ranks[1]["got"]
