"""Evaluation of lip-synced output: image quality, lip shape, identity and audio-visual sync.

Always available (no weights needed):

- **PSNR** and **SSIM** between generated and reference frames, on the 128x128 face crop (the
  reference frame's FaceMesh inference box, 25 px margin, IPLAP_FACTS.md section 4, applied to both
  frames) and on the full frame.
- **LipLMD**: mean Euclidean distance over the 40 FaceMesh lip points (``ORDER[91:131]``) of the
  generated and the reference frame, in pixels of the 128x128 face crop (both point sets normalised
  to the reference frame's inference box, times 128).

With networks the user supplies as files (TorchScript ``.pt`` or ONNX ``.onnx``; never downloaded):

- **LPIPS** (a perceptual distance network), **FID** (an Inception-v3 pool3 feature extractor; the
  Fréchet distance is computed here), **CSIM** (an ArcFace embedding network; cosine similarity of
  the generated and the reference face) and **SyncNet** (confidence and distance over audio-visual
  offsets -15..15, as syncnet_python's ``SyncNetInstance.evaluate``).

A metric whose network is not given is reported as ``None`` with a reason, never an error. A given
file that cannot be loaded, or whose outputs have the wrong shape, is an :class:`EvaluationError`
naming the file. The input/output contract of every network and the exact definitions are in
``docs/evaluation.md``.

Entry points: :func:`evaluate_frames` (aligned frame sequences), :func:`evaluate_video` (two video
files aligned by frame index), :func:`evaluate_checkpoints` (dub a held-out part of a video with its
own audio and compare with the original frames: the paper's reconstruction setting), and the command
line (``python -m engine.evaluation``; :func:`add_arguments` / :func:`run_from_args` for embedding it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.core.landmark_sets import EDGES, LIP_MP

__all__ = [
    "ARCFACE_TEMPLATE",
    "EvaluationError",
    "Network",
    "Networks",
    "add_arguments",
    "arcface_align",
    "arcface_embeddings",
    "evaluate_checkpoints",
    "evaluate_frames",
    "evaluate_video",
    "feature_statistics",
    "fid_features",
    "format_table",
    "frechet_distance",
    "lip_lmd",
    "load_network",
    "load_networks",
    "lpips_distances",
    "main",
    "mfcc",
    "psnr",
    "run_from_args",
    "similarity_transform",
    "ssim",
    "syncnet_crop",
    "syncnet_offsets",
    "syncnet_score",
]

FPS = 25.0
CROP_SIZE = 128  # face crop side (the model's resolution); LipLMD is in pixels of this crop
MARGIN_PX = 25  # inference crop margin (IPLAP_FACTS.md section 4)
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
DOCS = "docs/evaluation.md"

#: insightface's ArcFace 112x112 template: left eye, right eye (image left to right), nose tip,
#: left and right mouth corners, in pixels.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_SIZE = 112
FID_SIZE = 299
SYNCNET_SIZE = 224
SYNCNET_CROP_SCALE = 0.4  # syncnet_python run_pipeline --crop_scale
SYNCNET_PAD_VALUE = 110  # syncnet_python pads frames with grey 110 before cropping
SYNCNET_SMOOTH = 13  # median filter over frames of the crop box (syncnet_python: kernel 13)
SYNCNET_VSHIFT = 15
SYNCNET_BATCH = 20

_RIGHT_EYE_MP = np.array(sorted({p for e in EDGES["right_eye"] for p in e}), dtype=np.int64)
_LEFT_EYE_MP = np.array(sorted({p for e in EDGES["left_eye"] for p in e}), dtype=np.int64)
_NOSE_TIP_MP = 1
_MOUTH_CORNERS_MP = (61, 291)


class EvaluationError(ValueError):
    """Inputs or network files that cannot be evaluated (the message names the file or the reason)."""


# ============================================================================================
# Pixel metrics
# ============================================================================================


def _pair(a: np.ndarray, b: np.ndarray, data_range: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("images are empty")
    if data_range is None:
        if a.dtype == np.uint8 and b.dtype == np.uint8:
            data_range = 255.0
        elif np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating):
            data_range = 1.0
        else:
            raise ValueError(f"give data_range for images of dtype {a.dtype} and {b.dtype}")
    return a.astype(np.float64), b.astype(np.float64), float(data_range)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(R^2 / MSE)``, MSE over every pixel and channel.

    ``R`` is 255 for uint8 images and 1.0 for float images unless ``data_range`` says otherwise.
    Identical images give ``inf``.
    """
    x, y, r = _pair(a, b, data_range)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(r * r / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with ``g`` (x and y), keeping only the positions where the whole
    window lies inside the image (MATLAB ``filter2(..., 'valid')``)."""
    r = len(g) // 2
    out = cv2.sepFilter2D(img, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
    return out[r : img.shape[0] - r, r : img.shape[1] - r]


def _ssim_channel(x: np.ndarray, y: np.ndarray, r: float, g: np.ndarray) -> float:
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
    K2 = 0.03, population (co)variances, mean over the positions where the window fits inside the
    image ('valid'). Colour images: SSIM of each channel separately, then the mean of the channels.

    ``R`` (the dynamic range) is 255 for uint8 and 1.0 for float images unless ``data_range`` says
    otherwise. Identical images give 1.0. Images must be at least 11x11.
    """
    x, y, r = _pair(a, b, data_range)
    if x.ndim not in (2, 3) or x.shape[0] < 11 or x.shape[1] < 11:
        raise ValueError(f"SSIM needs (H, W) or (H, W, C) images of at least 11x11, got {x.shape}")
    g = _gaussian_1d()
    if x.ndim == 2:
        return _ssim_channel(x, y, r, g)
    return float(np.mean([_ssim_channel(x[..., c], y[..., c], r, g) for c in range(x.shape[2])]))


# ============================================================================================
# Lip landmark distance
# ============================================================================================


def _mesh(points: np.ndarray, what: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] not in (468, 478) or p.shape[1] < 2:
        raise ValueError(f"{what}: expected a raw FaceMesh (468|478, 2|3) array, got {p.shape}")
    return p[:, :2]


def lip_lmd(
    points_gen: np.ndarray,
    points_ref: np.ndarray,
    frame_hw: tuple[int, int],
    *,
    margin_px: float = MARGIN_PX,
    size: int = CROP_SIZE,
) -> float:
    """LipLMD of one frame: the mean Euclidean distance over the 40 lip points (``ORDER[91:131]``)
    between the FaceMesh of the generated frame and of the reference frame, in pixels of the
    ``size`` x ``size`` face crop.

    ``points_gen``, ``points_ref``: raw FaceMesh meshes (468|478, 2|3) in MediaPipe's normalised
    frame coordinates; ``frame_hw``: the frame size (h, w). Both point sets are normalised to the
    *reference* frame's inference box (:func:`engine.core.face.crop_box`, ``margin_px``) as
    ``((w x - x1) / (x2 - x1), (h y - y1) / (y2 - y1))`` and multiplied by ``size``.
    """
    from engine.core.face import crop_box

    h, w = (int(v) for v in frame_hw)
    gen, ref = _mesh(points_gen, "points_gen"), _mesh(points_ref, "points_ref")
    y1, y2, x1, x2 = crop_box(ref, h, w, margin_px)
    if y2 <= y1 or x2 <= x1:
        raise ValueError(f"degenerate reference face box {(y1, y2, x1, x2)}")
    scale = np.array([size / (x2 - x1), size / (y2 - y1)])
    offset = np.array([x1, y1], dtype=np.float64)
    frame = np.array([w, h], dtype=np.float64)
    g = (gen[LIP_MP] * frame - offset) * scale
    r = (ref[LIP_MP] * frame - offset) * scale
    return float(np.mean(np.linalg.norm(g - r, axis=1)))


# ============================================================================================
# Fréchet distance
# ============================================================================================


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features (unbiased, N - 1, as pytorch-fid)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues from
    rounding are set to zero)."""
    a = (a + a.T) / 2
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` for Gaussians N(mu1, S1), N(mu2, S2).

    ``tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (which has the eigenvalues of ``S1 S2``), with
    eigen-decompositions only: stable for singular covariances (fewer samples than dimensions), no
    scipy. The result is clamped at 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"inconsistent shapes: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
    s1h = _sqrtm_psd(s1)
    m = s1h @ s2 @ s1h
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(ev, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


# ============================================================================================
# User-supplied networks
# ============================================================================================


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise EvaluationError("onnxruntime is needed for .onnx networks: pip install onnxruntime") from e
    return onnxruntime


class Network:
    """One network from a file: a TorchScript method or an ONNX Runtime session.

    Called with numpy float32 arrays (batch first); returns the first output as float32 numpy.
    ONNX models with a fixed batch size are fed in chunks of that size.
    """

    def __init__(
        self,
        path: str | Path,
        what: str,
        fn: Callable[..., Any],
        backend: str,
        fixed_batch: int | None = None,
        device: str = "cpu",
    ):
        self.path, self.what, self.backend = Path(path), what, backend
        self._fn, self.fixed_batch, self.device = fn, fixed_batch, device

    def __repr__(self) -> str:
        return f"Network({self.what}, {self.path}, {self.backend})"

    def _run(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if self.backend == "torchscript":
            import torch

            with torch.inference_mode():
                out = self._fn(*(torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays))
            if isinstance(out, (tuple, list)):
                out = out[0]
            if not isinstance(out, torch.Tensor):
                raise EvaluationError(
                    f"{self.path}: the {self.what} network returned {type(out).__name__}, not a tensor"
                )
            return out.detach().float().cpu().numpy()
        return np.asarray(self._fn(arrays), dtype=np.float32)

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        arrays = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays)
        n = arrays[0].shape[0]
        try:
            if self.fixed_batch is None or self.fixed_batch == n:
                out = self._run(arrays)
            else:
                k, parts = self.fixed_batch, []
                for s in range(0, n, k):
                    chunk = [a[s : s + k] for a in arrays]
                    m = chunk[0].shape[0]
                    if m < k:  # pad the last chunk with copies of its last item
                        chunk = [np.concatenate([c, np.repeat(c[-1:], k - m, axis=0)]) for c in chunk]
                    parts.append(self._run(chunk)[:m])
                out = np.concatenate(parts)
        except EvaluationError:
            raise
        except Exception as e:
            shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
            raise EvaluationError(
                f"{self.path}: the {self.what} network failed on input(s) of shape {shapes}: "
                f"{type(e).__name__}: {e}; see {DOCS} for the input layout it must accept"
            ) from e
        if out.ndim == 0 or out.shape[0] != n:
            raise EvaluationError(
                f"{self.path}: the {self.what} network returned shape {tuple(out.shape)} for a batch of "
                f"{n}; expected batch-first outputs (see {DOCS})"
            )
        return out


def _check_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise EvaluationError(f"{what} model file not found: {p}")
    if not p.is_file():
        raise EvaluationError(f"{p}: the {what} model is not a regular file")
    return p


def _load_torchscript(path: Path, what: str, device: str):
    import torch

    try:
        with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; it still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as e:
        raise EvaluationError(
            f"{path}: cannot be loaded as a TorchScript {what} network ({type(e).__name__}: {e}); "
            f"export it with torch.jit.script/trace and .save(), or give an .onnx file (see {DOCS})"
        ) from e
    module.eval()
    return module


def _torchscript_method(module, path: Path, what: str, method: str, device: str) -> Network:
    if method == "forward":
        fn = module
    else:
        fn = getattr(module, method, None)
        if fn is None or not callable(fn):
            raise EvaluationError(
                f"{path}: the TorchScript {what} module has no {method}() method "
                f"(export it with @torch.jit.export; see {DOCS})"
            )
    return Network(path, what, fn, "torchscript", device=device)


def _load_onnx(path: Path, what: str, n_inputs: int, device: str) -> Network:
    ort = _ort()
    from engine.synth.backends.onnx import providers

    try:
        session = ort.InferenceSession(str(path), providers=providers(device))
    except Exception as e:
        raise EvaluationError(
            f"{path}: cannot be loaded as an ONNX {what} network ({type(e).__name__}: {e})"
        ) from e
    inputs = session.get_inputs()
    if len(inputs) != n_inputs:
        raise EvaluationError(
            f"{path}: the ONNX {what} network has {len(inputs)} input(s) "
            f"({', '.join(i.name for i in inputs)}); expected {n_inputs} (see {DOCS})"
        )
    names = [i.name for i in inputs]
    batch = inputs[0].shape[0] if inputs[0].shape else None
    fixed = int(batch) if isinstance(batch, int) and batch > 0 else None

    def run(arrays):
        return session.run(None, dict(zip(names, arrays, strict=True)))[0]

    return Network(path, what, run, "onnx", fixed_batch=fixed, device=device)


def load_network(
    path: str | Path, what: str, *, n_inputs: int = 1, method: str = "forward", device: str = "cpu"
) -> Network:
    """Load a network file: ``.onnx`` through ONNX Runtime, anything else (``.pt``, ``.pth``,
    ``.ts``, ``.torchscript``) with ``torch.jit.load``. ``what`` names the network in errors."""
    p = _check_file(path, what)
    if p.suffix.lower() == ".onnx":
        return _load_onnx(p, what, n_inputs, device)
    return _torchscript_method(_load_torchscript(p, what, device), p, what, method, device)


@dataclass
class Networks:
    """The optional networks; a ``None`` field makes its metric ``None`` with a reason."""

    lpips: Network | None = None
    fid: Network | None = None
    arcface: Network | None = None
    syncnet_lip: Network | None = None
    syncnet_audio: Network | None = None


def load_networks(
    lpips: str | Path | None = None,
    fid: str | Path | None = None,
    arcface: str | Path | None = None,
    syncnet: str | Path | None = None,
    syncnet_lip: str | Path | None = None,
    syncnet_audio: str | Path | None = None,
    device: str = "cpu",
) -> Networks:
    """Load the networks that are given (see ``docs/evaluation.md`` for each file's contract).

    SyncNet is either one TorchScript file (``syncnet``) exposing ``forward_lip`` and
    ``forward_aud`` methods, or two files (``syncnet_lip`` and ``syncnet_audio``, TorchScript
    ``forward`` or ONNX) — both or neither.
    """
    nets = Networks()
    if lpips:
        nets.lpips = load_network(lpips, "LPIPS", n_inputs=2, device=device)
    if fid:
        nets.fid = load_network(fid, "FID (Inception pool3)", device=device)
    if arcface:
        nets.arcface = load_network(arcface, "ArcFace (CSIM)", device=device)
    if syncnet and (syncnet_lip or syncnet_audio):
        raise EvaluationError(
            "give either one SyncNet file (--syncnet-model) or --syncnet-lip and --syncnet-audio"
        )
    if bool(syncnet_lip) != bool(syncnet_audio):
        raise EvaluationError("SyncNet needs both --syncnet-lip and --syncnet-audio (or one --syncnet-model)")
    if syncnet:
        p = _check_file(syncnet, "SyncNet")
        if p.suffix.lower() == ".onnx":
            raise EvaluationError(
                f"{p}: an ONNX SyncNet must be given as two files, --syncnet-lip and --syncnet-audio "
                f"(one ONNX graph cannot expose two methods; see {DOCS})"
            )
        module = _load_torchscript(p, "SyncNet", device)
        nets.syncnet_lip = _torchscript_method(module, p, "SyncNet", "forward_lip", device)
        nets.syncnet_audio = _torchscript_method(module, p, "SyncNet", "forward_aud", device)
    elif syncnet_lip:
        nets.syncnet_lip = load_network(syncnet_lip, "SyncNet lip", device=device)
        nets.syncnet_audio = load_network(syncnet_audio, "SyncNet audio", device=device)
    return nets


def _batched(net: Network, arrays: Sequence[np.ndarray], batch: int) -> np.ndarray:
    n = arrays[0].shape[0]
    return np.concatenate([net(*(a[s : s + batch] for a in arrays)) for s in range(0, n, batch)])


def _to_rgb_nchw(images_bgr: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR -> (N, 3, H, W) float32 RGB in [0, 1]."""
    x = np.asarray(images_bgr)
    return np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def lpips_distances(net: Network, gen_bgr: np.ndarray, ref_bgr: np.ndarray, batch: int = 16) -> np.ndarray:
    """LPIPS of image pairs: (N, H, W, 3) uint8 BGR each -> (N,) distances.

    The network gets two (B, 3, H, W) float32 RGB tensors in [-1, 1] and must return one value per
    pair ((B,), (B, 1) or (B, 1, 1, 1)).
    """
    a, b = _to_rgb_nchw(gen_bgr) * 2 - 1, _to_rgb_nchw(ref_bgr) * 2 - 1
    out = _batched(net, (a, b), batch)
    if out.reshape(out.shape[0], -1).shape[1] != 1:
        raise EvaluationError(
            f"{net.path}: the LPIPS network returned shape {tuple(out.shape)}; expected one distance per "
            f"pair: (B,), (B, 1) or (B, 1, 1, 1) (see {DOCS})"
        )
    return out.reshape(-1).astype(np.float64)


def fid_features(net: Network, images_bgr: np.ndarray, batch: int = 16) -> np.ndarray:
    """Inception pool3 features: (N, H, W, 3) uint8 BGR -> (N, D) float64.

    Each image is resized to 299x299 (bilinear) and given as (B, 3, 299, 299) float32 RGB in
    [0, 1]; the network must return (B, D) or (B, D, 1, 1) (D = 2048 for Inception-v3 pool3).
    """
    resized = np.stack([cv2.resize(im, (FID_SIZE, FID_SIZE)) for im in images_bgr])
    x = _to_rgb_nchw(resized)
    out = _batched(net, (x,), batch)
    if out.ndim == 4 and out.shape[2:] == (1, 1):
        out = out[:, :, 0, 0]
    if out.ndim != 2:
        raise EvaluationError(
            f"{net.path}: the FID feature network returned shape {tuple(out.shape)}; expected (B, 2048) "
            f"or (B, 2048, 1, 1) (see {DOCS})"
        )
    return out.astype(np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation) mapping ``src`` points
    onto ``dst`` (Umeyama 1991, as skimage's ``SimilarityTransform.estimate``), as a 2x3 matrix."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    n = src.shape[0]
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - ms, dst - md
    cov = d0.T @ s0 / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var = s0.var(axis=0).sum()
    scale = float((s * d).sum() / var) if var > 0 else 1.0
    t = md - scale * rot @ ms
    return np.hstack([scale * rot, t[:, None]])


def _five_points(points: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """ArcFace's five points from a FaceMesh, in pixels: the eye centres (mean of each eye's contour
    points; MediaPipe's right eye is on the image left), the nose tip (1), mouth corners (61, 291)."""
    p = _mesh(points, "points") * np.array([frame_hw[1], frame_hw[0]], dtype=np.float64)
    return np.stack(
        [
            p[_RIGHT_EYE_MP].mean(axis=0),
            p[_LEFT_EYE_MP].mean(axis=0),
            p[_NOSE_TIP_MP],
            p[_MOUTH_CORNERS_MP[0]],
            p[_MOUTH_CORNERS_MP[1]],
        ]
    )


def arcface_align(frame_bgr: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace-aligned face of ``frame_bgr`` (uint8 BGR) from a raw FaceMesh of it
    (five points, :func:`similarity_transform` onto :data:`ARCFACE_TEMPLATE`, bilinear, black border)."""
    m = similarity_transform(_five_points(points, frame_bgr.shape[:2]), ARCFACE_TEMPLATE)
    return cv2.warpAffine(frame_bgr, m, (ARCFACE_SIZE, ARCFACE_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)


def arcface_embeddings(net: Network, faces_bgr: np.ndarray, batch: int = 32) -> np.ndarray:
    """ArcFace embeddings: (N, 112, 112, 3) uint8 BGR aligned faces -> (N, D) float64.

    The network gets (B, 3, 112, 112) float32 RGB in [-1, 1] and must return (B, D).
    """
    x = _to_rgb_nchw(faces_bgr) * 2 - 1
    out = _batched(net, (x,), batch)
    if out.ndim != 2:
        raise EvaluationError(
            f"{net.path}: the ArcFace network returned shape {tuple(out.shape)}; expected (B, D) "
            f"embeddings (see {DOCS})"
        )
    return out.astype(np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)


# ============================================================================================
# SyncNet
# ============================================================================================


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def _mfcc_filterbank(nfilt: int = 26, nfft: int = 512, rate: int = 16000) -> np.ndarray:
    mels = np.linspace(_hz2mel(0.0), _hz2mel(rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mels) / rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


def _dct2_ortho(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.cos(np.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m  # (n, n): X = m @ x


def mfcc(wav16k: np.ndarray, rate: int = 16000) -> np.ndarray:
    """SyncNet's audio features: ``python_speech_features.mfcc(signal, 16000)`` with its defaults,
    reimplemented in numpy. Returns (13, N) float64, 100 frames per second.

    ``wav16k``: mono float samples in [-1, 1] at 16 kHz; they are first converted to int16 units
    (``round(x * 32768)``, clipped), as syncnet_python reads a 16-bit wav. Then: pre-emphasis 0.97;
    frames of 400 samples every 160 (the last one zero-padded), no window; power spectrum
    ``|rfft(frame, 512)|^2 / 512``; 26 triangular mel filters (0 Hz to 8 kHz, HTK mel, bin edges
    ``floor(513 * hz / 16000)``); log (zeros replaced by machine epsilon); orthonormal DCT-II, first
    13; lifter 22 (``1 + 11 sin(pi n / 22)``); coefficient 0 replaced by the log of the frame energy.
    """
    x = np.asarray(wav16k, dtype=np.float64).reshape(-1)
    if rate != 16000:
        raise ValueError("SyncNet features are defined at 16 kHz")
    if x.size == 0:
        raise ValueError("empty audio")
    sig = np.clip(np.round(x * 32768.0), -32768, 32767)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
    flen, fstep, nfft = 400, 160, 512
    n = 1 if sig.size <= flen else 1 + int(math.ceil((sig.size - flen) / fstep))
    pad = np.concatenate([sig, np.zeros((n - 1) * fstep + flen - sig.size)])
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]
    frames = pad[idx]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(float).eps
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ _mfcc_filterbank(26, nfft, rate).T
    feat = np.where(feat == 0, eps, feat)
    cep = np.log(feat) @ _dct2_ortho(26).T[:, :13]
    cep = cep * (1 + 11.0 * np.sin(np.pi * np.arange(13) / 22))
    cep[:, 0] = np.log(energy)
    return cep.T


def _syncnet_box(points: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """The face box (x1, y1, x2, y2) in pixels of all 468 FaceMesh points (stands in for the S3FD
    detection of syncnet_python's pipeline)."""
    p = _mesh(points, "points")[:468] * np.array([frame_hw[1], frame_hw[0]], dtype=np.float64)
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def syncnet_crop(frame_bgr: np.ndarray, box_xyxy: Sequence[float], size: int = SYNCNET_SIZE) -> np.ndarray:
    """syncnet_python's face-track crop (``run_pipeline.crop_video``, crop_scale 0.4) of one frame.

    ``bs`` = half the larger side of the box, centre (cx, cy); the frame is padded by
    ``int(bs * 1.8)`` with grey 110, and rows ``cy - bs .. cy + 1.8 bs``, columns
    ``cx - 1.4 bs .. cx + 1.4 bs`` are cut (int truncation) and resized to 224x224 (bilinear).
    The crop stays BGR, as cv2 read it there.
    """
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    cs = SYNCNET_CROP_SCALE
    bs = max(x2 - x1, y2 - y1) / 2
    if not bs > 0:
        raise ValueError(f"degenerate face box {box_xyxy}")
    bsi = int(bs * (1 + 2 * cs))
    padded = cv2.copyMakeBorder(frame_bgr, bsi, bsi, bsi, bsi, cv2.BORDER_CONSTANT, value=(110, 110, 110))
    my, mx = (y1 + y2) / 2 + bsi, (x1 + x2) / 2 + bsi
    rows = slice(int(my - bs), int(my + bs * (1 + 2 * cs)))
    cols = slice(int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs)))
    face = padded[rows, cols]
    return cv2.resize(face, (size, size))


def _smooth_boxes(boxes: np.ndarray, kernel: int = SYNCNET_SMOOTH) -> np.ndarray:
    """Fill missing boxes (NaN rows) from the nearest detected frame, then a running median over
    ``kernel`` frames (the frames of the window that exist)."""
    boxes = np.array(boxes, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    if ok.size == 0:
        raise ValueError("no face box in any frame")
    for i in np.flatnonzero(~np.isfinite(boxes).all(axis=1)):
        boxes[i] = boxes[ok[np.argmin(np.abs(ok - i))]]
    half = kernel // 2
    return np.stack([np.median(boxes[max(0, i - half) : i + half + 1], axis=0) for i in range(len(boxes))])


def syncnet_offsets(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int = SYNCNET_VSHIFT) -> dict:
    """syncnet_python's offset search on per-window embeddings (V, D) and (V, D).

    ``dists[i, j] = |video_emb[i] - audio_pad[i + j] + 1e-6|`` (torch ``pairwise_distance``), where
    ``audio_pad`` is ``audio_emb`` zero-padded by ``vshift`` windows on both sides, j = 0..2 vshift;
    ``mdist[j]`` = mean over i. Returns ``dist`` = min mdist (LSE-D), ``conf`` = median(mdist) - min
    (LSE-C), ``offset`` = vshift - argmin (positive: video frame i best matches audio window
    i - offset, the video lags the audio), and the per-window confidence ``median(mdist) - dists[:, argmin]``
    median-filtered over 9 windows (``framewise_conf``).
    """
    v = np.asarray(video_emb, np.float64)
    a = np.asarray(audio_emb, np.float64)
    if v.ndim != 2 or a.shape != v.shape:
        raise ValueError(f"video and audio embeddings must both be (V, D), got {v.shape} and {a.shape}")
    n, win = v.shape[0], 2 * vshift + 1
    ap = np.concatenate([np.zeros((vshift, a.shape[1])), a, np.zeros((vshift, a.shape[1]))])
    dists = np.stack([np.linalg.norm(v[i][None, :] - ap[i : i + win] + 1e-6, axis=1) for i in range(n)])
    mdist = dists.mean(axis=0)
    j = int(np.argmin(mdist))
    med = float(np.median(mdist))
    fconf = med - dists[:, j]
    padded = np.pad(fconf, (4, 4))  # scipy.signal.medfilt(fconf, kernel_size=9) pads with zeros
    framewise = np.array([np.median(padded[i : i + 9]) for i in range(n)])
    return {
        "dist": float(mdist[j]),
        "conf": float(med - mdist[j]),
        "offset": int(vshift - j),
        "mdist": mdist,
        "framewise_conf": framewise,
    }


def syncnet_score(
    crops_bgr: Sequence[np.ndarray] | np.ndarray,
    wav16k: np.ndarray,
    lip_net: Network,
    audio_net: Network,
    *,
    vshift: int = SYNCNET_VSHIFT,
    batch: int = SYNCNET_BATCH,
) -> dict:
    """SyncNet confidence and distance of a face track and its audio (syncnet_python's evaluate).

    ``crops_bgr``: (T, 224, 224, 3) uint8 BGR face-track crops (:func:`syncnet_crop`), frame 0
    aligned with sample 0 of ``wav16k`` (mono 16 kHz, float in [-1, 1]), 25 fps. With
    ``L = min(T, floor(len(wav) / 640))``, windows ``v = 0 .. L - 6`` (syncnet_python's
    ``lastframe = L - 5``, exclusive) give the lip input ``crops[v:v+5]`` as (B, 3, 5, 224, 224)
    float32 BGR 0..255 and the audio input ``mfcc[:, 4v:4v+20]`` as (B, 1, 13, 20) float32; both
    networks must return (B, D). Returns :func:`syncnet_offsets`'s dict plus ``windows``.
    """
    t = len(crops_bgr)
    wav = np.asarray(wav16k, dtype=np.float64).reshape(-1)
    length = min(t, wav.size // SAMPLES_PER_FRAME)
    last = length - 5
    if last < 1:
        raise ValueError(
            f"SyncNet needs at least 6 frames with 240 ms of audio; "
            f"got {t} frame(s) and {wav.size / 16000:.3f} s"
        )
    cc = mfcc(wav).astype(np.float32)  # (13, N)
    vid, aud = [], []
    for s in range(0, last, batch):
        frames = range(s, min(last, s + batch))
        clip = np.stack([np.asarray(c, dtype=np.uint8) for c in crops_bgr[s : min(last, s + batch) + 4]])
        x = clip.transpose(3, 0, 1, 2).astype(np.float32)  # (3, T, H, W)
        lip_in = np.stack([x[:, f - s : f - s + 5] for f in frames])
        aud_in = np.stack([cc[None, :, 4 * f : 4 * f + 20] for f in frames])
        vid.append(lip_net(lip_in))
        aud.append(audio_net(aud_in))
    v, a = np.concatenate(vid), np.concatenate(aud)
    for name, e, net in (("lip", v, lip_net), ("audio", a, audio_net)):
        if e.ndim != 2:
            raise EvaluationError(
                f"{net.path}: the SyncNet {name} network returned shape {tuple(e.shape)}; expected (B, D) "
                f"(see {DOCS})"
            )
    if v.shape[1] != a.shape[1]:
        raise EvaluationError(
            f"SyncNet lip ({lip_net.path}) and audio ({audio_net.path}) embeddings differ in size: "
            f"{v.shape[1]} vs {a.shape[1]}"
        )
    out = syncnet_offsets(v, a, vshift)
    out["windows"] = int(v.shape[0])
    return out


# ============================================================================================
# Evaluation of frame sequences
# ============================================================================================


def _summary(values: Sequence[float], extra: dict | None = None) -> dict | None:
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        out = {"value": float(np.mean(vals)), "std": float(np.std(vals)), "n": int(vals.size)}
    if extra:
        out.update(extra)
    return out


def _no_model(name: str, option: str) -> str:
    return f"{name}: no {option} given; see {DOCS}"


#: Display order, labels and the direction of each metric (for the table).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("psnr_face", "PSNR face crop (dB)", "higher is better"),
    ("ssim_face", "SSIM face crop", "higher is better"),
    ("psnr_full", "PSNR full frame (dB)", "higher is better"),
    ("ssim_full", "SSIM full frame", "higher is better"),
    ("lip_lmd", "LipLMD (px of 128 crop)", "lower is better"),
    ("lpips", "LPIPS face crop", "lower is better"),
    ("fid", "FID face crops", "lower is better"),
    ("csim", "CSIM (ArcFace cosine)", "higher is better"),
    ("syncnet_dist", "SyncNet distance (LSE-D)", "lower is better"),
    ("syncnet_conf", "SyncNet confidence (LSE-C)", "higher is better"),
)


class _Reiterable:
    """Frames of a video file, decoded again on every iteration (for the second SyncNet pass)."""

    def __init__(self, path: str | Path, fps: float, max_frames: int | None):
        self.path, self.fps, self.max_frames = path, fps, max_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        from engine.core.video import iter_frames

        return iter_frames(self.path, fps=self.fps, max_frames=self.max_frames)


def _check_frame(frame: Any, what: str, i: int) -> np.ndarray:
    f = np.asarray(frame)
    if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
        raise EvaluationError(f"{what} frame {i}: expected (H, W, 3) uint8 BGR, got {f.shape} {f.dtype}")
    return f


def evaluate_frames(
    generated_frames: Iterable[np.ndarray],
    reference_frames: Iterable[np.ndarray],
    *,
    landmarker=None,
    networks: Networks | None = None,
    audio: np.ndarray | None = None,
    skip_start: int = 0,
    strict: bool = True,
    vshift: int = SYNCNET_VSHIFT,
    margin_px: int = MARGIN_PX,
    per_frame: bool = False,
) -> dict:
    """Metrics of generated frames against aligned reference frames (full BGR uint8 frames).

    Pair i is ``(generated_frames[i], reference_frames[i])``. Pairs ``i < skip_start`` are left out
    of the per-frame metrics (SyncNet still sees every generated frame, so that ``audio`` stays
    aligned with frame 0). FaceMesh (``landmarker``, an :class:`engine.core.face.FaceLandmarker`; one is
    made when ``None``) runs on both frames of a pair; a pair whose reference frame has no face is
    counted and left out of the face-crop metrics, LipLMD and CSIM; one whose generated frame has
    no face is left out of LipLMD only.

    ``audio``: mono 16 kHz float samples aligned with generated frame 0 (for SyncNet). With
    ``strict`` the sequences must have the same length; otherwise the shorter one sets the count.
    ``generated_frames`` is iterated twice when SyncNet runs (give a list or a re-iterable).

    Returns a JSON-able dict: ``metrics`` (name -> ``{"value", "std", "n", ...}`` or ``None``),
    ``reasons`` (name -> why it is ``None``), ``frames`` (counts) and, with ``per_frame``, the
    per-frame values.
    """
    from engine.core.face import FaceLandmarker, crop_box, crop_face

    nets = networks or Networks()
    own = landmarker is None
    fm = FaceLandmarker() if own else landmarker
    t0 = time.perf_counter()
    basic = ("psnr_face", "ssim_face", "psnr_full", "ssim_full", "lip_lmd")
    vals: dict[str, list[float]] = {k: [] for k in basic}
    frame_index: dict[str, list[int]] = {k: [] for k in vals}
    crops_gen: list[np.ndarray] = []
    crops_ref: list[np.ndarray] = []
    face_index: list[int] = []  # evaluated frames whose reference has a face
    aligned_gen: list[np.ndarray] = []
    aligned_ref: list[np.ndarray] = []
    sync_boxes: list[np.ndarray] = []
    want_sync = nets.syncnet_lip is not None and nets.syncnet_audio is not None and audio is not None
    one_shot = iter(generated_frames) is generated_frames  # an iterator cannot be read twice
    kept: list[np.ndarray] = []  # generated frames kept for SyncNet when they cannot be read again
    counts = {"pairs": 0, "evaluated": 0, "skipped_start": 0, "no_face_reference": 0, "no_face_generated": 0}
    size: tuple[int, ...] | None = None
    gen_it, ref_it = iter(generated_frames), iter(reference_frames)
    try:
        i = 0
        while True:
            g = next(gen_it, None)
            r = next(ref_it, None)
            if g is None or r is None:
                if strict and (g is not None or r is not None):
                    longer = "generated" if g is not None else "reference"
                    raise EvaluationError(f"the {longer} sequence is longer than the other (after {i} pairs)")
                break
            g, r = _check_frame(g, "generated", i), _check_frame(r, "reference", i)
            if g.shape != r.shape:
                raise EvaluationError(
                    f"frame {i}: generated frame is {g.shape[1]}x{g.shape[0]} but the reference is "
                    f"{r.shape[1]}x{r.shape[0]}"
                )
            size = size or g.shape
            hw = g.shape[:2]
            if want_sync and one_shot:
                kept.append(g)
            rec_g = fm.detect(g, i)
            box_src = rec_g if rec_g.found else None
            counts["pairs"] += 1
            if i < skip_start:
                counts["skipped_start"] += 1
                rec_r = fm.detect(r, i) if box_src is None else None
                src = box_src or (rec_r if rec_r is not None and rec_r.found else None)
                sync_boxes.append(_syncnet_box(src.points, hw) if src is not None else np.full(4, np.nan))
                i += 1
                continue
            rec_r = fm.detect(r, i)
            counts["evaluated"] += 1
            src = box_src or (rec_r if rec_r.found else None)
            sync_boxes.append(_syncnet_box(src.points, hw) if src is not None else np.full(4, np.nan))
            for k, v in (("psnr_full", psnr(g, r)), ("ssim_full", ssim(g, r))):
                vals[k].append(v)
                frame_index[k].append(i)
            if not rec_r.found:
                counts["no_face_reference"] += 1
                i += 1
                continue
            box = crop_box(rec_r.points, hw[0], hw[1], margin_px)
            if box[1] <= box[0] or box[3] <= box[2]:  # pragma: no cover - FaceLandmarker rejects these
                counts["no_face_reference"] += 1
                i += 1
                continue
            cg, cr = crop_face(g, box), crop_face(r, box)
            for k, v in (("psnr_face", psnr(cg, cr)), ("ssim_face", ssim(cg, cr))):
                vals[k].append(v)
                frame_index[k].append(i)
            face_index.append(i)
            if nets.lpips is not None or nets.fid is not None:
                crops_gen.append(cg)
                crops_ref.append(cr)
            if rec_g.found:
                vals["lip_lmd"].append(lip_lmd(rec_g.points, rec_r.points, hw, margin_px=margin_px))
                frame_index["lip_lmd"].append(i)
            else:
                counts["no_face_generated"] += 1
            if nets.arcface is not None:
                aligned_gen.append(arcface_align(g, rec_r.points))
                aligned_ref.append(arcface_align(r, rec_r.points))
            i += 1
    finally:
        if own:
            fm.close()

    metrics: dict[str, dict | None] = {}
    reasons: dict[str, str] = {}
    no_pairs = "no frame pairs to evaluate"
    if skip_start:
        no_pairs += f" after skipping the first {skip_start}"
    no_face = "no face found by FaceMesh in any evaluated reference frame"
    for k in ("psnr_full", "ssim_full", "psnr_face", "ssim_face", "lip_lmd"):
        metrics[k] = _summary(vals[k])
        if metrics[k] is None:
            if counts["evaluated"] == 0:
                reasons[k] = no_pairs
            elif k == "lip_lmd" and counts["no_face_reference"] < counts["evaluated"]:
                reasons[k] = "no face found by FaceMesh in any generated frame whose reference has one"
            else:
                reasons[k] = no_face
    per: dict[str, Any] = {k: {"frames": frame_index[k], "values": vals[k]} for k in vals}

    # LPIPS
    if nets.lpips is None:
        metrics["lpips"], reasons["lpips"] = None, _no_model("LPIPS", "--lpips-model")
    elif not crops_gen:
        metrics["lpips"], reasons["lpips"] = None, no_face
    else:
        d = lpips_distances(nets.lpips, np.stack(crops_gen), np.stack(crops_ref))
        metrics["lpips"] = _summary(d)
        per["lpips"] = {"frames": face_index, "values": d.tolist()}

    # FID
    if nets.fid is None:
        metrics["fid"], reasons["fid"] = None, _no_model("FID", "--fid-model")
    elif len(crops_gen) < 2:
        metrics["fid"], reasons["fid"] = None, f"FID needs at least 2 face crops, got {len(crops_gen)}"
    else:
        fg, fr = fid_features(nets.fid, np.stack(crops_gen)), fid_features(nets.fid, np.stack(crops_ref))
        value = frechet_distance(*feature_statistics(fg), *feature_statistics(fr))
        metrics["fid"] = {"value": value, "std": None, "n": len(crops_gen), "feature_dim": int(fg.shape[1])}

    # CSIM
    if nets.arcface is None:
        metrics["csim"], reasons["csim"] = None, _no_model("CSIM", "--arcface-model")
    elif not aligned_gen:
        metrics["csim"], reasons["csim"] = None, no_face
    else:
        eg = arcface_embeddings(nets.arcface, np.stack(aligned_gen))
        er = arcface_embeddings(nets.arcface, np.stack(aligned_ref))
        if eg.shape != er.shape:  # pragma: no cover - same network, same batch
            raise EvaluationError(f"{nets.arcface.path}: embeddings of different sizes")
        cs = _cosine(eg, er)
        metrics["csim"] = _summary(cs)
        per["csim"] = {"frames": face_index, "values": cs.tolist()}

    # SyncNet
    sync_keys = ("syncnet_dist", "syncnet_conf")
    reason = None
    if nets.syncnet_lip is None or nets.syncnet_audio is None:
        reason = _no_model("SyncNet", "--syncnet-model (or --syncnet-lip and --syncnet-audio)")
    elif audio is None:
        reason = "SyncNet: no audio (the generated video has no audio track and no --audio was given)"
    elif not sync_boxes or not np.isfinite(np.asarray(sync_boxes, dtype=np.float64)).all(axis=1).any():
        reason = "SyncNet: no face found by FaceMesh in any frame"
    elif min(counts["pairs"], np.asarray(audio).size // SAMPLES_PER_FRAME) < 6:
        reason = "SyncNet: needs at least 6 frames with their audio"
    if reason is not None:
        for k in (*sync_keys, "syncnet_offset"):
            metrics[k], reasons[k] = None, reason
    else:
        boxes = _smooth_boxes(np.asarray(sync_boxes))
        frames = kept if one_shot else generated_frames
        crops = [syncnet_crop(f, boxes[j]) for j, f in zip(range(len(boxes)), frames, strict=False)]
        s = syncnet_score(crops, audio, nets.syncnet_lip, nets.syncnet_audio, vshift=vshift)
        extra = {"windows": s["windows"], "offset": s["offset"]}
        metrics["syncnet_dist"] = {"value": s["dist"], "std": None, "n": s["windows"], **extra}
        metrics["syncnet_conf"] = {"value": s["conf"], "std": None, "n": s["windows"], **extra}
        metrics["syncnet_offset"] = {"value": s["offset"], "std": None, "n": s["windows"]}
        per["syncnet_framewise_conf"] = s["framewise_conf"].tolist()

    out: dict[str, Any] = {
        "metrics": metrics,
        "reasons": reasons,
        "frames": counts,
        "frame_size": [int(size[1]), int(size[0])] if size else None,
        "settings": {
            "face_crop": f"reference FaceMesh inference box, {margin_px} px margin, "
            f"resized to {CROP_SIZE}x{CROP_SIZE}",
            "skip_start": int(skip_start),
            "vshift": int(vshift),
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if per_frame:
        out["per_frame"] = per
    return out


def evaluate_video(
    generated_path: str | Path,
    reference_path: str | Path,
    *,
    audio: str | Path | np.ndarray | None = None,
    skip_start: int = 2,
    max_frames: int | None = None,
    fps: float = FPS,
    landmarker=None,
    networks: Networks | None = None,
    vshift: int = SYNCNET_VSHIFT,
    per_frame: bool = False,
) -> dict:
    """:func:`evaluate_frames` on two video files, both read at ``fps`` and aligned by frame index
    (generated frame p against reference frame p, as many pairs as the shorter video has).

    ``skip_start`` (default 2): the first output frames of an IP_LAP dub repeat frame 2's face
    (IPLAP_FACTS.md section 8.7), so pairs 0 and 1 are left out of the per-frame metrics.
    ``audio`` for SyncNet: a file or 16 kHz mono samples; by default the generated video's own
    audio track (no SyncNet, with a reason, when it has none).
    """
    from engine.core.audio import AudioError, load_audio
    from engine.core.video import probe_video

    gen_info, ref_info = probe_video(generated_path), probe_video(reference_path)
    if (gen_info.width, gen_info.height) != (ref_info.width, ref_info.height):
        raise EvaluationError(
            f"{generated_path} is {gen_info.width}x{gen_info.height} but {reference_path} is "
            f"{ref_info.width}x{ref_info.height}; frames must be aligned pixel for pixel"
        )
    wav = None
    if isinstance(audio, np.ndarray):
        wav = audio
    elif audio is not None:
        wav = load_audio(audio)
    elif gen_info.has_audio and networks is not None and networks.syncnet_lip is not None:
        try:
            wav = load_audio(generated_path)
        except AudioError:
            wav = None
    out = evaluate_frames(
        _Reiterable(generated_path, fps, max_frames),
        _Reiterable(reference_path, fps, max_frames),
        landmarker=landmarker,
        networks=networks,
        audio=wav,
        skip_start=skip_start,
        strict=False,
        vshift=vshift,
        per_frame=per_frame,
    )
    out["inputs"] = {
        "generated": str(generated_path),
        "reference": str(reference_path),
        "audio": "array" if isinstance(audio, np.ndarray) else str(audio or generated_path),
        "fps": fps,
    }
    return out


# ============================================================================================
# Reconstruction evaluation of checkpoints
# ============================================================================================


def _frame_range(
    held_out: tuple[float, float] | None, held_out_frames: tuple[int, int] | None, fps: float
) -> tuple[int, int | None]:
    if held_out is not None and held_out_frames is not None:
        raise EvaluationError("give held_out (seconds) or held_out_frames, not both")
    if held_out is not None:
        s, e = (float(v) for v in held_out)
        a, b = int(round(s * fps)), int(round(e * fps))
    elif held_out_frames is not None:
        a, b = (int(v) for v in held_out_frames)
    else:
        return 0, None
    if a < 0 or b <= a:
        raise EvaluationError(f"empty or negative held-out range: frames {a}..{b}")
    return a, b


def _sub_avatar(avatar, a: int, b: int):
    """The prepared avatar restricted to template frames ``a .. b-1``, with its references chosen
    again among those frames (the authors' rule, IPLAP_FACTS.md section 8.3)."""
    from engine.core.schedule import reference_indices
    from engine.core.sketch import draw_sketches

    sl = slice(a, b)
    lip = avatar.lip[sl]
    boxes = avatar.boxes[sl]
    cfg = avatar.config
    n = b - a
    lm_idx = reference_indices(lip, cfg.n_landmark_refs)
    ref_idx = reference_indices(lip, cfg.resolved_refs(n))
    hw = np.stack([boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]], axis=1)
    full = np.concatenate([avatar.pose[sl], avatar.content[sl]], axis=2)
    offsets = avatar.mask_offsets[a : b + 1]
    report = dataclasses.replace(avatar.report, n_frames=n, n_refs=len(ref_idx))
    return dataclasses.replace(
        avatar,
        report=report,
        frames=avatar.frames[sl],
        points=avatar.points[sl],
        detected=avatar.detected[sl],
        boxes=boxes,
        pose=avatar.pose[sl],
        content=avatar.content[sl],
        lip=lip,
        crops=avatar.crops[sl],
        landmark_ref_idx=lm_idx,
        ref_idx=ref_idx,
        ref_imgs=avatar.crops[sl][ref_idx],
        ref_sketches=draw_sketches(full[ref_idx], hw[ref_idx]),
        mask_flat=avatar.mask_flat[offsets[0] : offsets[-1]],
        mask_offsets=offsets - offsets[0],
    )


def evaluate_checkpoints(
    video: str | Path,
    landmark_checkpoint: str | Path | None = None,
    renderer_checkpoint: str | Path | None = None,
    *,
    held_out: tuple[float, float] | None = None,
    held_out_frames: tuple[int, int] | None = None,
    random_weights: bool = False,
    n_refs: int | str = 25,
    dub_config=None,
    networks: Networks | None = None,
    cache_dir: str | Path | None = None,
    save_video: str | Path | None = None,
    landmarker=None,
    vshift: int = SYNCNET_VSHIFT,
    per_frame: bool = False,
) -> dict:
    """Reconstruction evaluation: dub the held-out part of ``video`` with its own audio, the avatar
    being that part of the video itself, and compare the output with the original frames.

    ``held_out``: ``(start_s, end_s)`` in seconds, or ``held_out_frames``: ``(first, end)`` frame
    indices at 25 fps (end exclusive); neither = the whole video. The video is prepared as an avatar
    (FaceMesh, cached like ``mouthpiece prepare``; ``cache_dir``), restricted to the held-out frames
    with ``n_refs`` renderer references chosen among them; its audio (16 kHz) from
    ``first * 640`` to ``end * 640`` samples drives the dub (:class:`engine.synth.neural.Dubber`, no
    video encoding in between). Output frame p (p >= 2) shows template frame p, so it is compared
    with original frame ``first + p``; frames 0 and 1 repeat frame 2's face and are skipped.
    ``save_video``: also write the dub as an MP4 (with the held-out audio) to look at.
    """
    from engine.core.audio import load_audio, mel_chunks, melspectrogram
    from engine.core.avatar import AvatarConfig, prepare_avatar
    from engine.synth.neural import DubConfig, load_models, make_dubber

    fps = FPS
    a, b = _frame_range(held_out, held_out_frames, fps)
    dub_config = dub_config or DubConfig()
    t0 = time.perf_counter()
    avatar_full = prepare_avatar(video, AvatarConfig(n_refs=n_refs, max_frames=b), cache_dir, landmarker)
    total = avatar_full.n_frames
    b = total if b is None else min(b, total)
    if b - a < 6:
        raise EvaluationError(
            f"{video}: the held-out part has {max(0, b - a)} frame(s) (frames {a}..{b} of {total}); "
            f"at least 6 are needed"
        )
    avatar = _sub_avatar(avatar_full, a, b)
    wav = load_audio(video)[a * SAMPLES_PER_FRAME : b * SAMPLES_PER_FRAME]
    chunks = mel_chunks(melspectrogram(wav), fps=fps)
    prepare_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    lm, net = load_models(landmark_checkpoint, renderer_checkpoint, dub_config.device, random_weights)
    dubber = make_dubber(lm, net, dub_config)
    results = list(dubber.run(avatar, chunks))
    dub_s = time.perf_counter() - t0
    for r in results:
        if r.output_index >= 2 and r.template_index != r.output_index:  # pragma: no cover - schedule fact
            raise EvaluationError(f"output frame {r.output_index} shows template frame {r.template_index}")
    generated = [r.frame for r in results]
    reference = [np.asarray(avatar.frames[r.template_index]) for r in results]

    if save_video is not None:
        from engine.core.video import Mp4Writer

        h, w = avatar.frame_size
        Path(save_video).parent.mkdir(parents=True, exist_ok=True)
        with Mp4Writer(save_video, w, h, fps=fps, audio=wav, audio_rate=16000) as writer:
            for f in generated:
                writer.write(f)

    out = evaluate_frames(
        generated,
        reference,
        landmarker=landmarker,
        networks=networks,
        audio=wav,
        skip_start=2,
        vshift=vshift,
        per_frame=per_frame,
    )
    out["held_out"] = {
        "video": str(video),
        "frames": [a, b],
        "seconds": [a / fps, b / fps],
        "template_frames": b - a,
        "output_frames": len(results),
        "n_refs": int(len(avatar.ref_idx)),
        "note": "frame pair p compares output frame p with original frame first + p",
    }
    out["checkpoints"] = {
        "landmark": None if random_weights else str(getattr(lm, "checkpoint_path", landmark_checkpoint)),
        "renderer": None if random_weights else str(getattr(net, "checkpoint_path", renderer_checkpoint)),
        "random_weights": bool(random_weights),
        "backend": dub_config.backend,
        "dtype": dub_config.dtype,
    }
    out["seconds"] = {"prepare": round(prepare_s, 3), "dub": round(dub_s, 3), "metrics": out["seconds"]}
    if save_video is not None:
        out["saved_video"] = str(save_video)
    return out


# ============================================================================================
# Report and command line
# ============================================================================================


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        return f"{v:.4f}"
    return str(v)


def format_table(result: dict) -> str:
    """A plain-text table of a result dict (null metrics show their reason)."""
    metrics, reasons = result.get("metrics", {}), result.get("reasons", {})
    rows = [("metric", "value", "std", "n", "")]
    for key, label, better in METRICS:
        m = metrics.get(key)
        if m is None:
            rows.append((label, "null", "", "", reasons.get(key, "")))
        else:
            note = better
            if key.startswith("syncnet") and "offset" in m:
                note += f"; AV offset {m['offset']} frames"
            if key == "fid":
                note += f"; {m.get('feature_dim')}-d features, few samples bias FID upwards"
            rows.append((label, _fmt(m["value"]), _fmt(m.get("std")), _fmt(m.get("n")), note))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + ("  " + r[4] if r[4] else "") for r in rows]
    fr = result.get("frames", {})
    lines.append(
        f"frame pairs: {fr.get('pairs', 0)} ({fr.get('evaluated', 0)} evaluated, "
        f"{fr.get('skipped_start', 0)} skipped at the start); "
        f"no face in {fr.get('no_face_reference', 0)} reference and "
        f"{fr.get('no_face_generated', 0)} generated frame(s)"
    )
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else "nan")
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def to_json(result: dict) -> str:
    """Strict JSON (non-finite numbers, e.g. the PSNR of identical frames, become "inf"/"nan")."""
    return json.dumps(_jsonable(result), indent=1, allow_nan=False)


def _range(text: str, kind: type) -> tuple:
    try:
        a, b = text.split(":")
        return kind(a), kind(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the evaluation options to ``parser`` (for ``python -m engine.evaluation`` or a subcommand)."""
    g = parser.add_argument_group(
        "compare two videos",
        "a generated video and the reference it should reproduce, aligned by frame index",
    )
    g.add_argument("--generated", metavar="MP4", help="the generated (dubbed) video")
    g.add_argument("--reference", metavar="MP4", help="the reference video (the ground truth frames)")
    g.add_argument("--audio", metavar="FILE", help="audio for SyncNet (default: the generated video's track)")
    g.add_argument(
        "--skip-start",
        type=int,
        default=2,
        metavar="N",
        help="leave the first N frame pairs out (default 2: an IP_LAP dub repeats frame 2's face there)",
    )
    g.add_argument("--max-frames", type=int, metavar="N", help="read at most N frames of each video")
    c = parser.add_argument_group(
        "reconstruction of a held-out part of a video",
        "dub the held-out frames with their own audio using the checkpoints and compare with the original",
    )
    c.add_argument("--video", metavar="MP4", help="the talking-head video with its own audio")
    c.add_argument(
        "--landmark-checkpoint", metavar="PATH", help="landmark transformer (default: found in checkpoints/)"
    )
    c.add_argument("--renderer-checkpoint", metavar="PATH", help="renderer (default: found in checkpoints/)")
    c.add_argument("--random-weights", action="store_true", help="stand-in weights (machinery only)")
    c.add_argument(
        "--held-out", type=lambda s: _range(s, float), metavar="START:END", help="held-out part in seconds"
    )
    c.add_argument(
        "--held-out-frames",
        type=lambda s: _range(s, int),
        metavar="FIRST:END",
        help="held-out part as 25 fps frame indices (END exclusive)",
    )
    c.add_argument("--refs", default="25", help="renderer reference images N, or 'auto' for L/5 (default 25)")
    c.add_argument("--batch", type=int, default=4, help="windows per model call (default 4)")
    c.add_argument("--backend", default="fast", help="renderer backend: fast, plain, cuda-graph, onnx")
    c.add_argument("--dtype", default="fp32", help="renderer precision: fp32, fp16, bf16")
    c.add_argument("--cache-dir", metavar="DIR", help="avatar cache folder (default: the user cache)")
    c.add_argument("--save-video", metavar="MP4", help="also write the dubbed held-out part here")
    n = parser.add_argument_group("optional metric networks", f"files you supply; see {DOCS}")
    n.add_argument("--lpips-model", metavar="FILE", help="LPIPS network (.pt TorchScript or .onnx)")
    n.add_argument("--fid-model", metavar="FILE", help="Inception-v3 pool3 feature network for FID")
    n.add_argument("--arcface-model", metavar="FILE", help="ArcFace embedding network for CSIM")
    n.add_argument("--syncnet-model", metavar="FILE", help="SyncNet TorchScript with forward_lip/forward_aud")
    n.add_argument("--syncnet-lip", metavar="FILE", help="SyncNet lip (video) network (with --syncnet-audio)")
    n.add_argument("--syncnet-audio", metavar="FILE", help="SyncNet audio network (with --syncnet-lip)")
    n.add_argument("--vshift", type=int, default=SYNCNET_VSHIFT, help="SyncNet offsets searched: +-N frames")
    o = parser.add_argument_group("output")
    o.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    o.add_argument("--json", metavar="PATH", help="also write the result as JSON ('-' for stdout)")
    o.add_argument("--per-frame", action="store_true", help="include per-frame values in the JSON")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run the evaluation the parsed options ask for, print the table; returns the exit status."""
    compare = args.generated is not None or args.reference is not None
    recon = args.video is not None
    if compare == recon:
        raise EvaluationError(
            "give either --generated and --reference (compare two videos) or --video (reconstruction "
            "of a held-out part with checkpoints)"
        )
    if compare and (args.generated is None or args.reference is None):
        raise EvaluationError("--generated and --reference go together")
    nets = load_networks(
        lpips=args.lpips_model,
        fid=args.fid_model,
        arcface=args.arcface_model,
        syncnet=args.syncnet_model,
        syncnet_lip=args.syncnet_lip,
        syncnet_audio=args.syncnet_audio,
        device=args.device,
    )
    if compare:
        result = evaluate_video(
            args.generated,
            args.reference,
            audio=args.audio,
            skip_start=args.skip_start,
            max_frames=args.max_frames,
            networks=nets,
            vshift=args.vshift,
            per_frame=args.per_frame,
        )
        title = f"{args.generated} against {args.reference}"
    else:
        from engine.synth.neural import DubConfig

        refs = args.refs if args.refs == "auto" else int(args.refs)
        result = evaluate_checkpoints(
            args.video,
            args.landmark_checkpoint,
            args.renderer_checkpoint,
            held_out=args.held_out,
            held_out_frames=args.held_out_frames,
            random_weights=args.random_weights,
            n_refs=refs,
            dub_config=DubConfig(
                batch=args.batch, device=args.device, backend=args.backend, dtype=args.dtype
            ),
            networks=nets,
            cache_dir=args.cache_dir,
            save_video=args.save_video,
            vshift=args.vshift,
            per_frame=args.per_frame,
        )
        a, b = result["held_out"]["frames"]
        title = f"reconstruction of {args.video}, frames {a}..{b} ({a / FPS:.2f}-{b / FPS:.2f} s)"
    text = to_json(result)
    if args.json == "-":
        print(text)
    else:
        print(title)
        print(format_table(result))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n")
            print(f"wrote {args.json}")
    return 0
