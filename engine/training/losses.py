"""Training losses of IP_LAP (IPLAP_FACTS.md section 9): the landmark stage's L1 + velocity, the
renderer's perceptual/style terms, LSGAN, discriminator and feature-matching losses and their
weighted sum, each equal to the authors' (docs/training_data.md, "Training").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.perceptual import PerceptualLoss, gram


def velocity_loss(pred: torch.Tensor, gt: torch.Tensor, T: int) -> torch.Tensor:
    """Mean Euclidean distance between predicted and true frame-to-frame landmark differences.

    pred, gt: (B*T, 2, n) with frames of one window consecutive (the model's output layout).
    """
    n = pred.shape[-1]
    p = pred.reshape(-1, T, 2, n).transpose(2, 3).reshape(-1, T, 2 * n)  # (B, T, 2n): x0 y0 x1 y1 ...
    g = gt.reshape(-1, T, 2, n).transpose(2, 3).reshape(-1, T, 2 * n)
    dp = (p[:, 1:] - p[:, :-1]).reshape(-1, 2 * n)  # (B*(T-1), 2n)
    dg = (g[:, 1:] - g[:, :-1]).reshape(-1, 2 * n)
    return F.pairwise_distance(dp, dg).mean()


def landmark_losses(pred: torch.Tensor, gt: torch.Tensor, T: int) -> dict[str, torch.Tensor]:
    """``{"l1", "velocity", "loss"}`` with ``loss = l1 + velocity`` (pred, gt: (B*T, 2, 57))."""
    l1 = F.l1_loss(pred, gt)
    vel = velocity_loss(pred, gt, T)
    return {"l1": l1, "velocity": vel, "loss": l1 + vel}


def lsgan_loss(outputs: list[list[torch.Tensor]], target_is_real: bool) -> torch.Tensor:
    """pix2pixHD LSGAN: sum over scales of ``mean((D_i[-1] - label)^2)``, label 1.0 real / 0.0 fake."""
    loss = outputs[0][-1].new_zeros((), dtype=torch.float32)
    for scale in outputs:
        pred = scale[-1].float()
        loss = loss + F.mse_loss(pred, torch.full_like(pred, 1.0 if target_is_real else 0.0))
    return loss


def discriminator_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """``0.5 * (LSGAN(D(fake.detach()), False) + LSGAN(D(real), True))``."""
    return 0.5 * (lsgan_loss(fake, False) + lsgan_loss(real, True))


def feature_matching_loss(
    fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]], n_layers: int = 3
) -> torch.Tensor:
    """Sum over scales and intermediate features (the last output excluded) of
    ``1/num_D * 4/(n_layers+1) * L1(fake, real.detach())`` (without the outer factor 2.5)."""
    num_d = len(fake)
    feat_w, d_w = 4.0 / (n_layers + 1), 1.0 / num_d
    loss = fake[0][0].new_zeros((), dtype=torch.float32)
    for f_scale, r_scale in zip(fake, real, strict=True):
        for f, r in zip(f_scale[:-1], r_scale[:-1], strict=True):
            loss = loss + d_w * feat_w * F.l1_loss(f.float(), r.detach().float())
    return loss


def perceptual_terms(
    net: PerceptualLoss, inputs: list[torch.Tensor], target: torch.Tensor, style: list[bool] | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(perceptual, style)`` of each input image against one target, as :class:`PerceptualLoss`
    computes them (L1 of VGG19 relu1_1..relu5_1 features over ``net.num_scales`` scales, Gram L1 at
    the first scale), with the target's features computed once. ``style[k]`` False skips the Gram
    matrices of input k (its style term is then 0). Images (B, 3, H, W) in [0, 1]."""
    style = style if style is not None else [True] * len(inputs)
    norm = [((x + 1) / 2 - net.mean) / net.std for x in inputs]
    tgt = ((target + 1) / 2 - net.mean) / net.std
    perc = [tgt.new_zeros((), dtype=torch.float32) for _ in inputs]
    sty = [tgt.new_zeros((), dtype=torch.float32) for _ in inputs]
    kw = dict(mode="bilinear", scale_factor=0.5, align_corners=False, recompute_scale_factor=True)
    for scale in range(net.num_scales):
        with torch.no_grad():
            t_feats = [f.detach() for f in net.features(tgt)]
            t_grams = [gram(f.float()) for f in t_feats] if scale == 0 and any(style) else None
        for k, x in enumerate(norm):
            for li, (fi, ft) in enumerate(zip(net.features(x), t_feats, strict=True)):
                perc[k] = perc[k] + F.l1_loss(fi.float(), ft.float())
                if style[k] and scale == 0:
                    sty[k] = sty[k] + F.l1_loss(gram(fi.float()), t_grams[li])
        if scale != net.num_scales - 1:
            norm = [F.interpolate(x, **kw) for x in norm]
            tgt = F.interpolate(tgt, **kw)
    return list(zip(perc, sty, strict=True))


@dataclass(frozen=True)
class RendererLossWeights:
    """``2.5*warp + 4*(perceptual + 250*style) + 0.25*gan + 2.5*feature_matching`` (spec section 9)."""

    warp: float = 2.5
    perceptual: float = 4.0
    style: float = 250.0
    gan: float = 0.25  # the authors' 0.1 * 2.5
    feature_matching: float = 2.5


def renderer_generator_loss(
    terms: dict[str, torch.Tensor], weights: RendererLossWeights, warmup: bool
) -> torch.Tensor:
    """The renderer's total loss from ``terms`` (``warp``, ``perceptual``, ``style`` and, after
    warm-up, ``gan`` and ``feature_matching``); during warm-up only ``weights.warp * warp``."""
    loss = weights.warp * terms["warp"]
    if warmup:
        return loss
    return (
        loss
        + weights.perceptual * (terms["perceptual"] + weights.style * terms["style"])
        + weights.gan * terms["gan"]
        + weights.feature_matching * terms["feature_matching"]
    )
