"""One registration per method, one data contract per DataModule, and the README's walk-through of
adding a method: registered through the public decorator, run in a one-cell sweep, on the board."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import cxrbench.methods as methods
from cxrbench.methods import METHODS, Method, RegistryError, method_class, register
from data_modules import NIH, DataError
from data_modules.contract import contract_fields

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

PAPER_METHODS = {"amm", "gap", "rgt", "vit", "vgg16", "stn", "thorax-crop", "thorax-box", "supce", "simclr", "supcon",
                 "camcontrast-cam", "camcontrast", "linear", "finetune", "unet", "gmml", "unetr"}


def test_every_method_is_registered_once_under_the_name_its_records_carry():
    assert PAPER_METHODS <= set(METHODS)
    for name, cls in METHODS.items():
        assert cls.method_name == name and method_class(name) is cls
    assert len({id(c) for c in METHODS.values()}) == len(METHODS)  # one name per class
    exported = [getattr(methods, n) for n in methods.__all__]
    concrete = [c for c in exported if isinstance(c, type) and issubclass(c, Method) and c.method_name in METHODS
                and METHODS[c.method_name] is c]
    assert {c.method_name for c in concrete} == PAPER_METHODS
    for cls in METHODS.values():  # every need a method states is a field of the contract
        assert set(cls.data_needs) <= set(contract_fields())


def test_registration_mistakes_are_refused_when_the_module_is_imported():
    with pytest.raises(RegistryError, match=r"two methods registered as 'amm': cxrbench.methods.amm.AMM and .*Impostor"):
        @register("amm")
        class Impostor(Method):
            pass
    with pytest.raises(RegistryError, match="registered as 'simclr' already"):
        register("simclr-again")(METHODS["simclr"])
    with pytest.raises(RegistryError, match=r"needs \['boxes'\] of the data contract, which has no such field"):
        @register("wants-boxes")
        class WantsBoxes(Method):
            data_needs = ("boxes",)
    with pytest.raises(RegistryError, match="non-empty word"):
        register("two words")
    with pytest.raises(RegistryError, match="no method registered as 'amn'; registered: amm, "):
        method_class("amn")
    assert "wants-boxes" not in METHODS and METHODS["amm"].__name__ == "AMM"


def test_the_contract_is_all_a_method_reads_and_says_what_it_lacks(twin_factory, tmp_path):
    root = twin_factory("lungs", n=40, size=64)
    from data_modules import Lungs

    dm = Lungs(root, transforms="plain", image_size=32, cache_size=64, cache_dir=str(tmp_path / "c"))
    data = dm.contract()
    assert data.dataset == "lungs" and data.label_kind == "segmentation" and data.box_prior is None
    assert data.split_sizes["train"] == len(dm.splits["train"]) and data.test_splits == ("test",)
    with pytest.raises(AttributeError, match="the data contract has no field 'index'; its fields are dataset, "):
        data.index  # noqa: B018 — a method reaching for the DataModule's internals
    rgt = METHODS["rgt"]
    with pytest.raises(DataError, match=r"needs \['box_prior'\] from its DataModule, which Lungs at .* does not provide"):
        data.require(rgt.data_needs, "RGT")


def test_a_binary_methods_operating_point_is_chosen_in_the_test_loop(twin_factory, tmp_path):
    """A val-chosen threshold adds the validation split to the test loaders (Lightning's loop, DDP-correct);
    a fixed one does not."""
    import lightning as L

    from toy_methods import ToyClassifier

    root = twin_factory("nih", n=90, size=64)
    for rule, splits in (("val_youden", ("test", "loc", "val")), ("fixed:0.5", ("test", "loc"))):
        dm = NIH(root, protocol="official", label_set="abnormal", transforms="plain", image_size=32, cache_size=64,
                 cache_dir=str(tmp_path / "c"), batch_size=32)
        model = ToyClassifier(num_classes=1, class_names=["Abnormal"], task="binary", threshold=rule)
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.test(model, dm, verbose=False)
        assert model.data.test_splits == splits
        assert "threshold" in model.test_metrics and "val/auc/mean" not in model.test_metrics


MY_METHOD = '''
"""A new method, as the README's walk-through adds one: a class, its registration, its config."""
import torch
from torch import nn

from cxrbench.methods import register
from cxrbench.methods.classification import ClassificationMethod


@register("my-toy")
class MyToy(ClassificationMethod):
    def __init__(self, lr: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, self.num_classes))

    def forward(self, images):
        return self.net(images)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
'''


def test_adding_a_method_is_a_class_a_config_and_a_cell(twin_factory, tmp_path):
    root = twin_factory("nih", n=90, size=64)
    (tmp_path / "my_method.py").write_text(textwrap.dedent(MY_METHOD))
    config = yaml.safe_load((TESTS / "configs/toy_nih8.yaml").read_text())
    config["model"] = {"class_path": "my_method.MyToy", "init_args": {"lr": 0.01, "threshold": "fixed:0.5"}}
    config["trainer"]["max_epochs"] = 1
    (tmp_path / "my_toy.yaml").write_text(yaml.safe_dump(config))
    spec = {"name": "walkthrough", "scale": "test", "runs_dir": str(tmp_path / "runs"),
            "data": {"nih": {"root": str(root)}},
            "cells": [{"name": "my-toy-nih8", "task": "nih8-cls", "method": "my-toy", "config": "my_toy.yaml",
                       "data": "nih"}]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "CXRBENCH_CACHE": str(tmp_path / "cache"), "CXRBENCH_WANDB": "0"}
    res = subprocess.run([sys.executable, "-m", "cxrbench.cli", "bench", "spec.yaml", "--leaderboard", "boards"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/result.json")]
    assert record["method"] == "my-toy" and record["module"] == "MyToy" and "auc/mean" in record["metrics"]
    board = "\n".join(p.read_text() for p in (tmp_path / "boards").glob("*.md"))
    assert "my-toy" in board


def test_the_heatmap_overlays_come_from_what_the_method_kept_while_scoring_loc(twin_factory, tmp_path):
    """W&B's heatmap overlays are drawn from the ``loc`` images the method kept as it scored them: no second
    loader, no DataModule read by the reporting layer."""
    from types import SimpleNamespace

    import lightning as L
    import torch

    from cxrbench.callbacks import WandbTestMedia
    from toy_methods import ToyClassifier

    class MappedToy(ToyClassifier):
        def heatmaps(self, images):
            return images.expand(-1, self.num_classes, -1, -1)

    root = twin_factory("nih", n=90, size=64)
    dm = NIH(root, protocol="official", label_set="nih8", transforms="plain", image_size=32, cache_size=64,
             cache_dir=str(tmp_path / "c"), batch_size=16)
    model = MappedToy(num_classes=8, class_names=dm.classes, task="multilabel", threshold="fixed:0.5")
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False).test(
        model, dm, verbose=False)
    kept = model.loc_examples
    n = min(8, len(dm.splits["loc"]))
    assert n > 0 and len(kept["image"]) == n == len(kept["boxes"]) and kept["map"].shape[1] == 8
    assert set(kept["index"].tolist()) <= set(dm.splits["loc"].tolist())
    captions = WandbTestMedia()._heatmaps(None, model, SimpleNamespace(Image=lambda fig, caption: caption))
    assert len(captions) == n and all(" p=" in c for c in captions)
    assert torch.equal(kept["image"], model.loc_examples["image"])
