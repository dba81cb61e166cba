"""The IP_LAP landmark transformer (IPLAP_FACTS.md section 6).

Audio windows (T mel chunks), the pose landmarks of the T frames and Nl reference landmark sets
go in; the content landmarks (17 jaw + 40 lip points) of the T frames come out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .layers import MEL_ENCODER_ROWS, conv_encoder

REF_ENCODER_ROWS: list[tuple] = [
    (2, 4, 3, 1, 1),
    (4, 8, 3, 2, 1),
    *[(8, 8, 3, 1, 1, "res")] * 2,
    (8, 16, 3, 2, 1),
    *[(16, 16, 3, 1, 1, "res")] * 2,
    (16, 32, 3, 2, 1),
    *[(32, 32, 3, 1, 1, "res")] * 2,
    (32, 64, 3, 2, 1),
    *[(64, 64, 3, 1, 1, "res")] * 2,
    (64, 128, 3, 2, 1),
    *[(128, 128, 3, 1, 1, "res")] * 2,
    (128, 256, 3, 2, 1),
    (256, 256, 3, 1, 1, "res"),
    (256, 512, 3, 1, 0),
    (512, 512, 1, 1, 0, "tanh"),
]

POSE_ENCODER_ROWS: list[tuple] = [
    (2, 4, 3, 1, 1),
    (4, 8, 3, 1, 1),
    *[(8, 8, 3, 1, 1, "res")] * 2,
    (8, 16, 3, 2, 1),
    *[(16, 16, 3, 1, 1, "res")] * 2,
    (16, 32, 3, 2, 1),
    *[(32, 32, 3, 1, 1, "res")] * 2,
    (32, 64, 3, 2, 1),
    *[(64, 64, 3, 1, 1, "res")] * 2,
    (64, 128, 3, 2, 1),
    *[(128, 128, 3, 1, 1, "res")] * 2,
    (128, 256, 3, 2, 1),
    *[(256, 256, 3, 1, 1, "res")] * 2,
    (256, 512, 3, 1, 0),
    (512, 512, 1, 1, 0, "res", "tanh"),
]

# Modality ids of the fusion transformer's token types (0 is padding).
POSE_ID, AUDIO_ID, REFERENCE_ID = 1, 2, 3


@dataclass(frozen=True)
class LandmarkGeneratorConfig:
    T: int = 5
    d_model: int = 512
    nlayers: int = 4
    nhead: int = 4
    dim_feedforward: int = 1024
    dropout: float = 0.1
    n_ref: int = 15  # Nl
    n_jaw: int = 17
    n_lip: int = 40
    max_len: int = 512  # rows of the positional tables


def sinusoid_table(rows: int, dim: int) -> torch.Tensor:
    """(1, rows, dim): sin on even, cos on odd columns, ``div = exp(-(2i) ln(10000)/dim)``."""
    position = torch.arange(rows, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    pe = torch.zeros(rows, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe[None]


class PositionalTable(nn.Module):
    """Holds the fixed table as the checkpoint's ``pe`` buffer."""

    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(rows, dim))

    def forward(self, length: int) -> torch.Tensor:
        return self.pe[:, :length]  # (1, length, dim)


class FusionTransformer(nn.Module):
    def __init__(self, cfg: LandmarkGeneratorConfig):
        super().__init__()
        self.position_v = PositionalTable(cfg.max_len, cfg.d_model)
        self.position_a = PositionalTable(cfg.max_len, cfg.d_model)
        self.modality = nn.Embedding(4, cfg.d_model, padding_idx=0)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout, batch_first=True
        )  # post-norm, ReLU: the PyTorch defaults the checkpoints were trained with
        self.transformer_encoder = nn.TransformerEncoder(layer, cfg.nlayers, enable_nested_tensor=False)

    def forward(self, ref: torch.Tensor, audio: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        # ref: (B, Nl, D); audio, pose: (B, T, D)
        T = audio.shape[1]
        w = self.modality.weight  # (4, D); row i is the embedding of modality id i
        ref_tokens = ref + w[REFERENCE_ID]
        audio_tokens = audio + self.position_a(T) + w[AUDIO_ID]
        pose_tokens = pose + self.position_v(T) + w[POSE_ID]
        tokens = torch.cat([ref_tokens, audio_tokens, pose_tokens], dim=1)  # (B, Nl+2T, D)
        return self.transformer_encoder(self.dropout(tokens))  # (B, Nl+2T, D)


class LandmarkGenerator(nn.Module):
    """``Landmark_generator(T=5, d_model=512, nlayers=4, nhead=4, dim_feedforward=1024)``."""

    def __init__(self, cfg: LandmarkGeneratorConfig | None = None):
        super().__init__()
        cfg = cfg or LandmarkGeneratorConfig()
        self.cfg = cfg
        self.mel_encoder = conv_encoder(MEL_ENCODER_ROWS, dims=2)
        self.ref_encoder = conv_encoder(REF_ENCODER_ROWS, dims=1)
        self.pose_encoder = conv_encoder(POSE_ENCODER_ROWS, dims=1)
        self.fusion_transformer = FusionTransformer(cfg)
        self.mouse_keypoint_map = nn.Linear(cfg.d_model, cfg.n_lip * 2)  # name kept from the checkpoints
        self.jaw_keypoint_map = nn.Linear(cfg.d_model, cfg.n_jaw * 2)
        self.Norm = nn.LayerNorm(cfg.d_model)

    def forward(
        self,
        mels: torch.Tensor,  # (B, T, 1, 80, 16)
        pose: torch.Tensor,  # (B, T, 2, 74)
        ref_pose: torch.Tensor,  # (B, Nl, 2, 74)
        ref_content: torch.Tensor,  # (B, Nl, 2, 57)
    ) -> torch.Tensor:
        B, T, Nl = mels.shape[0], mels.shape[1], ref_content.shape[1]
        ref = torch.cat([ref_pose, ref_content], dim=3)  # (B, Nl, 2, 131)

        a = self.mel_encoder(mels.reshape(B * T, *mels.shape[2:]))  # (B*T, 512, 1, 1)
        p = self.pose_encoder(pose.reshape(B * T, *pose.shape[2:]))  # (B*T, 512, 1)
        r = self.ref_encoder(ref.reshape(B * Nl, *ref.shape[2:]))  # (B*Nl, 512, 1)
        a = self.Norm(a.reshape(B, T, -1))  # (B, T, 512)
        p = self.Norm(p.reshape(B, T, -1))  # (B, T, 512)
        r = self.Norm(r.reshape(B, Nl, -1))  # (B, Nl, 512)

        out = self.fusion_transformer(r, a, p)  # (B, Nl+2T, 512)
        lip = self.mouse_keypoint_map(out[:, Nl : Nl + T])  # (B, T, 80)
        jaw = self.jaw_keypoint_map(out[:, Nl + T :])  # (B, T, 34)
        content = torch.cat([jaw, lip], dim=2).reshape(B * T, -1, 2)  # (B*T, 57, 2) as (x, y) pairs
        return content.transpose(1, 2)  # (B*T, 2, 57)
