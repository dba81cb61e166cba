"""Deterministic stand-in weights in the official checkpoint format.

Trained IP_LAP weights cannot be downloaded everywhere (CI, air-gapped machines). The golden
files were produced by the authors' code with weights made by this recipe, so anyone can
regenerate them and prove equivalence. Per tensor (name ``k`` without any ``module.`` prefix),
``rng = numpy.random.default_rng([seed, zlib.crc32(k)])``:

- int64 (BatchNorm ``num_batches_tracked``): zeros;
- leaf ``pe``: the sinusoidal table, computed in float32 numpy;
- leaf ``running_mean``: normal(0, 0.1); leaf ``running_var``: uniform(0.5, 1.5);
- 1-D tensors of normalisation layers (names containing ``bn``, ``norm`` (any case) or
  ``conv_block.1``): ``weight`` uniform(0.6, 1.4), otherwise normal(0, 0.1);
- other 1-D tensors: normal(0, 0.05);
- everything else: normal(0, 1/sqrt(prod(shape[1:]))).

Values are drawn as float64 and cast to float32. Stand-in weights produce meaningless faces:
they exist for testing the machinery, never for output anyone should look at as a result.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import LANDMARK, RENDERER, build, schema

#: File names of the official checkpoints, also used for the stand-ins we write.
OFFICIAL_NAMES = {LANDMARK: "landmarkgenerator_checkpoint.pth", RENDERER: "renderer_checkpoint.pth"}


def _sinusoid_table_np(rows: int, dim: int) -> np.ndarray:
    pe = np.zeros((rows, dim), dtype=np.float32)
    position = np.arange(rows, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float32) * -(math.log(10000.0) / dim))
    pe[:, 0::2] = np.sin(position * div)
    pe[:, 1::2] = np.cos(position * div)
    return pe[None]


def standin_tensor(name: str, shape: list[int], dtype: str, seed: int) -> torch.Tensor:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    leaf = name.rsplit(".", 1)[-1]
    if dtype == "int64":
        return torch.zeros(shape, dtype=torch.int64)
    if leaf == "pe":
        return torch.from_numpy(_sinusoid_table_np(shape[1], shape[2]))
    if leaf == "running_mean":
        a = rng.normal(0.0, 0.1, shape)
    elif leaf == "running_var":
        a = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1 and ("bn" in name or "norm" in name.lower() or "conv_block.1" in name):
        a = rng.uniform(0.6, 1.4, shape) if leaf == "weight" else rng.normal(0.0, 0.1, shape)
    elif len(shape) == 1:
        a = rng.normal(0.0, 0.05, shape)
    else:
        a = rng.normal(0.0, 1.0 / math.sqrt(int(np.prod(shape[1:]))), shape)
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def standin_state_dict(kind: str, seed: int = 1, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """All tensors of an official checkpoint of ``kind`` (the renderer's with ``module.``, as the
    authors' DataParallel training saved them, unless ``prefix`` says otherwise)."""
    if prefix is None:
        prefix = "module." if kind == RENDERER else ""
    return {
        prefix + name: standin_tensor(name, spec["shape"], spec["dtype"], seed)
        for name, spec in schema(kind)["tensors"].items()
    }


def standin_model(kind: str, seed: int = 1) -> nn.Module:
    """The network of ``kind`` (without the renderer's VGG19 tensors) with stand-in weights, in eval
    mode. The recipe seeds every tensor by its name, so these are the values of
    :func:`standin_state_dict`, and only the tensors the network holds are drawn."""
    model = build(kind)
    sd = {
        k: standin_tensor(k, list(v.shape), str(v.dtype).removeprefix("torch."), seed)
        for k, v in model.state_dict().items()
    }
    model.load_state_dict(sd)
    return model.eval()


def write_standin(kind: str, path: str | os.PathLike, seed: int = 1, prefix: str | None = None) -> Path:
    """Write a stand-in checkpoint in the official ``.pth`` layout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = standin_state_dict(kind, seed, prefix)
    torch.save({"state_dict": sd, "optimizer": None, "global_step": 0, "global_epoch": 0}, str(path))
    return path
