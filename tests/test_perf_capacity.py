"""The loader-capacity benchmark (issue 33): its GPU arithmetic, and the bad input it refuses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.perf import loader_capacity as lc


def test_an_unknown_gpu_or_an_mfu_outside_0_1_is_refused_naming_the_known_gpus():
    with pytest.raises(SystemExit, match=r"--gpu 'h1000' is not known; known: h100 \(989 TFLOP/s bf16\)"):
        lc.measure(gpu="h1000")
    for mfu in (0.0, 1.5):
        with pytest.raises(SystemExit, match=r"--mfu must be in \(0, 1\]"):
            lc.measure(mfu=mfu)


def test_training_flops_are_three_forwards_or_one_for_a_frozen_encoder_times_the_views():
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    forward = 2 * 9 * 4 * 8 * 8  # multiply-adds as 2 FLOPs, an 8² image
    assert lc.train_flops_per_image(conv, 8, 1) == pytest.approx(3 * forward)
    assert lc.train_flops_per_image(conv, 8, 2) == pytest.approx(6 * forward)
    conv.freeze = "strict"  # a probe's frozen encoder: its forward only
    assert lc.train_flops_per_image(conv, 8, 1) == pytest.approx(forward)
    assert torch.is_grad_enabled()
