"""Figures of the reporting layer: pictures a method's results are shown with (W&B media, results/).

STN (Rocha et al., paper 001, Fig. 4): the sampled window over each input beside the transformed image,
and the distribution of the affine parameters over the test images.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch

from .models.stn import IDENTITY, PARAM_NAMES, THETA_INIT, sampled_window

def gallery_figure(inputs: torch.Tensor, outputs: torch.Tensor, params: torch.Tensor, markers: torch.Tensor | None = None,
                   title: str = "input (red: the window sampled) | transformed", per_row: int = 4):
    """Pairs of (input with the sampled window drawn in red, transformed image) — the paper's Fig. 4.
    ``markers`` [N, 1, H, W] (optional): marker ink shown in yellow on the input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(inputs)
    pairs = min(n, per_row)
    rows = math.ceil(n / pairs)
    fig, axes = plt.subplots(rows, 2 * pairs, figsize=(2.2 * 2 * pairs, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    windows = sampled_window(params.float())
    h, w = inputs.shape[-2:]
    for i in range(n):
        ax, ax_out = axes[i // pairs, 2 * (i % pairs)], axes[i // pairs, 2 * (i % pairs) + 1]
        ax.imshow(inputs[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        if markers is not None:
            ink = markers[i, 0].numpy()
            ax.imshow(np.dstack([np.ones_like(ink), np.ones_like(ink), np.zeros_like(ink), (ink > 0) * 0.8]))
        x0, y0, x1, y1 = windows[i].tolist()
        ax.add_patch(Rectangle((x0 * w - 0.5, y0 * h - 0.5), (x1 - x0) * w, (y1 - y0) * h, fill=False, color="red", lw=1.5))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title("s=({:.2f},{:.2f}) t=({:.2f},{:.2f})".format(*params[i].tolist()), fontsize=7)
        ax_out.imshow(outputs[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax_out.set_title("transformed", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def params_figure(params: torch.Tensor, label: str = "stn"):
    """Histograms of s_x, s_y, t_x, t_y over the test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8))
    p = params.float().numpy()
    for i, (ax, name) in enumerate(zip(axes, PARAM_NAMES)):
        lo = min(p[:, i].min(), IDENTITY[i], THETA_INIT[i])
        hi = max(p[:, i].max(), IDENTITY[i], THETA_INIT[i])
        pad = 0.05 * (hi - lo) + 1e-3
        ax.hist(p[:, i], bins=np.linspace(lo - pad, hi + pad, 41), color="tab:blue")
        ax.axvline(IDENTITY[i], color="grey", ls="--", lw=1, label="identity")
        ax.axvline(THETA_INIT[i], color="tab:red", ls=":", lw=1, label="init")
        ax.set_title(f"{name}: {p[:, i].mean():.3f} ± {p[:, i].std():.3f}", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{label}: affine parameters over {len(p)} test images", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def figure_array(fig) -> np.ndarray:
    """A matplotlib figure as an RGB uint8 array (closed afterwards)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))
