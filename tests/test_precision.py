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
