"""bf16 mixed precision with the heads in fp32 (``cxrbench.precision``, issue 33), checked on the CPU,
where Lightning's ``bf16-mixed`` autocast runs bf16 matmuls and convolutions as on a GPU."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch

from cxrbench.methods import LinearProbe
from cxrbench.precision import run_in_fp32

#: |AUC(bf16-mixed) − AUC(fp32)| allowed on the twin probe below; measured 0.0034 / 0.0035 / 0.0035 over
#: seeds 0–2 (default kernels; AUCs 0.59 / 0.62 / 0.40: 6 epochs on 600 images is a ranking check, not a learns test)
BF16_AUC_TOLERANCE = 0.02
SEED = 0


def test_a_head_run_in_fp32_gives_fp32_logits_under_bf16_autocast_and_keeps_its_state_dict():
    torch.manual_seed(0)
    head, x = torch.nn.Linear(16, 3), torch.randn(4, 16)
    keys = list(head.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(x).dtype == torch.bfloat16  # what autocast alone gives: scores with 8 bits of mantissa
        run_in_fp32(head)
        run_in_fp32(head)  # idempotent
        out = head(x.bfloat16())
    assert out.dtype == torch.float32 and list(head.state_dict()) == keys
    assert torch.allclose(out, torch.nn.functional.linear(x.bfloat16().float(), head.weight, head.bias))


@pytest.mark.slow
def test_a_bf16_mixed_probe_scores_as_the_fp32_probe_within_the_stated_tolerance(twin_factory, tmp_path):
    from data_modules import NIH

    dm = NIH(twin_factory("nih", n=600, seed=2, size=128), protocol="amm", label_set="cardiomegaly", transforms="plain",
             image_size=48, cache_size=128, cache_dir=str(tmp_path / "c"), batch_size=32, val_share=0.15)
    got = {}
    for precision in ("32-true", "bf16-mixed"):
        L.seed_everything(SEED)
        probe = LinearProbe(encoder="unet", encoder_kwargs={"width": 8}, freeze="bn_train", lr=0.1,
                            class_names=["Cardiomegaly"], threshold="val_youden")
        warnings.filterwarnings("ignore")
        trainer = L.Trainer(max_epochs=6, accelerator="cpu", precision=precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0)
        trainer.fit(probe, dm)
        trainer.test(probe, dm, verbose=False)
        got[precision] = probe.test_metrics["auc/mean"]
        if precision == "bf16-mixed":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert probe(torch.rand(2, 1, 48, 48)).dtype == torch.float32  # the head ran in fp32
    print(f"probe AUC fp32 {got['32-true']:.4f}, bf16-mixed {got['bf16-mixed']:.4f}")
    assert abs(got["bf16-mixed"] - got["32-true"]) < BF16_AUC_TOLERANCE, got


# ---------------------------------------------------------------------------------- SpeedSettings
def _fit_amm(root, tmp_path, callbacks, steps: int = 4):
    """A few steps of a tiny AMM (resnet10t: convolutions, batch norm, the attention head) on a twin."""
    from cxrbench.methods import AMM
    from data_modules import NIH

    dm = NIH(root, protocol="amm", label_set="cardiomegaly", transforms="plain", image_size=64, cache_size=64,
             cache_dir=str(tmp_path / "c"), batch_size=8, val_share=0.15)
    L.seed_everything(SEED)
    model = AMM(backbone="resnet10t", lr=0.01, num_classes=1, class_names=["Cardiomegaly"])
    warnings.filterwarnings("ignore")
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, deterministic=True, callbacks=callbacks)
    trainer.fit(model, dm)
    return model


class _Seen(L.Callback):
    """What the run trained with: the TF32 switches and the first conv weight's layout."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        from torch.nn import Conv2d

        # a 3x3 conv of several input channels (a 1-channel weight is contiguous in both layouts)
        conv = next(m for m in pl_module.modules() if isinstance(m, Conv2d) and m.in_channels > 1 and m.kernel_size[0] > 1)
        self.seen = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32,
                     not conv.weight.is_contiguous() and conv.weight.is_contiguous(memory_format=torch.channels_last))


def test_speed_settings_switch_tf32_for_the_run_and_put_the_process_back(twin_factory, tmp_path):
    from cxrbench.callbacks import SpeedSettings

    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    for tf32, expected in ((True, ("high", True)), (False, ("highest", False))):
        seen = _Seen()
        _fit_amm(twin_factory("nih", n=300, seed=2, size=64), tmp_path, [SpeedSettings(tf32=tf32), seen], steps=1)
        assert seen.seen[:2] == expected
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


#: max |Δ| of any weight after one SGD step against the plain run, relative to the largest change the step
#: made. Measured 1.1e-5 (channels_last) and 0 (aot_eager compile) on the default kernels: float rounding. Over
#: more steps the twin's small batches amplify rounding (4 steps: 7% of the update at lr 0.01), so one step it is.
SPEED_WEIGHT_TOLERANCE = 1e-3


@pytest.mark.slow
def test_channels_last_and_compile_train_the_plain_models_step_within_tolerance(twin_factory, tmp_path):
    from cxrbench.callbacks import SpeedSettings
    from cxrbench.methods import AMM

    root = twin_factory("nih", n=300, seed=2, size=64)
    L.seed_everything(SEED)
    start = dict(AMM(backbone="resnet10t", lr=0.01, num_classes=1, class_names=["Cardiomegaly"]).named_parameters())
    plain = _fit_amm(root, tmp_path, [], steps=1)
    keys = list(plain.state_dict())
    update = max(float((p - start[k]).abs().max()) for k, p in plain.named_parameters())  # the weights the step moved
    for settings in (SpeedSettings(channels_last=True), SpeedSettings(compile=True, compile_backend="aot_eager")):
        seen = _Seen()
        other = _fit_amm(root, tmp_path, [settings, seen], steps=1)
        assert seen.seen[2] == settings.channels_last  # the layout the run trained in
        assert list(other.state_dict()) == keys  # checkpoints load either way
        compiled = [getattr(c, "_compiled_call_impl", None) is not None for c in other.children()
                    if any(True for _ in c.parameters())]
        assert all(compiled) if settings.compile else not any(compiled)
        worst = max(float((a - b).abs().max()) for a, b in zip(plain.state_dict().values(), other.state_dict().values())
                    if a.is_floating_point())
        print(f"{settings.channels_last=} {settings.compile=}: max |Δweight| {worst:.2e} of an update of {update:.2e}")
        assert worst < SPEED_WEIGHT_TOLERANCE * update, (vars(settings), worst, update)
