"""Building blocks shared by the IP_LAP networks (IPLAP_FACTS.md sections 6 and 7).

Attribute names are part of the checkpoint format: they must produce the tensor names of
the published state dicts (``conv_block.0``, ``spade_layer_1.gamma``, ``mlp_shared.0``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ConvSpec:
    """One row of an encoder table: ``cin, cout, k, stride, pad[, res][, tanh]``."""

    cin: int
    cout: int
    kernel: int
    stride: int | tuple[int, int]
    padding: int
    residual: bool = False
    act: str = "relu"  # "relu" | "tanh"


def conv_specs(rows: list[tuple]) -> list[ConvSpec]:
    """Rows as in the spec, with trailing flags ``"res"`` / ``"tanh"`` after the five numbers."""
    out = []
    for row in rows:
        nums, flags = row[:5], set(row[5:])
        out.append(ConvSpec(*nums, residual="res" in flags, act="tanh" if "tanh" in flags else "relu"))
    return out


class ConvBlock(nn.Module):
    """Conv -> BatchNorm -> (+ input) -> activation. Checkpoint names: ``conv_block.{0,1}``."""

    def __init__(self, spec: ConvSpec, dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.conv_block = nn.Sequential(
            conv(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding), bn(spec.cout)
        )
        self.residual = spec.residual
        self.act = nn.Tanh() if spec.act == "tanh" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def conv_encoder(rows: list[tuple], dims: int, act_override: str | None = None) -> nn.Sequential:
    specs = conv_specs(rows)
    if act_override is not None:
        specs = [
            ConvSpec(s.cin, s.cout, s.kernel, s.stride, s.padding, s.residual, act_override) for s in specs
        ]
    return nn.Sequential(*(ConvBlock(s, dims) for s in specs))


# The 2-D mel encoder (80x16 -> 512x1x1), shared by the landmark transformer and the renderer.
MEL_ENCODER_ROWS: list[tuple] = [
    (1, 32, 3, 1, 1),
    (32, 32, 3, 1, 1, "res"),
    (32, 32, 3, 1, 1, "res"),
    (32, 64, 3, (3, 1), 1),
    (64, 64, 3, 1, 1, "res"),
    (64, 64, 3, 1, 1, "res"),
    (64, 128, 3, 3, 1),
    (128, 128, 3, 1, 1, "res"),
    (128, 128, 3, 1, 1, "res"),
    (128, 256, 3, (3, 2), 1),
    (256, 256, 3, 1, 1, "res"),
    (256, 512, 3, 1, 0),
    (512, 512, 1, 1, 0, "tanh"),
]


class SPADELayer(nn.Module):
    """``n = IN(x); c = conv1(m); n + n * gamma(c) + beta(c)``."""

    def __init__(self, channels: int, mod_channels: int, hidden: int = 256):
        super().__init__()
        self.instance_norm = nn.InstanceNorm2d(channels)  # no affine, eps 1e-5
        self.conv1 = nn.Conv2d(mod_channels, hidden, 3, 1, 1)
        self.gamma = nn.Conv2d(hidden, channels, 3, 1, 1)
        self.beta = nn.Conv2d(hidden, channels, 3, 1, 1)

    def modulation(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) for a modulation map; depends on ``m`` only (shareable across inputs)."""
        c = self.conv1(m)
        return self.gamma(c), self.beta(c)

    def apply_modulation(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        n = self.instance_norm(x)
        return n + n * gamma + beta

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(m)
        return self.apply_modulation(x, gamma, beta)


class SPADEBlock(nn.Module):
    """``L1(x, m); lrelu(0.2); conv_1; L2(x, m); lrelu(0.2); conv_2`` (no residual)."""

    def __init__(self, channels: int, mod_channels: int, hidden: int = 256):
        super().__init__()
        self.conv_1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.spade_layer_1 = SPADELayer(channels, mod_channels, hidden)
        self.spade_layer_2 = SPADELayer(channels, mod_channels, hidden)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(F.leaky_relu(self.spade_layer_1(x, m), 0.2))
        return self.conv_2(F.leaky_relu(self.spade_layer_2(x, m), 0.2))


class AdaINLayer(nn.Module):
    """``IN(x) * (1 + mlp_gamma(h)) + mlp_beta(h)`` with ``h = ReLU(mlp_shared(a))``."""

    def __init__(self, channels: int, mod_features: int, hidden: int = 128):
        super().__init__()
        self.instance_norm = nn.InstanceNorm2d(channels)
        self.mlp_shared = nn.Sequential(nn.Linear(mod_features, hidden), nn.ReLU())
        self.mlp_gamma = nn.Linear(hidden, channels)
        self.mlp_beta = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W); a: (B, mod_features)
        h = self.mlp_shared(a.reshape(a.shape[0], -1))
        gamma = self.mlp_gamma(h)[:, :, None, None]
        beta = self.mlp_beta(h)[:, :, None, None]
        return self.instance_norm(x) * (1 + gamma) + beta


class AdaINBlock(nn.Module):
    """Same shape as :class:`SPADEBlock`, with AdaIN layers driven by an audio vector."""

    def __init__(self, channels: int, mod_features: int):
        super().__init__()
        self.conv_1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.adain_layer_1 = AdaINLayer(channels, mod_features)
        self.adain_layer_2 = AdaINLayer(channels, mod_features)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(F.leaky_relu(self.adain_layer_1(x, a), 0.2))
        return self.conv_2(F.leaky_relu(self.adain_layer_2(x, a), 0.2))
