"""Reading, checking and converting IP_LAP checkpoints.

Accepted files:
- the official ``.pth`` files: ``{"state_dict": sd, "optimizer": ..., "global_step": ..., ...}``
  (a bare state dict is accepted too), keys with or without one leading ``module.``, read with
  ``torch.load(weights_only=True)``;
- our ``.safetensors`` conversions (fp32 or fp16), which record the network kind in their metadata.

Loading is strict: every missing, unexpected or mis-shaped tensor is reported by name in one
:class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .landmark_generator import LandmarkGenerator
from .perceptual import PERCEPTUAL_PREFIX, PerceptualLoss
from .renderer import Renderer

LANDMARK = "landmark_generator"
RENDERER = "renderer"
KINDS = (LANDMARK, RENDERER)
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and every problem."""


@dataclass
class Checkpoint:
    """The tensors of one file, with ``module.`` stripped and the perceptual tensors apart."""

    path: Path
    kind: str
    state_dict: dict[str, torch.Tensor]
    perceptual: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    file_format: str = "pth"

    @property
    def dtype(self) -> torch.dtype:
        floats = [t.dtype for t in self.state_dict.values() if t.is_floating_point()]
        return max(set(floats), key=floats.count) if floats else torch.float32


def build(kind: str) -> nn.Module:
    if kind == LANDMARK:
        return LandmarkGenerator()
    if kind == RENDERER:
        return Renderer()
    raise ValueError(f"unknown network kind {kind!r}; expected one of {KINDS}")


def strip_module_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove one leading ``module.`` (DataParallel) from every key that has it."""
    return {k.removeprefix("module."): v for k, v in sd.items()}


def detect_kind(keys) -> str | None:
    keys = list(keys)
    if any(k.startswith("fusion_transformer.") for k in keys):
        return LANDMARK
    if any(k.startswith(("flow_module.", "translation.")) for k in keys):
        return RENDERER
    return None


def _read_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: {unreadable(path, e, 'safetensors file')}") from e
        return sd, metadata, "safetensors"
    obj = load_weights_file(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointError(f"{path}: no 'state_dict' of tensors in this file (found {type(obj).__name__})")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:10]))}")
    return dict(sd), {}, "pth"


def load_weights_file(path: str | os.PathLike, **kwargs):
    """``torch.load(path, weights_only=True)`` on the CPU (``kwargs``: more ``torch.load`` options, e.g.
    ``mmap=True``); a file it cannot read is one :class:`CheckpointError` line naming the file and
    what is wrong (:func:`unreadable`), never PyTorch's advice to load it unsafely."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols asks the user to file an issue
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location="cpu", weights_only=True, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - pickle.UnpicklingError, RuntimeError, EOFError, BadZipFile, ...
        raise CheckpointError(f"{path}: {unreadable(path, e)}") from e


def unreadable(path: str | os.PathLike, error: BaseException, expected: str = "PyTorch checkpoint") -> str:
    """What is wrong with a weights file the loader refused, in a few plain words (from its first
    bytes and the loader's error): an HTML page, a text file, a truncated or corrupt file, a file of
    pickled objects (refused: only tensors are loaded), or unrecognised contents."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    lower = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lower.startswith((b"<!doctype", b"<html", b"<head", b"<?xml", b"<!--")) or b"<html" in lower:
        return f"is not a {expected} (it looks like HTML: a web page saved instead of the file?)"
    message = str(error)
    if "Unsupported global" in message or "GLOBAL" in message:
        return (
            "holds Python objects besides tensors, which are never loaded (only plain weights are read: "
            "loading objects can run code); convert it to plain weights or use the authors' file"
        )
    if head.startswith((b"PK\x03\x04", b"\x80\x02\x8a")):  # torch.save's zip, or its legacy format
        return f"is truncated or corrupt (a damaged {expected}; download it again)"
    if head[:1] == b"\x80":
        return f"is not a {expected} (a Python pickle that torch.save did not write)"
    if expected == "safetensors file" and len(head) >= 8:
        return "is truncated, corrupt or not a safetensors file"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"is not a {expected} (it looks like a text file)"
    return f"is not a {expected} (unrecognised contents)"


def read_checkpoint(path: str | os.PathLike, kind: str | None = None) -> Checkpoint:
    """Read a file's tensors and decide which network they belong to (checked against ``kind``)."""
    path = Path(path)
    raw, metadata, file_format = _read_raw(path)
    sd = strip_module_prefix(raw)
    found = metadata.get("kind") or detect_kind(sd)
    if found is None:
        raise CheckpointError(
            f"{path}: holds neither the landmark transformer (fusion_transformer.*) nor the renderer "
            f"(flow_module.*, translation.*); first keys: {', '.join(list(sd)[:5]) or 'none'}"
        )
    if kind is not None and found != kind:
        raise CheckpointError(
            f"{path}: holds the {found.replace('_', ' ')}, but a {kind.replace('_', ' ')} was asked for"
        )
    perceptual = {k: v for k, v in sd.items() if k.startswith(PERCEPTUAL_PREFIX)}
    sd = {k: v for k, v in sd.items() if not k.startswith(PERCEPTUAL_PREFIX)}
    return Checkpoint(path, found, sd, perceptual, metadata, file_format)


def check_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Every problem of ``sd`` against ``model``: missing, unexpected, wrong shape, wrong dtype class."""
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected)}")
    for k, v in sd.items():
        if k in expected:
            want = expected[k]
            if tuple(v.shape) != tuple(want.shape):
                problems.append(f"{k}: shape {tuple(v.shape)}, expected {tuple(want.shape)}")
            elif v.is_floating_point() != want.is_floating_point():
                problems.append(f"{k}: dtype {v.dtype}, expected {want.dtype}")
    nonfinite = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        problems.append(f"non-finite values in: {', '.join(nonfinite)}")
    return problems


def check_perceptual(tensors: dict[str, torch.Tensor]) -> list[str]:
    if not tensors:
        return []
    return [f"perceptual VGG19: {p}" for p in check_state_dict(PerceptualLoss().network, _unprefix(tensors))]


def checkpoint_problems(ckpt: Checkpoint) -> tuple[nn.Module, list[str]]:
    """A fresh model of the checkpoint's kind and every problem of the file's tensors against it."""
    model = build(ckpt.kind)
    return model, check_state_dict(model, ckpt.state_dict) + check_perceptual(ckpt.perceptual)


def _unprefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(PERCEPTUAL_PREFIX): v for k, v in tensors.items()}


def _load(path, kind: str, device, dtype) -> nn.Module:
    ckpt = read_checkpoint(path, kind)
    model, problems = checkpoint_problems(ckpt)
    if problems:
        shown = "; ".join(p if len(p) <= 160 else p[:150] + " ..." for p in problems[:3])
        more = f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{ckpt.path}: has the wrong tensors for the {kind.replace('_', ' ')}: {shown}{more}; "
            f"'mouthpiece checkpoints verify {ckpt.path}' lists them all"
        )
    model.load_state_dict(ckpt.state_dict, strict=True)
    model.perceptual_state_dict = ckpt.perceptual  # kept apart, for training (models.load_perceptual_loss)
    model.checkpoint_path = str(ckpt.path)
    return model.to(device=device, dtype=dtype).eval()


def load_landmark_generator(path, device="cpu", dtype: torch.dtype | None = None) -> LandmarkGenerator:
    """The landmark transformer of an official ``.pth`` or a converted ``.safetensors`` file, in eval mode."""
    return _load(path, LANDMARK, device, dtype)


def load_renderer(path, device="cpu", dtype: torch.dtype | None = None) -> Renderer:
    """The renderer of an official ``.pth`` or a converted file, in eval mode.

    The checkpoint's VGG19 tensors (``perceptual.*``) are checked and kept in
    ``renderer.perceptual_state_dict``; :func:`load_perceptual_loss` builds the loss from them.
    """
    return _load(path, RENDERER, device, dtype)


def load_perceptual_loss(source, device="cpu") -> PerceptualLoss:
    """The perceptual loss with VGG19 weights from a renderer checkpoint path, a loaded renderer,
    or a dict of ``perceptual.model.network.*`` (or bare ``features``) tensors."""
    if isinstance(source, nn.Module):
        tensors = getattr(source, "perceptual_state_dict", {})
        where = getattr(source, "checkpoint_path", "the renderer")
    elif isinstance(source, dict):
        tensors, where = source, "the given tensors"
    else:
        ckpt = read_checkpoint(source)
        tensors, where = ckpt.perceptual, str(ckpt.path)
        if not tensors:
            tensors = {k: v for k, v in ckpt.state_dict.items()}  # a bare VGG19 features file
    if not tensors:
        raise CheckpointError(f"{where}: holds no VGG19 perceptual weights (perceptual.model.network.*)")
    loss = PerceptualLoss()
    problems = check_state_dict(loss.network, _unprefix(tensors))
    if problems:
        raise CheckpointError(f"{where}: unusable VGG19 weights:\n  - " + "\n  - ".join(problems))
    loss.load_checkpoint_tensors({k: v.float() for k, v in tensors.items()})
    return loss.to(device)


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def convert(src, dst, half: bool = False, keep_perceptual: bool = True) -> Path:
    """Check ``src`` strictly and write it as safetensors (fp16 with ``half``) to ``dst``."""
    from safetensors.torch import save_file

    ckpt = read_checkpoint(src)
    _, problems = checkpoint_problems(ckpt)
    if problems:
        raise CheckpointError(
            f"{ckpt.path}: refusing to convert an unusable checkpoint:\n  - " + "\n  - ".join(problems)
        )
    tensors = dict(ckpt.state_dict)
    if keep_perceptual:
        tensors.update(ckpt.perceptual)
    dtype = torch.float16 if half else torch.float32
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    metadata = {
        "kind": ckpt.kind,
        "format": "mouthpiece",
        "format_version": FORMAT_VERSION,
        "dtype": str(dtype).removeprefix("torch."),
        "source": Path(src).name,
        "source_sha256": sha256(src),
    }
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: converted checkpoints are written as .safetensors")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def schema(kind: str) -> dict:
    """Names, shapes and dtypes of every tensor of an official checkpoint of ``kind``
    (for the renderer, the VGG19 perceptual tensors included), as in the golden schema files."""
    tensors = {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in build(kind).state_dict().items()
    }
    if kind == RENDERER:
        for k, v in PerceptualLoss().network.state_dict().items():
            tensors[PERCEPTUAL_PREFIX + k] = {
                "shape": list(v.shape),
                "dtype": str(v.dtype).removeprefix("torch."),
            }
    return {"tensors": tensors}


def schema_json(kind: str) -> str:
    return json.dumps(schema(kind), indent=1)
