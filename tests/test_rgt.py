"""RGT and its ViT baseline: shapes, losses that never turn NaN, bad settings, and learning on a twin."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch

from cxrbench.localization.chance import VersusChance
from cxrbench.methods import RGT, ViTBaseline
from cxrbench.models.byoa import ClassBoxPrior
from data_modules.transforms import to_float


TINY = dict(img_size=64, patch_size=8, dim=32, depth=2, heads=2, warmup_epochs=1)


def _rgt(k=3, **kw):
    m = RGT(num_classes=k, class_names=[f"c{i}" for i in range(k)], task="multilabel", **TINY, **kw)
    prior = ClassBoxPrior(m.class_names, torch.full((k, 2), 0.5), torch.full((k, 2), 0.3))
    m.prior_center.copy_(prior.center)
    m.prior_size.copy_(prior.size)
    return m


def test_forward_shapes_attention_maps_and_losses_are_finite():
    m = _rgt()
    x = torch.rand(4, 1, 64, 64)
    logits, img_f, rad_f, boxes = m.fused(x)
    assert logits.shape == (4, 3) and img_f.shape == rad_f.shape == (4, 3, 32) and boxes.shape == (4, 3, 4)
    maps = m.heatmaps(x)
    assert maps.shape == (4, 3, 64, 64) and torch.isfinite(maps).all()
    _, att = m.vit(x)
    assert torch.all(att.sum((2, 3)) <= 1 + 1e-5)  # part of a softmax over class + patch tokens
    label = torch.tensor([[1.0, 0, float("nan")]] * 4)
    loss = (1 - m.hparams.lam) * m.nt_xent(img_f, rad_f) + m.hparams.lam * m.loss(logits, label)
    loss.backward()
    assert torch.isfinite(loss) and m.vit.cls.grad is not None and m.rad.cls.grad is not None


def test_degenerate_rois_and_flat_images_never_make_a_nan_loss():
    m = _rgt(k=2)
    m.prior_size.fill_(0.001)  # boxes under one pixel: PyRadiomics would refuse them -> NaN features
    x = torch.zeros(3, 1, 64, 64)  # and a constant image
    feats = m.radiomics(x, m.byoa(m.vit(x)[1], x.shape[-2:])[1])
    assert torch.isfinite(feats).all()
    logits, img_f, rad_f, _ = m.fused(x)
    assert torch.isfinite(m.nt_xent(img_f, rad_f)) and torch.isfinite(m.loss(logits, torch.ones(3, 2)))


def test_nan_features_are_imputed_with_the_running_mean_not_zero():
    m = _rgt(k=1)
    m.rad_norm.running_mean.fill_(50.0)
    m.rad_norm.running_var.fill_(4.0)
    feats = torch.full((4, 107), 52.0)
    feats[1] = float("nan")
    feats[2, :5] = float("inf")
    m.eval()
    out = m.standardise(feats)
    assert torch.equal(out[1], torch.zeros(107)) and torch.equal(out[2, :5], torch.zeros(5))
    assert torch.allclose(out[0], torch.full((107,), 1.0), atol=1e-3)  # (52 − 50) / 2
    m.train()  # batch statistics: the imputed row sits at the running mean, finite rows are unaffected by zeros
    out = m.standardise(feats)
    assert torch.equal(out[1], torch.zeros(107)) and torch.isfinite(out).all()
    assert (out[0, 5:] > 0).all()  # 52 is above the batch mean (52, 52, 50, 52) -> positive, not ≈ +1.7 from a 0 row


def test_conv_stem_gives_the_same_token_grid_and_refuses_odd_patches():
    m = _rgt(stem="conv")
    _, att = m.vit(torch.rand(2, 1, 64, 64))
    assert att.shape == (2, 3, 8, 8) and m.vit.grid == (8, 8)
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.vit.patch.modules())  # convolutions, not one patchify
    with pytest.raises(ValueError, match="power-of-two patch_size"):
        RGT(num_classes=1, class_names=["c"], **{**TINY, "patch_size": 6, "stem": "conv"})
    with pytest.raises(ValueError, match="stem must be"):
        RGT(num_classes=1, class_names=["c"], **{**TINY, "stem": "psvit"})


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"top \(T\) must be in \(0, 1\)"):
        RGT(num_classes=1, class_names=["c"], top=0.0, **TINY)
    with pytest.raises(ValueError, match="lam"):
        RGT(num_classes=1, class_names=["c"], lam=1.5, **TINY)
    m = RGT(num_classes=1, class_names=["c"], **TINY)
    with pytest.raises(RuntimeError, match="no class box prior"):
        m(torch.rand(1, 1, 64, 64))


def _oracle_batch(b=3, k=3, side=64):
    boxes = torch.tensor([[4.0, 6.0, 20.0, 30.0], [30.0, 10.0, 50.0, 22.0], [8.0, 40.0, 16.0, 60.0]])
    oracle = boxes[None].repeat(b, 1, 1) + torch.arange(b, dtype=torch.float32)[:, None, None]
    known = torch.ones(b, k, dtype=torch.bool)
    known[0, 2] = False  # the oracle file names no box of class 2 on image 0
    return {"image": torch.rand(b, 1, side, side), "oracle_boxes": oracle, "oracle_known": known,
            "label": torch.zeros(b, k)}


def test_box_sources_give_the_boxes_they_name():
    batch = _oracle_batch()
    m = _rgt(box_source="oracle")
    mean = m.mean_boxes(torch.full((3, 2), 32.0).expand(3, 3, 2), (64, 64))  # prior: centre 0.5, side 0.3
    got = m.source_boxes(batch, (64, 64))
    assert torch.equal(got[1:], batch["oracle_boxes"][1:]) and torch.equal(got[0, :2], batch["oracle_boxes"][0, :2])
    assert torch.allclose(got[0, 2], mean[0, 2])  # unknown: the class's mean box, BYOA's fallback
    m.hparams.box_source = "shuffled"  # the previous image's: every image gets another's boxes
    got = m.source_boxes(batch, (64, 64))
    assert torch.equal(got[1, :2], batch["oracle_boxes"][0, :2]) and torch.allclose(got[1, 2], mean[0, 2])
    assert torch.equal(got[2], batch["oracle_boxes"][1]) and torch.equal(got[0], batch["oracle_boxes"][2])
    m.hparams.box_source = "oracle_center"
    got = m.source_boxes(batch, (64, 64))
    centre = (batch["oracle_boxes"][1, 0, :2] + batch["oracle_boxes"][1, 0, 2:]) / 2
    assert torch.allclose((got[1, 0, :2] + got[1, 0, 2:]) / 2, centre)
    assert torch.allclose(got[1, 0, 2:] - got[1, 0, :2], torch.tensor([0.3 * 64] * 2))
    m.hparams.box_source = "random"
    got = m.source_boxes(batch, (64, 64))
    assert torch.allclose(got[..., 2:] - got[..., :2], torch.tensor(0.3 * 64)) and (got >= 0).all() and (got <= 64).all()


def test_the_radiomics_branch_alone_reads_only_its_boxes():
    m = _rgt(box_source="oracle", branch="radiomics")
    batch = _oracle_batch()
    logits, img_f, rad_f, boxes = m.fused(batch["image"], batch)
    assert logits.shape == (3, 3) and img_f is None and rad_f is None and torch.equal(boxes[1], batch["oracle_boxes"][1])
    assert m.heatmaps(batch["image"]) is None  # no image branch, no maps: the loc split is not scored
    loss = m.training_step(batch, 0)
    loss.backward()
    assert m.vit.cls.grad is None and m.rad.weight.grad is not None  # the image branch takes no part
    with pytest.raises(ValueError, match="takes its boxes from the batch"):
        m(batch["image"])
    with pytest.raises(ValueError, match="no attention for BYOA"):
        _rgt(branch="radiomics")
    with pytest.raises(ValueError, match="box_source must be one of"):
        _rgt(box_source="gt")


def test_oracle_boxes_on_data_without_them_are_refused_before_training(twin_factory, tmp_path):
    """Bad input: oracle boxes asked of a DataModule that has none, or an oracle file that misses images."""
    from data_modules import NIH
    from data_modules.io import DataError

    root = twin_factory("nih", n=60, size=128)
    kw = dict(protocol="rgt", label_set="nih8", image_size=64, cache_size=128, cache_dir=str(tmp_path / "c"))
    m = RGT(num_classes=8, class_names=list(NIH(root, **kw).classes), box_source="shuffled", **TINY)
    with pytest.raises(DataError, match="oracle boxes, which NIH .* does not provide: give NIH the option oracle_boxes"):
        m.bind_data(NIH(root, **kw).contract())
    m.bind_data(NIH(root, oracle_boxes="twin_boxes.csv", **kw).contract())  # with them: bound
    lines = (root / "twin_boxes.csv").read_text().splitlines()
    first = lines[1].split(",")[0]
    (tmp_path / "partial.csv").write_text("\n".join(l for l in lines if not l.startswith(first)) + "\n")
    with pytest.raises(DataError, match=rf"partial.csv has no row for 1 of the 60 indexed image\(s\) \(e.g. '{first}'\)"):
        NIH(root, oracle_boxes=str(tmp_path / "partial.csv"), **kw).setup()
    with pytest.raises(DataError, match="nih option oracle_boxes: expected file .*nope.csv is missing"):
        NIH(root, oracle_boxes="nope.csv", **kw).setup()


def test_vit_baseline_has_no_radiomics_branch():
    v = ViTBaseline(num_classes=2, class_names=["a", "b"], **TINY)
    assert not hasattr(v, "rad") and v(torch.rand(2, 1, 64, 64)).shape == (2, 2)


def test_rgt_trains_end_to_end_and_reports_its_boxes(twin_factory, tmp_path, learns):
    """Tiny RGT (conv stem + 2 layers, 2-layer radiomics Transformer, 64 px, 10 epochs, ~15 CPU
    seconds) with BYOA + radiomics of its boxes in every step, on a 900-image cardiomegaly twin.

    **Not a learns test.** The same RGT with its loss detached (every gradient zeroed:
    ``CXRBENCH_LEARNS_BROKEN=detach``) reaches test AUC 0.801 on seed 0, above the trained model's 0.781,
    and 20 epochs at lr 3e-3 give 0.702 trained vs 0.785 detached: on this twin a random conv stem with
    adapted BatchNorm statistics, and the radiomics of boxes at the class's mean place, already rank
    cardiomegaly. The AUC bound below checks that training through BYOA and the radiomics engine keeps
    the model working, not that RGT learns; whether it does is issue 32's question at a larger scale.

    Two settings differ from the paper's recipe, both measured on this twin (seeds 0–3):
    - ``stem='conv'``: with the one-shot patchify the image branch alone reaches AUC 0.59 / 0.70 in 20
      epochs; with the convolutional stem 0.92 / 0.95.
    - λ = 1 (focal only): the paper's NT-Xent (negatives from both views) is an instance-discrimination
      task that dominates the focal term on ~600 training images: λ = 0.7 gives AUC 0.41 / 0.75, λ = 0.9
      0.41 / 0.70 (20 epochs); λ = 1 gives 0.81 / 0.74 / 0.83 in 10 epochs. The loss itself is checked against
      pytorch-metric-learning above; BYOA and the radiomics branch still run in every step and feed
      the fused logits.

    Measured (``python tests/measure_learns.py --tests rgt``), seeds 0/1/2: test AUC 0.781 / 0.745 / 0.825
    on the default kernels and 0.782 / 0.746 / 0.825 with avx2 kernels; the bound 0.65 is 0.095 below the
    worst. A detached loss fails it.

    BYOA's boxes are reported, not asserted: class-token attention of a ViT trained from scratch on
    this scale stays nearly flat (±25% around uniform); its maximum lands in the heart box no more
    often than a random point (measured 0–0.44 vs 0.18 across stems, depths, λ, late class tokens and
    nih8 at 1,500 images), and BYOA boxes beat random boxes only through the mean-box fallback. The
    localization claim needs the paper's data scale (issue 7's note).
    """
    from data_modules import NIH

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # see conftest: no thread fights between the two xdist workers
    L.seed_everything(learns.seed)
    twin = twin_factory("nih", n=900, seed=2, size=128)
    dm = NIH(twin, protocol="amm", label_set="cardiomegaly", transforms="plain", image_size=64, cache_size=128, cache_dir=str(tmp_path / "c"), batch_size=32, val_share=0.15)
    model = RGT(lr=1e-3, num_classes=1, class_names=["Cardiomegaly"], threshold="val_youden", lam=1.0,
                **{**TINY, "dim": 64, "stem": "conv"})
    trainer = L.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=learns.callbacks())
    trainer.fit(model, dm)
    assert model.prior_size.sum() > 0  # the box prior came from the box file at setup
    trainer.test(model, dm, verbose=False)
    learns.record(auc=model.test_metrics["auc/mean"])
    assert model.test_metrics["auc/mean"] > 0.65, model.test_metrics
    assert all(0 <= model.test_metrics[f"iou_acc@{t}/mean"] <= 1 for t in (0.1, 0.5))
    # BYOA's boxes against the real boxes, and random boxes of the same size (reported, see the note)
    model.eval()
    tally = VersusChance(model.class_names)
    with torch.no_grad():
        for batch in dm.dataloader("loc", shuffle=False):
            image = to_float(batch["image"])  # outside Lightning's loops: uint8 as the loader gives it
            maps, boxes, fallback = model.byoa(model.vit(image)[1], image.shape[-2:])
            tally.update(maps, boxes, batch["boxes"], batch["box_labels"], fallback)
    r = tally.summary()["Cardiomegaly"]
    assert r["n"] >= 10
    print(f"BYOA box IoU with the real box: {r['iou']:.3f} ({r['fallback']:.0%} mean-box fallbacks); same-size "
          f"random boxes: {r['random_iou']:.3f}; attention peak in the box {r['pointing']:.2f} "
          f"(chance {r['pointing_chance']:.2f})")


def test_rgt_radiomics_branch_learns_from_oracle_boxes_not_from_the_wrong_images_boxes(twin_factory, tmp_path, learns):
    """Issue 32: does RGT's radiomics pathway (boxes -> 107 features -> radiomics Transformer) carry signal
    when its boxes are right? The radiomics branch alone (``branch='radiomics'``, no image branch) on the
    1,500-image NIH twin (nih8, RGT protocol), with the twin's oracle boxes (twin_boxes.csv: where each
    finding is drawn, or would have been); 64 px, dim 32, one radiomics layer, 6 epochs at lr 3e-3
    (~30 CPU seconds). The mechanism off (``CXRBENCH_LEARNS_BROKEN=mechanism_off``) trains on the previous
    image's oracle boxes (``box_source='shuffled'``): the right sizes and places on the wrong image.

    Measured (seeds 0/1/2): test mean AUC 0.748 / 0.698 / 0.724 on the default kernels, AVX2 in
    tests/README.md; shuffled boxes 0.541 / 0.548 / 0.542. The bound 0.62 is 0.078 below the worst oracle
    run and 0.07 above the best shuffled one. The same trained model tested on shuffled boxes falls by
    more than 0.1: its predictions read the box contents of its own image.
    With one Linear(1, d) shared by every feature (``rad_tokens='shared'``, cxrbench before) the branch
    could not tell its features apart and scored 0.54 with oracle boxes (results/rgt_oracle_boxes.md).
    """
    from benchmarks.rgt.oracle_boxes import oracle_datamodule, train_and_test

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # see conftest: no thread fights between the two xdist workers
    twin = twin_factory("nih", n=1500, seed=2, size=128)
    dm = oracle_datamodule(twin, 64, 128, str(tmp_path / "c"))
    source = "shuffled" if learns.broken == "mechanism_off" else "oracle"
    got = train_and_test(dm, "radiomics", source, 6, learns.seed, lr=3e-3, callbacks=learns.callbacks(),
                         dim=32, rad_depth=1, keep_model=True)
    model, trainer = got.pop("model"), got.pop("trainer")
    model.hparams.box_source = "shuffled"  # the trained model, its boxes taken from the previous image
    trainer.test(model, dm, verbose=False)
    shuffled_at_test = model.test_metrics["auc/mean"]
    learns.record(auc=got["auc"], shuffled_at_test_auc=shuffled_at_test)
    assert got["auc"] > 0.62, got
    assert shuffled_at_test < got["auc"] - 0.1, (got["auc"], shuffled_at_test)


def test_weight_decay_spares_norms_biases_class_tokens_and_position_embeddings():
    m = _rgt()
    opt = torch.optim.AdamW(m.param_groups())
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in m.named_parameters()}
    spared = {names[i] for i in set(names) - decayed}
    assert {"vit.cls", "vit.pos", "rad.cls"} <= spared and all(n.endswith((".bias", ".cls", ".pos")) or
                                                                m.get_parameter(n).ndim == 1 for n in spared)
    assert any(n.endswith("qkv.weight") for n in (names[i] for i in decayed))
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}
