"""Batch preparation on the device: normalise uint8 faces and augment whole batches with tensor ops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fer_sweep.config import TrainConfig

ERASE_AREA = (0.02, 0.33)  # random erasing: erased fraction of the image (torchvision's default)
ERASE_RATIO = (0.3, 3.3)  # random erasing: rectangle aspect-ratio range, sampled log-uniformly
Norm = tuple[float, float]  # (mean, std) in 0..255 pixel units


def normalize_batch(x_u8: torch.Tensor, norm: Norm) -> torch.Tensor:
    """(B, 48, 48) uint8 -> (B, 1, 48, 48) float32, (x - mean) / std."""
    mean, std = norm
    return x_u8.unsqueeze(1).float().sub_(mean).mul_(1.0 / std)


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def flip_batch(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p (one per-sample mask, no Python loop)."""
    mask = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def affine_batch(x: torch.Tensor, translate_px: float, rotate_deg: float, scale: float) -> torch.Tensor:
    """Random shift (up to +-px), rotation (+-deg) and zoom ([1-s, 1+s]) in one grid_sample call."""
    n, device = x.shape[0], x.device
    angle = _uniform(n, -rotate_deg, rotate_deg, device) * (math.pi / 180)
    zoom = _uniform(n, 1 - scale, 1 + scale, device)
    shift = _uniform(2 * n, -translate_px, translate_px, device).view(n, 2) * (2 / x.shape[-1])
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # zoom > 1 samples a smaller area
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def erase_batch(x: torch.Tensor, p: float) -> torch.Tensor:
    """Random erasing: with probability p per image, set one random rectangle to 0 (after
    normalisation: black for unit, mid-grey for sym, the train mean for standard)."""
    n, (h, w), device = x.shape[0], x.shape[-2:], x.device
    area = _uniform(n, *ERASE_AREA, device) * (h * w)
    ratio = torch.exp(_uniform(n, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), device))
    eh = torch.sqrt(area * ratio).round().clamp(1, h)
    ew = torch.sqrt(area / ratio).round().clamp(1, w)
    top = (torch.rand(n, device=device) * (h - eh + 1)).floor()
    left = (torch.rand(n, device=device) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
    inside &= (torch.rand(n, device=device) < p).view(-1, 1, 1)
    return x.masked_fill(inside.unsqueeze(1), 0.0)


def random_crop_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A random size x size window of each image of a (B, C, H, W) batch (its own offset per image, uniform over
    every position inside the image; one gather, no Python loop)."""
    n, (h, w), device = x.shape[0], x.shape[-2:], x.device
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the {h}x{w} images")
    top = torch.randint(0, h - size + 1, (n, 1, 1), device=device)
    left = torch.randint(0, w - size + 1, (n, 1, 1), device=device)
    offsets = torch.arange(size, device=device)
    rows, cols = (top + offsets.view(1, -1, 1)), (left + offsets.view(1, 1, -1))  # (B, size, 1), (B, 1, size)
    flat = x.reshape(n, x.shape[1], h * w)
    index = (rows * w + cols).reshape(n, 1, size * size).expand(n, x.shape[1], size * size)
    return flat.gather(2, index).view(n, x.shape[1], size, size)


def crop_at(x: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    return x[..., top:top + size, left:left + size]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centred size x size window (the rounding puts an odd margin's extra pixel at the bottom/right)."""
    h, w = x.shape[-2:]
    return crop_at(x, (h - size) // 2, (w - size) // 2, size)


def ten_crops(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The ten views of ten-crop testing (Krizhevsky et al.; torchvision's TenCrop): the four corner windows and
    the centre one, each also mirrored left-right."""
    h, w = x.shape[-2:]
    five = [crop_at(x, 0, 0, size), crop_at(x, 0, w - size, size), crop_at(x, h - size, 0, size),
            crop_at(x, h - size, w - size, size), center_crop(x, size)]
    return five + [v.flip(3) for v in five]


def augment_batch(x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Apply the augmentations `cfg` turns on to a normalised (B, 1, 48, 48) float batch: flip, shift / rotation /
    zoom, the random crop (then the batch is (B, 1, crop, crop)), erasing."""
    if cfg.aug_flip:
        x = flip_batch(x)
    if cfg.aug_translate_px > 0 or cfg.aug_rotate_deg > 0 or cfg.aug_scale > 0:
        x = affine_batch(x, cfg.aug_translate_px, cfg.aug_rotate_deg, cfg.aug_scale)
    if cfg.crop > 0:
        x = random_crop_batch(x, cfg.crop)
    if cfg.aug_erase_p > 0:
        x = erase_batch(x, cfg.aug_erase_p)
    return x


def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,) int labels -> (B, C) float32 target distributions (label smoothing is applied by the loss)."""
    return F.one_hot(y, num_classes).float()


def mix_batch(x: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix on a whole batch (timm's "batch" mode): one weight per batch, partner = a permutation.

    With probability `cfg.mix_prob` the batch is mixed; when both alphas are set, mixup or cutmix is picked
    50/50. The random draws that decide shapes (mix or not, lambda, the box) come from the CPU generator, so
    a CUDA step never waits on the GPU to learn them; the permutation is drawn on the batch's device.
    Returns (images, target distributions); unmixed batches come back as they were.
    """
    alphas = [a for a in (cfg.mixup_alpha, cfg.cutmix_alpha) if a > 0]
    if not alphas or float(torch.rand(())) >= cfg.mix_prob:
        return x, target
    use_cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha <= 0 or float(torch.rand(())) < 0.5)
    alpha = cfg.cutmix_alpha if use_cutmix else cfg.mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    if not use_cutmix:
        return x * lam + x[perm] * (1 - lam), target * lam + target[perm] * (1 - lam)
    top, left, h, w = cutmix_box(x.shape[-2], x.shape[-1], lam)
    mixed = x.clone()
    mixed[..., top:top + h, left:left + w] = x[perm][..., top:top + h, left:left + w]
    kept = 1 - (h * w) / (x.shape[-2] * x.shape[-1])  # the box is clipped at the border: weight by true area
    return mixed, target * kept + target[perm] * (1 - kept)


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a box covering ~(1 - lam) of the image, centred uniformly, clipped to the image."""
    cut = math.sqrt(1 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(cy - ch // 2, 0), min(cy + ch - ch // 2, height)
    left, right = max(cx - cw // 2, 0), min(cx + cw - cw // 2, width)
    return top, left, bottom - top, right - left


def shift_batch(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Shift a (B, C, H, W) batch by whole pixels (right/down positive), repeating the border pixels."""
    if dx == 0 and dy == 0:
        return x
    p = max(abs(dx), abs(dy))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def tta_views(x: torch.Tensor, flip: bool, shift_px: int):
    """The views test-time augmentation averages: x (and its mirror with flip), each also shifted by
    +-shift_px along each axis when shift_px > 0 (1, 2, 5 or 10 views)."""
    shifts = [(0, 0)] + ([(shift_px, 0), (-shift_px, 0), (0, shift_px), (0, -shift_px)] if shift_px > 0 else [])
    for base in ([x, x.flip(3)] if flip else [x]):
        for dx, dy in shifts:
            yield shift_batch(base, dx, dy)


def eval_views(x: torch.Tensor, mode: str, size: int, shift_px: int = 0) -> list[torch.Tensor]:
    """What evaluation feeds a model that takes size x size input, for a normalised (B, 1, H, W) batch and a
    `config.tta_mode`: none -> the (centre) crop; flip -> it and its mirror (with shift_px, the shifted copies
    too); tencrop -> `ten_crops`. A model of the whole face (size = H) gets the face itself."""
    if mode == "tencrop":
        return ten_crops(x, size)
    base = x if size == x.shape[-1] and size == x.shape[-2] else center_crop(x, size)
    return list(tta_views(base, mode == "flip", shift_px if mode == "flip" else 0))
