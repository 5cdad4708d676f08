"""SS-CXR / GMML: the corruption, the loss, the timm → MONAI UNETR mapping, what is refused, and
that pretraining helps (or what was measured instead)."""

from __future__ import annotations

import logging
import shutil
import warnings

import lightning as L
import numpy as np
import pytest
import torch

from cxrbench.artifacts import ArtifactError, load_encoder, save_encoder
from cxrbench.losses import masked_l1
from cxrbench.methods import GMML, FineTune, UNETRSegmenter
from cxrbench.methods.gmml import corrupt, rectangle_union
from cxrbench.models.encoders import build_encoder
from data_modules.io import DataError

#: a ViT MONAI's UNETR accepts (12 blocks, patch 16), small enough for a CPU test
UNETR_VIT = {"img_size": 64, "patch_size": 16, "embed_dim": 48, "depth": 12, "num_heads": 3}
#: a small ViT for the classification tests (64 px, patch 8: 64 tokens)
SMALL_VIT = {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4}
MAX_RECT = 0.3 * 0.3  # one rectangle covers at most 9% of the image


def _trainer(epochs: int, **kw) -> L.Trainer:
    warnings.filterwarnings("ignore")
    return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


# ---------------------------------------------------------------------------------------- corruption
def test_noise_rectangles_cover_the_budget_and_overshoot_by_less_than_one_rectangle():
    g = torch.Generator().manual_seed(0)
    for budget in (0.5, 0.6, 0.7):
        for _ in range(10):
            m = rectangle_union(64, 80, budget * 64 * 80, 0.3, g)
            assert budget <= m.mean() < budget + MAX_RECT, (budget, m.mean())
    x = torch.rand(16, 1, 64, 64)
    _, mask, donor = corrupt(x, torch.Generator().manual_seed(1), replace_prob=0.0)
    share = mask.float().mean((1, 2, 3))
    assert (donor == -1).all() and (share >= 0.5).all() and (share < 0.7 + MAX_RECT).all(), share
    assert share.std() > 0.02  # a budget drawn per image in [0.5, 0.7], not one fixed share


def test_noise_is_standard_normal_in_the_batchs_normalised_space_and_only_inside_the_mask():
    x = 0.3 + 0.1 * torch.rand(8, 1, 64, 64)
    out, mask, _ = corrupt(x, torch.Generator().manual_seed(2), replace_prob=0.0)
    z = (out[mask] - x.mean()) / x.std()
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    assert torch.equal(out[~mask], x[~mask])


def test_replacement_takes_35_percent_from_another_image_of_the_batch_at_the_same_place():
    x = torch.rand(12, 1, 64, 64)
    out, mask, donor = corrupt(x, torch.Generator().manual_seed(3), replace_prob=1.0)
    share = mask.float().mean((1, 2, 3))
    assert (share >= 0.35).all() and (share < 0.35 + MAX_RECT).all(), share
    assert (donor >= 0).all() and (donor != torch.arange(12)).all()  # never the image itself
    for i in range(12):
        m = mask[i, 0]
        assert torch.equal(out[i, 0][m], x[donor[i], 0][m]) and torch.equal(out[i, 0][~m], x[i, 0][~m])
    # the default mixes both kinds, about half each
    _, _, donor = corrupt(torch.rand(200, 1, 32, 32), torch.Generator().manual_seed(4))
    assert 0.35 < float((donor >= 0).float().mean()) < 0.65


def test_the_corruption_is_reproducible_under_a_seed():
    x = torch.rand(6, 1, 48, 48)
    a = corrupt(x, torch.Generator().manual_seed(5))
    b = corrupt(x, torch.Generator().manual_seed(5))
    c = corrupt(x, torch.Generator().manual_seed(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_the_loss_ignores_uncorrupted_pixels():
    x = torch.rand(4, 1, 32, 32)
    _, mask, _ = corrupt(x, torch.Generator().manual_seed(7))
    recon = torch.rand(4, 1, 32, 32, requires_grad=True)
    loss = masked_l1(recon, x, mask)
    loss.backward()
    assert torch.all(recon.grad[~mask] == 0) and torch.all(recon.grad[mask] != 0)
    moved = recon.detach().clone()
    moved[~mask] += 10.0
    assert torch.equal(masked_l1(moved, x, mask), loss.detach())
    assert torch.isclose(loss, (recon - x).abs()[mask].mean())


def test_gmml_decoders_reconstruct_at_the_input_size_and_only_the_encoder_is_exported(tmp_path):
    x = torch.rand(2, 1, 64, 64)
    for decoder in ("paper", "public"):
        model = GMML(encoder_kwargs=SMALL_VIT, decoder=decoder, decoder_dims=(128, 128, 32))
        assert model.reconstruct(x).shape == x.shape
    assert model.recons_blocks == [2, 3, 4]  # blocks 6/8/10/12 of 12, as fractions of 4
    paper = GMML(encoder_kwargs=SMALL_VIT)
    widths = [m.out_features for m in paper.decoder.mlp if isinstance(m, torch.nn.Linear)]
    assert widths == [2048, 2048, 256] and paper.decoder.up.kernel_size == (8, 8) == paper.decoder.up.stride
    path = model.export_artifact("encoder", tmp_path / "encoder.pt", None, {"run_id": "gmml"})
    state = torch.load(path, weights_only=True)["payload"]["state_dict"]
    assert state.keys() == model.encoder.state_dict().keys() and not any("decoder" in k for k in state)
    with pytest.raises(ValueError, match="GMML reconstructs the image from a ViT's patch tokens"):
        GMML(encoder="unet", encoder_kwargs={"width": 4})


# ---------------------------------------------------------------------------------------- UNETR
def test_every_encoder_tensor_of_a_gmml_artifact_lands_in_the_unetr_and_hidden_states_agree(tmp_path):
    torch.manual_seed(0)
    gmml = GMML(encoder_kwargs=UNETR_VIT, decoder="public")
    with torch.no_grad():  # away from the init (ones / zeros) so that a tensor left behind would show
        for p in gmml.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = gmml.export_artifact("encoder", tmp_path / "encoder.pt", None, {"run_id": "gmml"})
    art = torch.load(path, weights_only=True)["payload"]["state_dict"]
    seg = UNETRSegmenter(encoder_artifact=str(path))
    vit = seg.net.vit
    monai = dict(vit.named_parameters())
    timm = {k[len("vit."):]: v for k, v in art.items()}
    assert len(timm) == 150  # ViT-S layout: cls, pos, patch proj (2), 12 blocks × 12, final norm (2)
    landed = {}
    for key, value in timm.items():
        if key == "pos_embed":
            landed["cls_pos"], landed["patch_embedding.position_embeddings"] = value[:, :1], value[:, 1:]
        else:
            name = {"cls_token": "cls_token"}.get(key) or (
                key.replace("patch_embed.proj.", "patch_embedding.patch_embeddings.").replace(".attn.proj.", ".attn.out_proj.")
                .replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2."))
            landed[name] = value
    for name, value in landed.items():
        assert torch.equal(monai[name].detach(), value), name
    left = sorted(set(monai) - set(landed))
    assert left and all(".norm_cross_attn." in k for k in left), left  # unused by UNETR's blocks
    assert all(m.eps == 1e-6 for m in vit.modules() if isinstance(m, torch.nn.LayerNorm))
    enc = load_encoder(path)[0].eval()
    seg.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ours, (last, hidden) = enc.tokens(x), vit(x)
        for i in range(11):
            assert torch.allclose(ours[i][:, 1:], hidden[i], atol=1e-5), (i, (ours[i][:, 1:] - hidden[i]).abs().max())
        assert torch.allclose(ours[-1][:, 1:], last, atol=1e-5)
        assert seg(x).shape == (2, 1, 64, 64) and seg(torch.rand(1, 1, 80, 80)).shape == (1, 1, 80, 80)


# ---------------------------------------------------------------------------------------- bad input
def test_artifacts_of_another_architecture_or_patch_size_are_refused_and_another_size_is_resampled(tmp_path, caplog):
    unet = save_encoder(tmp_path / "unet.pt", build_encoder("unet", width=4), {"run_id": "u"})
    with pytest.raises(ArtifactError, match=r"holds a 'unet' encoder \(cnn\), but UNETRSegmenter needs a vit"):
        UNETRSegmenter(encoder_artifact=str(unet))
    with pytest.raises(ArtifactError, match="holds a 'unet' encoder .* built for a 'vit_small_patch16' encoder"):
        FineTune(encoder="vit_small_patch16", encoder_kwargs={"img_size": 64}, encoder_artifact=str(unet))
    p8 = save_encoder(tmp_path / "p8.pt", build_encoder("vit_small_patch16", **SMALL_VIT), {"run_id": "p8"})
    with pytest.raises(ArtifactError, match="with patch_size=8, but FineTune is built for patch_size=16: another "
                                            "architecture, refused"):
        FineTune(encoder="vit_small_patch16", encoder_kwargs={"img_size": 64, "patch_size": 16}, encoder_artifact=str(p8))
    with pytest.raises(ValueError, match="UNETR reads blocks 4/7/10/12 of a ViT with patch size 16; this encoder has "
                                         "4 blocks and patch size 8"):
        UNETRSegmenter(encoder_artifact=str(p8))
    src = build_encoder("vit_small_patch16", **UNETR_VIT)
    path = save_encoder(tmp_path / "vit64.pt", src, {"run_id": "v"})
    with caplog.at_level(logging.WARNING, logger="cxrbench.encoders"):
        seg = UNETRSegmenter(encoder_artifact=str(path), encoder_kwargs={"img_size": 96})
    assert "position embedding resampled from a 4x4 to a 6x6 patch grid" in caplog.text
    pos = seg.net.vit.patch_embedding.position_embeddings
    assert pos.shape == (1, 36, 48) and not torch.equal(pos[:, :16], src.vit.pos_embed[:, 1:].detach())
    assert torch.equal(seg.net.vit.cls_pos.detach(), src.vit.pos_embed[:, :1].detach())  # the class position kept


def _covidx_copy(twin_factory, tmp_path, edit=None):
    root = tmp_path / "covidx"
    shutil.copytree(twin_factory("covidx", n=120, size=64), root)
    if edit:
        for name in ("train.txt", "val.txt", "test.txt"):
            f = root / name
            f.write_text(edit(f.read_text()))
    return root


def test_covidx_sources_outside_the_held_out_vocabulary_are_refused(twin_factory, tmp_path):
    from data_modules import COVIDx

    root = _covidx_copy(twin_factory, tmp_path, edit=lambda t: t.replace(" cohen\n", " COHEN\n", 3))
    with pytest.raises(DataError, match=r"rows with source\(s\) \['COHEN'\] match held_out_sources \['cohen', "
                                        r"'actmed'\] only up to case"):
        COVIDx(root, held_out_sources=["cohen", "actmed"], cache=False).prepare_index()
    with pytest.raises(DataError, match=r"held_out_sources \['ACTMED'\] not in this release"):
        COVIDx(root, held_out_sources=["ACTMED"], cache=False).prepare_index()
    dm = COVIDx(root, task="pneumonia_vs_rest", held_out_sources=["COHEN", "cohen", "actmed"], cache=False)
    dm.setup()
    lab, meta = dm.index.labels["pneumonia"], dm.index.meta
    assert ((lab == 1) == (meta["label"] == "pneumonia")).all()
    assert set(meta["source"].iloc[dm.splits["shift"]]) == {"COHEN", "cohen", "actmed"}


def test_a_pretraining_split_that_would_include_test_or_held_out_images_is_refused_before_training(twin_factory, tmp_path):
    from data_modules import COVIDx

    root = _covidx_copy(twin_factory, tmp_path)
    kw = {"transforms": "plain", "image_size": 64, "cache_size": 64, "cache_dir": str(tmp_path / "c"), "batch_size": 16}
    gmml = GMML(encoder_kwargs=SMALL_VIT, decoder="public", exclude_sources=["cohen", "actmed"])
    before = {k: v.clone() for k, v in gmml.encoder.state_dict().items()}
    with pytest.raises(DataError, match=r"held-out source\(s\) \['actmed', 'cohen'\]: set data.init_args.held_out_sources"):
        _trainer(1).fit(gmml, COVIDx(root, **kw))  # held_out_sources forgotten
    leaky = COVIDx(root, held_out_sources=["cohen", "actmed"], **kw)
    make = leaky.make_splits
    leaky.make_splits = lambda index: {**(s := make(index)), "train": np.union1d(s["train"], s["test"][:3])}
    with pytest.raises(DataError, match="would include 3 image\\(s\\) of the 'test' split"):
        _trainer(1).fit(gmml, leaky)
    assert all(torch.equal(before[k], v) for k, v in gmml.encoder.state_dict().items())  # not one step taken
