"""Renderer backends behind one interface.

A backend holds an avatar's references (set once) and renders batches of frames:

    backend.set_references(ref_imgs (N, 3, 128, 128), ref_sketches (N, 3, 128, 128))
    faces = backend.render(faces (B, 3, 128, 128), target_sketches (B, 5, 3, 128, 128), mels (B, 1, 80, 16))
    # -> (B, 3, 128, 128) float in [0, 1]

All tensors are BGR float32 in [0, 1] (sketches too), on any device; backends move inputs to
their own device and dtype and return float32 on that device.
"""

from __future__ import annotations

from typing import Protocol

import torch

import models
from engine.synth.backends.pytorch import CudaGraphRenderer, FastTorchRenderer, PlainTorchRenderer


class RendererBackend(Protocol):
    name: str
    device: torch.device

    def set_references(self, ref_imgs: torch.Tensor, ref_sketches: torch.Tensor) -> None: ...

    def render(
        self, faces: torch.Tensor, target_sketches: torch.Tensor, mels: torch.Tensor
    ) -> torch.Tensor: ...


BACKENDS = ("fast", "plain", "cuda-graph", "onnx")
DEFAULT_BACKEND = "fast"
DEFAULT_PRECISION = "fp32"


def onnx_cache_dir():
    from engine.core.avatar import default_cache_dir

    return default_cache_dir().parent / "onnx"


def _checkpoint_sha256(model) -> str | None:
    path = getattr(model, "checkpoint_path", None)
    return models.sha256(path) if path else None


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_renderer_backend(
    name: str, model: models.Renderer, dtype: torch.dtype = torch.float32
) -> RendererBackend:
    if name == "plain":
        return PlainTorchRenderer(model, dtype)
    if name == "fast":
        return FastTorchRenderer(model, dtype)
    if name == "cuda-graph":
        return CudaGraphRenderer(model, dtype)
    if name == "onnx":
        from engine.synth.backends.onnx import OnnxRenderer

        if dtype != torch.float32:
            raise ValueError("the onnx backend runs float32 graphs")
        device = next(model.parameters()).device
        sha = _checkpoint_sha256(model)  # exports are cached per checkpoint (random weights: not cached)
        return OnnxRenderer.from_torch(
            model, cache_dir=onnx_cache_dir() if sha else None, source_sha256=sha, device=device
        )
    raise ValueError(f"unknown renderer backend {name!r}; choose one of {', '.join(BACKENDS)}")
