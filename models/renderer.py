"""The IP_LAP renderer (IPLAP_FACTS.md section 7): alignment (``flow_module``) + ``translation``.

The alignment module warps N reference images (and their encoder features) towards the target
sketches; the translation module turns the masked target face, the sketches, the warped
references and the audio into the final 128x128 face. All N references are processed as one
batch; the weighted sum over references is the spec's accumulation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MEL_ENCODER_ROWS, AdaINBlock, SPADEBlock, conv_encoder

N_TARGET_SKETCHES = 5
WEIGHT_EPS = 1e-5


def flow_to_deformation(flow: torch.Tensor) -> torch.Tensor:
    """Flow in pixels (B, 2, H, W) -> sampling grid (B, H, W, 2) in [-1, 1] coordinates (x, y)."""
    _, _, h, w = flow.shape
    x = 2 * (torch.arange(w, device=flow.device, dtype=flow.dtype) / (w - 1)) - 1
    y = 2 * (torch.arange(h, device=flow.device, dtype=flow.dtype) / (h - 1)) - 1
    grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)  # (H, W, 2)
    flow_norm = 2 * torch.cat([flow[:, :1] / (w - 1), flow[:, 1:] / (h - 1)], dim=1)  # (B, 2, H, W)
    return grid + flow_norm.permute(0, 2, 3, 1)


def warp(src: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` of src (B, C, h, w) with the deformation resized to (h, w) when it differs."""
    h, w = src.shape[-2:]
    if deformation.shape[1:3] != (h, w):
        deformation = F.interpolate(
            deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False
        ).permute(0, 2, 3, 1)
    return F.grid_sample(src, deformation, mode="bilinear", padding_mode="zeros", align_corners=False)


def nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="nearest")


class FlowModule(nn.Module):
    """Alignment: predicts a flow and a confidence per reference, and fuses the warped references."""

    def __init__(self, sketch_channels: int = 3 * N_TARGET_SKETCHES, hidden: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(6, 32, 7, 1, 3)
        self.conv1_bn = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 256, 3, 2, 1)
        self.conv2_bn = nn.BatchNorm2d(256)
        self.spade_layer_1 = SPADEBlock(256, sketch_channels, hidden)
        self.spade_layer_2 = SPADEBlock(256, sketch_channels, hidden)
        self.pixel_shuffle_1 = nn.PixelShuffle(2)
        self.spade_layer_4 = SPADEBlock(64, sketch_channels, hidden)
        self.conv_4 = nn.Conv2d(64, 2, 7, 1, 3)
        self.conv_5 = nn.Sequential(
            nn.Conv2d(64, 32, 7, 1, 3), nn.ReLU(), nn.Conv2d(32, 1, 7, 1, 3), nn.Sigmoid()
        )

    def encode_references(self, ref_imgs: torch.Tensor, ref_sketches: torch.Tensor):
        """Reference features, which depend on the references only: (B*N, 32, H, W), (B*N, 256, H/2, W/2)."""
        x = torch.cat([ref_imgs, ref_sketches], dim=1)  # (B*N, 6, H, W)
        h1 = F.relu(self.conv1_bn(self.conv1(x)))  # (B*N, 32, H, W)
        h2 = F.relu(self.conv2_bn(self.conv2(h1)))  # (B*N, 256, H/2, W/2)
        return h1, h2

    def forward(
        self,
        ref_imgs: torch.Tensor,  # (B, N, 3, H, W)
        ref_sketches: torch.Tensor,  # (B, N, 3, H, W)
        target_sketches: torch.Tensor,  # (B, 5, 3, H, W)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _, H, W = ref_imgs.shape
        half = (H // 2, W // 2)
        driving = target_sketches.reshape(B, -1, H, W)  # (B, 15, H, W), sketch-major channels
        driving = driving.repeat_interleave(N, dim=0)  # (B*N, 15, H, W)
        driving_half = nearest(driving, half)  # (B*N, 15, H/2, W/2)

        imgs = ref_imgs.reshape(B * N, 3, H, W)
        h1, h2 = self.encode_references(imgs, ref_sketches.reshape(B * N, 3, H, W))

        s = self.spade_layer_1(h2, driving_half)  # (B*N, 256, H/2, W/2)
        s = self.spade_layer_2(s, driving_half)  # (B*N, 256, H/2, W/2)
        s = self.pixel_shuffle_1(s)  # (B*N, 64, H, W)
        s = self.spade_layer_4(s, driving)  # (B*N, 64, H, W)

        deformation = flow_to_deformation(self.conv_4(s))  # (B*N, H, W, 2)
        weight = self.conv_5(s)  # (B*N, 1, H, W)
        weight_half = nearest(weight, half)  # (B*N, 1, H/2, W/2)

        def fuse(x: torch.Tensor) -> torch.Tensor:  # (B*N, ...) -> sum over the N references
            return x.reshape(B, N, *x.shape[1:]).sum(dim=1)

        denom = fuse(weight) + WEIGHT_EPS  # (B, 1, H, W)
        h1 = fuse(warp(h1, deformation) * weight) / denom  # (B, 32, H, W)
        h2 = fuse(warp(h2, deformation) * weight_half) / nearest(denom, half)  # (B, 256, H/2, W/2)
        ref = fuse(warp(imgs, deformation) * weight) / denom  # (B, 3, H, W)
        return h1, h2, ref


class Translation(nn.Module):
    """Masked face + target sketches + warped references + audio -> generated face."""

    def __init__(self, sketch_channels: int = 3 * N_TARGET_SKETCHES):
        super().__init__()
        self.audio_encoder = conv_encoder(MEL_ENCODER_ROWS, dims=2, act_override="relu")
        self.conv1 = nn.Conv2d(3 + sketch_channels, 32, 7, 1, 3, bias=False)
        self.conv1_bn = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 256, 3, 2, 1, bias=False)
        self.conv2_bn = nn.BatchNorm2d(256)
        self.spade_1 = SPADEBlock(256, 256)
        self.adain_1 = AdaINBlock(256, 512)
        self.pixel_suffle_1 = nn.PixelShuffle(2)  # (sic) no parameters, name kept from the authors
        self.spade_2 = SPADEBlock(64, 32)
        self.adain_2 = AdaINBlock(64, 512)
        self.spade_4 = SPADEBlock(64, 3)
        self.conv_last = nn.Conv2d(64, 3, 7, 1, 3, bias=False)

    @staticmethod
    def mask_lower_half(face: torch.Tensor) -> torch.Tensor:
        h = face.shape[-2]
        return torch.cat([face[..., : h // 2, :], torch.zeros_like(face[..., h // 2 :, :])], dim=-2)

    def forward(
        self,
        face: torch.Tensor,  # (B, 3, H, W) the target frame's face crop
        sketches: torch.Tensor,  # (B, 15, H, W)
        ref: torch.Tensor,  # (B, 3, H, W) fused warped reference
        h1: torch.Tensor,  # (B, 32, H, W)
        h2: torch.Tensor,  # (B, 256, H/2, W/2)
        mel: torch.Tensor,  # (B, 1, 80, 16)
    ) -> torch.Tensor:
        x = torch.cat([self.mask_lower_half(face), sketches], dim=1)  # (B, 18, H, W)
        x = F.relu(self.conv1_bn(self.conv1(x)))  # (B, 32, H, W)
        x = F.relu(self.conv2_bn(self.conv2(x)))  # (B, 256, H/2, W/2)
        a = self.audio_encoder(mel).flatten(1)  # (B, 512)

        x = self.adain_1(self.spade_1(x, h2), a)  # (B, 256, H/2, W/2)
        x = self.pixel_suffle_1(x)  # (B, 64, H, W)
        x = self.adain_2(self.spade_2(x, h1), a)  # (B, 64, H, W)
        x = self.spade_4(x, ref)  # (B, 64, H, W)
        return torch.sigmoid(self.conv_last(F.leaky_relu(x, 0.01)))  # (B, 3, H, W)


class Renderer(nn.Module):
    """``Renderer()`` of the authors, without the perceptual loss network (see models.perceptual)."""

    def __init__(self):
        super().__init__()
        self.flow_module = FlowModule()
        self.translation = Translation()

    def forward(
        self,
        face: torch.Tensor,  # (B, 1, 3, H, W)
        target_sketches: torch.Tensor,  # (B, 5, 3, H, W)
        ref_imgs: torch.Tensor,  # (B, N, 3, H, W)
        ref_sketches: torch.Tensor,  # (B, N, 3, H, W)
        mel: torch.Tensor,  # (B, 1, 1, 80, 16)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, _, H, W = target_sketches.shape
        h1, h2, ref = self.flow_module(ref_imgs, ref_sketches, target_sketches)
        generated = self.translation(
            face.reshape(B, 3, H, W),
            target_sketches.reshape(B, -1, H, W),
            ref,
            h1,
            h2,
            mel.reshape(B, 1, *mel.shape[-2:]),
        )
        return generated, ref  # (B, 3, H, W) each
