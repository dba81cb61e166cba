"""pix2pixHD multiscale PatchGAN discriminator, as IP_LAP's renderer training uses it
(IPLAP_FACTS.md section 9; the authors' ``models/pix2pixHD_disc.py``, ``define_D(input_nc=3, ndf=64,
n_layers_D=3, norm='instance', use_sigmoid=False, num_D=2, getIntermFeat=True)``).

What is matched:

* one ``NLayerDiscriminator`` per scale: conv 4x4 stride 2 pad 2 -> LeakyReLU(0.2); ``n_layers - 1``
  times conv 4x4 stride 2 pad 2 (channels doubling, at most 512) -> norm -> LeakyReLU(0.2); conv 4x4
  stride 1 pad 2 -> norm -> LeakyReLU(0.2); conv 4x4 stride 1 pad 2 to one channel (no sigmoid);
* ``norm='instance'`` is ``InstanceNorm2d(affine=False)`` (no parameters, no running statistics);
* with intermediate features every stage is its own ``nn.Sequential`` named
  ``scale<i>_layer<j>``, so the state-dict names are pix2pixHD's; without them one ``layer<i>``;
* the full-resolution input goes to the *last* scale's network (``scale<num_D-1>``), and each further
  scale sees the input downsampled by ``AvgPool2d(3, stride=2, padding=1, count_include_pad=False)``;
* the output is a list (one entry per scale, full resolution first) of lists of feature maps (the
  ``n_layers + 2`` stage outputs; the last is the patch map the LSGAN loss reads);
* weights: conv weights ~ N(0, 0.02) (``weights_init``); conv biases keep PyTorch's default init.

The authors never saved the discriminator; mouthpiece saves it next to the renderer checkpoint
(``disc_step*.pth``) so that a run can resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DiscriminatorConfig:
    input_nc: int = 3
    ndf: int = 64
    n_layers: int = 3
    num_D: int = 2
    norm: str = "instance"  # "instance" (IP_LAP) | "batch"
    use_sigmoid: bool = False
    get_interm_feat: bool = True


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    raise ValueError(f"unknown discriminator norm {kind!r}; expected 'instance' or 'batch'")


def _stages(cfg: DiscriminatorConfig) -> list[list[nn.Module]]:
    """The ``n_layers + 2`` stages (``+ 1`` with a sigmoid) of one PatchGAN discriminator."""
    kw, padw = 4, int(math.ceil((4 - 1.0) / 2))  # 4, 2
    stages = [[nn.Conv2d(cfg.input_nc, cfg.ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]]
    nf = cfg.ndf
    for _ in range(1, cfg.n_layers):
        nf_prev, nf = nf, min(nf * 2, 512)
        stages.append(
            [
                nn.Conv2d(nf_prev, nf, kw, stride=2, padding=padw),
                _norm_layer(cfg.norm, nf),
                nn.LeakyReLU(0.2, True),
            ]
        )
    nf_prev, nf = nf, min(nf * 2, 512)
    stages.append(
        [
            nn.Conv2d(nf_prev, nf, kw, stride=1, padding=padw),
            _norm_layer(cfg.norm, nf),
            nn.LeakyReLU(0.2, True),
        ]
    )
    stages.append([nn.Conv2d(nf, 1, kw, stride=1, padding=padw)])
    if cfg.use_sigmoid:
        stages.append([nn.Sigmoid()])
    return stages


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """pix2pixHD ``weights_init``: conv weights N(0, 0.02); BatchNorm weights N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.normal_(1.0, 0.02, generator=generator)
                m.bias.zero_()


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGAN discriminators on the input at successively halved resolutions."""

    def __init__(self, cfg: DiscriminatorConfig | None = None):
        super().__init__()
        cfg = cfg or DiscriminatorConfig()
        self.cfg = cfg
        self.num_D = cfg.num_D
        self.n_stages = cfg.n_layers + 2 + int(cfg.use_sigmoid)
        for i in range(cfg.num_D):
            stages = _stages(cfg)
            if cfg.get_interm_feat:
                for j, stage in enumerate(stages):
                    setattr(self, f"scale{i}_layer{j}", nn.Sequential(*stage))
            else:
                setattr(self, f"layer{i}", nn.Sequential(*[m for s in stages for m in s]))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)
        init_weights(self)

    def scale_stages(self, scale: int) -> list[nn.Module]:
        if self.cfg.get_interm_feat:
            return [getattr(self, f"scale{scale}_layer{j}") for j in range(self.n_stages)]
        return [getattr(self, f"layer{scale}")]

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        # x: (B, C, H, W). For C=3, H=W=128, ndf=64, n_layers=3, the full-resolution scale gives
        # (B,64,65,65) (B,128,33,33) (B,256,17,17) (B,512,18,18) (B,1,19,19); the half-resolution
        # scale sees (B,3,64,64) and gives (B,64,33,33) (B,128,17,17) (B,256,9,9) (B,512,10,10)
        # (B,1,11,11). Without intermediate features each scale's list holds the patch map only.
        result = []
        for i in range(self.num_D):
            feats, h = [], x
            for stage in self.scale_stages(self.num_D - 1 - i):
                h = stage(h)
                feats.append(h)
            result.append(feats)
            if i != self.num_D - 1:
                x = self.downsample(x)  # (B, C, ceil(H/2), ceil(W/2))
        return result
