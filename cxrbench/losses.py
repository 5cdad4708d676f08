"""Every loss of cxrbench, as plain functions (solo-learn's ``losses/``): one home, tested once.

- ``nt_xent``: SimCLR's NT-Xent over 2N views (RGT, SimCLR, CAMContrast stage 2).
- ``supcon``: supervised contrastive loss, SupContrast's form (the mean of log-probabilities over
  positives, outside the log), as CAMContrast's SupCon baseline uses it.
- ``masked_bce`` / ``masked_focal``: multi-label losses where NaN labels are unknown and do not count.
- ``dice_loss``: MONAI's ``DiceLoss`` (sigmoid, pooled over the batch, smooth 1), CAMContrast's form.
- ``minmax`` / ``cam_attention_loss``: CAMContrast stage 1's complementary guided attention loss (Eq. 4)
  on min-max normalised class activation maps, averaged over the batch as Eq. 2 does.
- ``masked_l1``: GMML's reconstruction loss, L1 on the corrupted pixels only.

Under DDP each process holds a slice of the global batch. A loss that contrasts the batch
(``nt_xent``, ``supcon``) first gathers every process's embeddings (``gather``, with gradients), so
that on N processes it is the loss of the whole global batch, with the same negatives as on one
process: each process then computes that same loss, and DDP's gradient average gives the one-process
gradient (tests/test_losses_ddp.py). solo-learn and lightly gather for the same reason. A loss that
averages over a variable number of entries (``masked_bce``, ``masked_focal``: known labels; ``masked_l1``:
corrupted pixels) divides by the global batch's count (``global_mean``), so a process with fewer entries
does not weigh its own more.

NT-Xent and SupCon are written here (a masked cross-entropy each) because the one library that has
them, pytorch-metric-learning, is outside the design card's stack; the tests check both against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def process_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def own_rank_state(saved, what: str):
    """This process's entry of per-process states a checkpoint saved (``{"ranks": [rank 0's, …]}``,
    gathered because only rank 0's checkpoint dictionary is written), or None where it must keep its fresh
    state (warned): a checkpoint of fewer processes, or one process's state seen by a rank > 0, which would
    otherwise repeat rank 0's draws. A single state on rank 0 (one process) is returned as it is."""
    import warnings

    world, rank = world_size(), process_rank()
    if isinstance(saved, dict) and "ranks" in saved:
        ranks = saved["ranks"]
        if len(ranks) != world:
            warnings.warn(f"the checkpoint holds the {what} of {len(ranks)} processes, this run has {world}: process "
                          f"{rank} {'restores its own' if rank < len(ranks) else 'keeps its fresh one'}", stacklevel=3)
        return ranks[rank] if rank < len(ranks) else None
    if rank > 0:
        warnings.warn(f"the checkpoint holds one process's {what}: process {rank} keeps its fresh one rather than "
                      "repeat rank 0's draws", stacklevel=3)
        return None
    return saved


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows of ``x`` in rank order, gradients flowing back to each process's own rows;
    ``x`` itself outside a multi-process run. ``torch.distributed.nn.functional.all_gather``: its backward
    sums the gradient every process's copy of the loss sends to each row, which is what makes DDP's
    average of N identical losses the gradient of one loss over the global batch. Every process must
    hold the same number of rows (DistributedSampler pads to that)."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


def gather_labels(x: torch.Tensor) -> torch.Tensor:
    """``gather`` for tensors without gradients (labels)."""
    if world_size() == 1:
        return x
    import torch.distributed as dist

    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent over 2N views (SimCLR): row i of ``a`` and row i of ``b`` are a positive pair; every
    other row of either view is a negative (RGT §III-C: "the negative samples will be other chest
    X-rays (both image and radiomics views)"); cosine similarity / tau, mean over the 2N anchors.
    Under DDP, N is the global batch (``gather``)."""
    a, b = gather(a), gather(b)
    z = F.normalize(torch.cat([a, b]), dim=-1)
    n = len(a)
    sim = (z @ z.T / tau).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    return F.cross_entropy(sim, torch.arange(2 * n, device=z.device).roll(n))


def nt_xent_floor_with_identical_views(batch: int, identical: int) -> float:
    """A lower bound of NT-Xent over 2 × ``batch`` views when ``identical`` (k) of the pairs share one
    second view (CAMContrast stage 2: every normal image's heatmap is zeroed, §3.2 / Fig. 2, so all normal
    heatmap crops project to one vector). Each of those 2k anchors has at least k views it cannot rank
    above its positive (an image crop: the k copies of its positive; a heatmap crop: its positive and the
    k − 1 copies of itself, at the largest similarity), so its loss is at least log k; every other anchor's
    at least 0: the mean is at least (k / B) · log k. Where each normal image crop coincides with the
    shared view, the loss is (k / B) · log(2k − 1) as τ → 0 (tested). A complete collapse (every view
    one vector) scores log(2B − 1), above both (tests/test_camcontrast.py)."""
    import math

    if not 0 <= identical <= batch or batch < 1:
        raise ValueError(f"identical must be in [0, batch]; got {identical} of {batch}")
    return identical / batch * math.log(identical) if identical > 1 else 0.0


def supcon(views: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) over [N, V, D] embeddings of V views.

    Every other view of an image with the same label is a positive; the anchor itself is left out.
    Per anchor: −mean over positives of log softmax (over all other views) / tau; mean over anchors
    with at least one positive. With distinct labels it is NT-Xent over the V views. Under DDP, N is
    the global batch (``gather``).
    """
    views, labels = gather(views), gather_labels(labels)
    n, v, _ = views.shape
    z = F.normalize(views.reshape(n * v, -1), dim=-1)
    lab = labels.reshape(-1).repeat_interleave(v)
    self_mask = torch.eye(n * v, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / tau).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (lab[:, None] == lab[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    mean_log_pos = log_prob.masked_fill(~pos, 0).sum(1) / n_pos.clamp_min(1)
    has = n_pos > 0
    return -(mean_log_pos[has]).mean() if has.any() else logits.new_zeros(())


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count`` where both are this process's share of a mean over the global batch's entries
    (known labels, masked pixels), whose number differs between processes. On one process the plain
    ratio. On N, ``total · N / (count summed over the processes)``: DDP averages the N processes'
    gradients, so their mean is the gradient of Σ total / Σ count, the one-process loss of the whole
    batch; dividing by the local count instead would weight an entry of a process with few entries more
    (what issue 27 found). The counts carry no gradient; each process's value is its share, their mean the
    global loss (what ``sync_dist`` logs)."""
    n = world_size()
    if n == 1:
        return total / count.clamp_min(1)
    import torch.distributed as dist

    everywhere = count.detach().to(total.dtype).clone()
    dist.all_reduce(everywhere)
    return total * n / everywhere.clamp_min(1)


def masked_bce(logits: torch.Tensor, label: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy over the known labels (NaN = unknown), mean over the global batch's known entries."""
    known = ~torch.isnan(label)
    per = F.binary_cross_entropy_with_logits(logits, label.nan_to_num(0), reduction="none",
                                             pos_weight=None if pos_weight is None else pos_weight.to(logits.dtype))
    return global_mean((per * known).sum(), known.sum())


def masked_focal(logits: torch.Tensor, label: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """torchvision's sigmoid focal loss over the known labels (NaN = unknown), mean over the global batch's
    known entries."""
    known = ~torch.isnan(label)
    per = sigmoid_focal_loss(logits, label.nan_to_num(0), alpha=alpha, gamma=gamma, reduction="none")
    return global_mean((per * known).sum(), known.sum())


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − (2Σpt + s) / (Σp + Σt + s) on sigmoid outputs, pooled over the whole batch (MONAI DiceLoss
    with sigmoid=True, batch=True, smooth_nr = smooth_dr = smooth): CAMContrast's SIIM loss. Under DDP
    the global batch: the three sums are all-reduced (with gradients, as ``gather``: DDP's average of N
    identical losses is then one process's gradient over the whole batch), MONAI's formula by hand
    because MONAI's loss knows no process group."""
    if world_size() == 1:
        from monai.losses import DiceLoss

        return DiceLoss(sigmoid=True, batch=True, smooth_nr=smooth, smooth_dr=smooth)(logits, target.float())
    from torch.distributed.nn.functional import all_reduce

    p, t = logits.sigmoid(), target.float()
    dims = [0, *range(2, p.ndim)]  # batch and space; one Dice per channel, then their mean (MONAI's "mean")
    inter, truth, pred = all_reduce(torch.stack([(p * t).sum(dims), t.sum(dims), p.sum(dims)]))
    return (1.0 - (2.0 * inter + smooth) / (truth + pred + smooth)).mean()


def minmax(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min-max normalise every [H, W] map of ``maps`` [..., H, W] to [0, 1]; ``eps`` in the denominator
    keeps a constant map finite (it becomes all zeros) where the plain formula gives NaN."""
    flat = maps.flatten(-2)
    lo = flat.amin(-1)[..., None, None]
    hi = flat.amax(-1)[..., None, None]
    return (maps - lo) / (hi - lo + eps)


def cam_attention_loss(cams: torch.Tensor, logits: torch.Tensor, label: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """CAMContrast's attention loss (Eq. 4), averaged over the whole batch as Eq. 2 does.

    ``cams`` [B, 2, h, w]: class activation maps of class 0 (normal) and 1 (abnormal); ``logits`` [B, 2];
    ``label`` [B]: 0 normal, 1 abnormal, NaN unknown. Only correctly classified normals count
    (p_normal >= 0.5, i.e. z_0 >= z_1, and label 0): for each, mean_ij(1 - M0 + M1) on the min-max
    normalised maps — M0 pushed to cover the image, M1 to vanish. Every other image adds 0, and the sum is
    divided by B (the batch), not by the number of qualifying images.
    """
    if cams.ndim != 4 or cams.shape[1] != 2:
        raise ValueError(f"cams must be [B, 2, h, w] (normal, abnormal), got {tuple(cams.shape)}")
    m = minmax(cams, eps)
    gate = (logits[:, 0] >= logits[:, 1]) & (label.reshape(-1) == 0)
    per_image = (1 - m[:, 0] + m[:, 1]).mean((-2, -1))
    return (per_image * gate.to(per_image.dtype)).sum() / max(1, len(per_image))


def masked_l1(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between ``recon`` and ``target`` over the pixels where ``mask`` is set, averaged over those
    pixels of the whole (global) batch (GMML: SS-CXR Eq. 1 up to its normalisation; the public code's mean).
    Pixels outside the mask contribute neither value nor gradient."""
    m = mask.to(torch.bool).expand_as(target)
    if world_size() > 1:  # a process may hold no corrupted pixel while the others do
        return global_mean(torch.where(m, (recon - target).abs(), 0.0).sum(), m.sum())  # outside the mask: nothing, NaN included
    if not m.any():
        return recon.sum() * 0.0
    return (recon - target).abs()[m].mean()
