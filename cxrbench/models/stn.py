"""Network pieces of the STN paper (001): VGG16 on one channel, the localisation network, the
4-parameter affine sampler, and the thorax-box regressor that stands in for YOLOv5.

The method modules (``cxrbench/methods/stn.py``) put them together; the paper facts and every
deviation are listed there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import vgg as tv_vgg
from torchvision.ops import box_iou, masks_to_boxes

# ------------------------------------------------------------------------------------------ VGG16
VGG16_CFG = tv_vgg.cfgs["D"]  # torchvision's VGG16 layout: 13 convs, 5 max-pools


def _vgg_init(module: nn.Module) -> None:
    """torchvision's VGG initialisation (kaiming fan_out for convs, N(0, 0.01) for linears)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class VGG16(nn.Module):
    """torchvision's ``vgg16(weights=None)`` with one input channel and one logit (STN §III-B1).

    ``width`` (channel multiplier) and ``hidden`` (width of the two hidden FC layers) shrink it for CPU
    tests and smoke runs; at the defaults (1.0, 4096) the network *is* torchvision's ``vgg16`` (same
    modules, same state-dict keys, same initialisation), only its first conv takes 1 channel and its
    last linear gives 1 output. ``batch_norm=True`` is torchvision's ``vgg16_bn`` (not the paper's).
    No pretrained weights: the paper trains from scratch, and none can be
    downloaded here.
    """

    def __init__(self, in_chans: int = 1, num_outputs: int = 1, width: float = 1.0, hidden: int = 4096,
                 dropout: float = 0.5, batch_norm: bool = False):
        super().__init__()
        if width <= 0 or hidden < 1:
            raise ValueError(f"VGG16 needs width > 0 and hidden >= 1, got width={width}, hidden={hidden}")
        self.width, self.hidden = float(width), int(hidden)
        if self.width == 1.0 and self.hidden == 4096:
            make = tv_vgg.vgg16_bn if batch_norm else tv_vgg.vgg16
            net = make(weights=None, num_classes=num_outputs, dropout=dropout)
            self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier
        else:
            cfg = [v if v == "M" else max(1, round(v * width)) for v in VGG16_CFG]
            self.features = tv_vgg.make_layers(cfg, batch_norm=batch_norm)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            c = cfg[-2]
            self.classifier = nn.Sequential(
                nn.Linear(c * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
                nn.Linear(hidden, num_outputs))
            _vgg_init(self)
        first = self.features[0]
        if first.in_channels != in_chans:
            self.features[0] = nn.Conv2d(in_chans, first.out_channels, 3, padding=1)
            _vgg_init(self.features[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ------------------------------------------------------------------------------ localisation net
#: The public code's blocks: (out channels, kernel); each is Conv(no padding) -> MaxPool2 -> ReLU.
LOC_BLOCKS = ((16, 7), (32, 5), (64, 5), (128, 5))
#: (s_x, s_y, t_x, t_y) of the first forward: the full width, the central 10% band of rows (STN §III-B3).
THETA_INIT = (1.0, 0.1, 0.0, 0.0)
#: the affine's parameters, in the order every [B, 4] params tensor holds them, and the identity
PARAM_NAMES = ("s_x", "s_y", "t_x", "t_y")
IDENTITY = (1.0, 1.0, 0.0, 0.0)


def _grid_side(image_size: int) -> int | None:
    side = int(image_size)
    for _, k in LOC_BLOCKS:
        side = side - (k - 1)
        if side < 2:
            return None
        side //= 2
    return side


def min_localisation_size() -> int:
    """The smallest square input the localisation network accepts (78 px)."""
    return next(s for s in range(1, 4096) if _grid_side(s))


def localisation_grid(image_size: int) -> int:
    """Side of the localisation net's last feature map for a square input of ``image_size``.

    Raises ValueError where a block has nothing left to convolve or pool (inputs below 78 px): the
    flatten size of the paper's network does not exist there.
    """
    side = _grid_side(image_size)
    if side is None:
        raise ValueError(
            f"the STN localisation network has no valid flatten size at image_size={image_size}: its four "
            "[conv without padding -> max-pool 2] blocks (kernels 7, 5, 5, 5) shrink the map to nothing. "
            f"Use image_size >= {min_localisation_size()} (the paper: 512 -> flatten 128*28*28 = 100352; "
            "the public code: 256 -> 128*12*12 = 18432)")
    return side


def localisation_flat_size(image_size: int) -> int:
    g = localisation_grid(image_size)
    return LOC_BLOCKS[-1][0] * g * g


class LocalisationNet(nn.Module):
    """4 × [Conv(no padding) → MaxPool2 → ReLU] (1→16 k7, →32 k5, →64 k5, →128 k5), flatten,
    Linear(flat, 32) → ReLU → Linear(32, 4) = (s_x, s_y, t_x, t_y); the last layer starts at zero
    weights with bias ``theta_init``, so the first forward predicts exactly ``theta_init`` for any image.
    ``flat`` is derived from ``image_size`` (an impossible size is refused here, at construction)."""

    def __init__(self, image_size: int, in_chans: int = 1, theta_init=THETA_INIT):
        super().__init__()
        self.image_size = int(image_size)
        self.flat = localisation_flat_size(self.image_size)
        layers, c = [], in_chans
        for out, k in LOC_BLOCKS:
            layers += [nn.Conv2d(c, out, kernel_size=k), nn.MaxPool2d(2, stride=2), nn.ReLU(True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.fc_loc = nn.Sequential(nn.Linear(self.flat, 32), nn.ReLU(True), nn.Linear(32, 4))
        theta_init = tuple(float(v) for v in theta_init)
        if len(theta_init) != 4:
            raise ValueError(f"theta_init is (s_x, s_y, t_x, t_y): 4 numbers, got {theta_init}")
        with torch.no_grad():
            self.fc_loc[2].weight.zero_()
            self.fc_loc[2].bias.copy_(torch.tensor(theta_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 4] = (s_x, s_y, t_x, t_y)."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"the localisation network was built for {self.image_size}x{self.image_size} inputs "
                             f"(flatten size {self.flat}), got {tuple(x.shape[-2:])}")
        return self.fc_loc(torch.flatten(self.features(x), 1))


# -------------------------------------------------------------------------------- affine sampler
def theta_matrix(params: torch.Tensor) -> torch.Tensor:
    """(s_x, s_y, t_x, t_y) [B, 4] -> θ = [[s_x, 0, t_x], [0, s_y, t_y]] [B, 2, 3]: four free
    parameters, no rotation and no shear (the off-diagonal entries are constant zeros)."""
    sx, sy, tx, ty = params.unbind(-1)
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, tx], -1), torch.stack([zero, sy, ty], -1)], -2)


def affine_sample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``affine_grid`` + ``grid_sample`` (bilinear, zeros outside, align_corners=False): output pixel at
    normalised (x, y) ∈ [-1, 1]² reads the input at (s_x·x + t_x, s_y·y + t_y)."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def sampled_window(params: torch.Tensor) -> torch.Tensor:
    """The input window an affine (s_x, s_y, t_x, t_y) samples, as [B, 4] XYXY in image fractions
    (0 = left/top edge, 1 = right/bottom edge), before clipping to the image."""
    sx, sy, tx, ty = params.unbind(-1)
    x0, x1 = (tx - sx.abs() + 1) / 2, (tx + sx.abs() + 1) / 2
    y0, y1 = (ty - sy.abs() + 1) / 2, (ty + sy.abs() + 1) / 2
    return torch.stack([x0, y0, x1, y1], -1)


def square_crop_params(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Affine (s_x, s_y, t_x, t_y) of the thorax crop: a square of the box's longer side (in pixels)
    centred on the box (STN §III-B2), for XYXY boxes in image fractions; resized back to the input."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    side = torch.maximum((x1 - x0) * width, (y1 - y0) * height)
    return torch.stack([side / width, side / height, x0 + x1 - 1, y0 + y1 - 1], -1)


# ------------------------------------------------------------------------------ thorax regressor
class ThoraxBoxNet(nn.Module):
    """A small CNN (timm ``backbone``, from scratch) → GAP → Linear(C, 5): the box of both lungs as
    (c_x, c_y, w, h) in image fractions (sigmoid) and a confidence logit trained to predict the IoU
    of its own box (YOLOv5's objectness target)."""

    def __init__(self, backbone: str = "resnet10t", in_chans: int = 1):
        super().__init__()
        from .encoders import TimmCNN

        self.spec = {"backbone": backbone, "in_chans": in_chans}
        self.backbone = TimmCNN(backbone, in_chans=in_chans)
        self.head = nn.Linear(self.backbone.out_dim, 5)

    @torch.no_grad()
    def set_anchor(self, box: torch.Tensor, confidence: float = 0.5) -> None:
        """Start from ``box`` (XYXY image fractions; e.g. the mean training box), like a detector's
        anchor: zero head weights, biases = the box's (c_x, c_y, w, h) logits, so the first forward
        predicts it for every image and training learns the offsets."""
        x0, y0, x1, y1 = box.float().clamp(1e-3, 1 - 1e-3).tolist()
        cwh = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]).clamp(1e-3, 1 - 1e-3)
        self.head.weight.mul_(0.01)
        self.head.bias[:4] = torch.logit(cwh)
        self.head.bias[4] = float(torch.logit(torch.tensor(confidence)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes [B, 4] XYXY in image fractions, confidence logits [B])."""
        out = self.head(self.backbone(x))
        c, wh = out[:, :2].sigmoid(), out[:, 2:4].sigmoid()
        boxes = torch.cat([c - wh / 2, c + wh / 2], -1)
        return boxes, out[:, 4]


def mask_boxes(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box of the non-zero pixels of each mask [B, 1, H, W] as XYXY image fractions (pixel edges: a
    full mask is (0, 0, 1, 1)), and whether the mask has any pixel (an empty mask gets the whole image)."""
    m = mask[:, 0] > 0
    h, w = m.shape[-2:]
    ok = m.flatten(1).any(1)
    boxes = torch.tensor([0.0, 0.0, 1.0, 1.0], device=m.device).repeat(len(m), 1)
    if ok.any():
        b = masks_to_boxes(m[ok]) + torch.tensor([0.0, 0.0, 1.0, 1.0], device=m.device)  # last pixel -> its far edge
        boxes[ok] = b / torch.tensor([w, h, w, h], device=m.device, dtype=b.dtype)
    return boxes, ok


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[i] with b[i] (torchvision's box_iou, diagonal)."""
    if len(a) == 0:
        return torch.zeros(0, device=a.device)
    return box_iou(a, b).diagonal()
