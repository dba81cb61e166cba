"""The metrics that need a network the user supplies as a file (TorchScript or ONNX, never
downloaded): loading with contract checks (:func:`load_network`, :func:`load_networks`), LPIPS,
FID (Inception features and the Fréchet distance) and CSIM (ArcFace alignment and embeddings).
A file that cannot be loaded or returns the wrong shape is an :class:`EvaluationError` naming it;
the input/output contract of each network is in docs/evaluation.md."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.core.landmark_sets import EDGES
from engine.evaluation.common import DOCS, EvaluationError, mesh_pixels

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

_RIGHT_EYE_MP = np.array(sorted({p for e in EDGES["right_eye"] for p in e}), dtype=np.int64)
_LEFT_EYE_MP = np.array(sorted({p for e in EDGES["left_eye"] for p in e}), dtype=np.int64)
_NOSE_TIP_MP = 1
_MOUTH_CORNERS_MP = (61, 291)


# ---- Fréchet distance (FID)


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


# ---- Loading user-supplied networks


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


# ---- LPIPS, FID features, CSIM


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
    p = mesh_pixels(points, frame_hw)
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


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of two (N, D) arrays -> (N,) (norm product floored at 1e-12)."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)
