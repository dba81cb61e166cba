"""ONNX Runtime backends: the renderer (behind the ``engine.synth.backends`` interface) and the landmark
generator, from graphs written by ``models/onnx_export.py``.

Renderer: two graphs. The reference encoder (``ref_imgs``, ``ref_sketches`` -> the bank) runs once
in :meth:`OnnxRenderer.set_references`; its three outputs stay with the session (as ``OrtValue``s on
the session's device) and feed every :meth:`OnnxRenderer.render` call of the per-frame graph.
Neither needs torch weights at render time. Build it either

* from files: ``OnnxRenderer(render_path, encoder_path, device="cpu")``, or
* from a loaded torch model: ``OnnxRenderer.from_torch(model, cache_dir=None, source_sha256=None)``
  exports both graphs (N dynamic, so once per model, not per avatar). With ``cache_dir`` and
  ``source_sha256`` the files are kept there as ``renderer-<sha16>.onnx`` /
  ``reference_encoder-<sha16>.onnx`` and reused while their metadata (format version, checkpoint
  hash, fold settings) matches; otherwise they go to a temporary folder that is removed as soon as
  the sessions are built (ONNX Runtime keeps the graphs in memory).

A renderer graph exported with a fixed N (``export_renderer(..., n_refs=N)``) accepts only banks of
N references; :meth:`OnnxRenderer.set_references` checks that and raises ``ValueError``. All inputs
are validated against the graph's declared shapes before ONNX Runtime sees them.

Inputs may be torch tensors (any device, any float dtype) or numpy arrays; they are passed as
contiguous float32. Outputs are float32 torch tensors on the CPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

GPU_HINT = "install mouthpiece[gpu] (onnxruntime-gpu)"


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - a hard dependency, but give a clear message
        raise ImportError("the ONNX backend needs onnxruntime: pip install onnxruntime") from e
    return ort


def providers(device: str | torch.device = "cpu", tensorrt: bool = False) -> list:
    """ONNX Runtime execution providers for ``device``.

    ``"cpu"`` -> ``["CPUExecutionProvider"]``; ``"cuda"`` / ``"cuda:K"`` -> TensorRT (only with
    ``tensorrt=True`` and when available), CUDA, then CPU as fallback, with ``device_id`` K.
    Raises ``RuntimeError`` when CUDA is asked for but this onnxruntime build has no CUDA provider.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        return ["CPUExecutionProvider"]
    if dev.type != "cuda":
        raise ValueError(f"unsupported device {str(device)!r} for the ONNX backend; use 'cpu' or 'cuda'")
    available = _ort().get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(
            f"device {str(device)!r} requested, but this onnxruntime build has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); {GPU_HINT}"
        )
    options = {"device_id": dev.index or 0}
    out: list = []
    if tensorrt and "TensorrtExecutionProvider" in available:
        out.append(("TensorrtExecutionProvider", dict(options)))
    out.append(("CUDAExecutionProvider", dict(options)))
    out.append("CPUExecutionProvider")
    return out


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def session_options(threads: int | None = None):
    """Graph optimisation ALL, intra-op threads = available cores (or ``threads``), quiet logging."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or available_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only
    return opts


def _array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    elif not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a torch tensor or numpy array, got {type(x).__name__}")
    return np.ascontiguousarray(x, dtype=np.float32)


class _Session:
    """An ``InferenceSession`` plus its metadata and shape checks against the declared inputs."""

    def __init__(
        self,
        path: str | os.PathLike,
        kind: str | None,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        tensorrt: bool = False,
    ):
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        self.sess = ort.InferenceSession(
            str(self.path), session_options(threads), providers=providers(device, tensorrt)
        )
        self.metadata = dict(self.sess.get_modelmeta().custom_metadata_map)
        if kind is not None and self.metadata.get("kind") != kind:
            raise ValueError(
                f"{self.path}: expected an exported {kind} graph, got kind={self.metadata.get('kind')!r}"
            )
        self.inputs = {i.name: i.shape for i in self.sess.get_inputs()}
        self.output_names = [o.name for o in self.sess.get_outputs()]
        dev = torch.device(device)
        self.ort_device = ("cuda", dev.index or 0) if dev.type == "cuda" else ("cpu", 0)

    def check(self, arrays: dict[str, np.ndarray], dims: dict[str, int] | None = None) -> dict[str, int]:
        """Raise ValueError unless every array matches its declared shape, with symbolic dimensions
        (``B``, ``N``) consistent across arrays (and with ``dims`` when given). Returns the dims."""
        dims = dict(dims or {})
        for name, arr in arrays.items():
            want = self.inputs[name]
            shown = "(" + ", ".join(str(d) for d in want) + ")"
            if arr.ndim != len(want):
                raise ValueError(f"{name}: expected shape {shown}, got {tuple(arr.shape)}")
            for axis, (w, got) in enumerate(zip(want, arr.shape, strict=True)):
                if isinstance(w, int) and w >= 0:
                    if got != w:
                        raise ValueError(
                            f"{name}: expected shape {shown}, got {tuple(arr.shape)} (axis {axis})"
                        )
                elif isinstance(w, str):
                    if got < 1:
                        raise ValueError(f"{name}: axis {axis} ({w}) is empty: {tuple(arr.shape)}")
                    if dims.setdefault(w, got) != got:
                        raise ValueError(
                            f"{name}: axis {axis} ({w}) is {got}, but other inputs have {w}={dims[w]}"
                        )
        return dims

    def ortvalue(self, arr: np.ndarray):
        kind, index = self.ort_device
        return _ort().OrtValue.ortvalue_from_numpy(arr, kind, index)


class OnnxRenderer:
    """The renderer backend on ONNX Runtime (see the module docstring).

    backend = OnnxRenderer("renderer.onnx", "reference_encoder.onnx")
    backend.set_references(ref_imgs, ref_sketches)  # (N, 3, 128, 128) each
    faces = backend.render(faces, target_sketches, mels)  # (B, 3, 128, 128) float32, CPU
    """

    name = "onnx"

    def __init__(
        self,
        render_path: str | os.PathLike,
        encoder_path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        tensorrt: bool = False,
    ):
        from models.onnx_export import ONNX_FORMAT_VERSION, REFERENCE_ENCODER_ONNX, RENDERER_ONNX

        self.device = torch.device("cpu")  # where outputs are returned
        self.ort_device = torch.device(device)
        self._render = _Session(render_path, RENDERER_ONNX, device, threads, tensorrt)
        self._encoder = (
            _Session(encoder_path, REFERENCE_ENCODER_ONNX, device, threads, tensorrt)
            if encoder_path is not None
            else None
        )
        for s in (self._render, self._encoder):
            if s is not None and s.metadata.get("mouthpiece_format") != ONNX_FORMAT_VERSION:
                raise ValueError(
                    f"{s.path}: ONNX format {s.metadata.get('mouthpiece_format')!r}, this mouthpiece "
                    f"reads {ONNX_FORMAT_VERSION!r}; export it again"
                )
        n = self._render.metadata.get("n_refs", "dynamic")
        self.n_refs: int | None = None if n == "dynamic" else int(n)
        self._bank: dict | None = None
        self._bank_n: int | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._render.metadata)

    @classmethod
    def from_torch(
        cls,
        model,
        cache_dir: str | os.PathLike | None = None,
        source_sha256: str | None = None,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        tensorrt: bool = False,
        fold_translation: bool = True,
    ) -> OnnxRenderer:
        """Export ``model`` (a ``models.Renderer``) and build the backend (see the module docstring
        for where the files go). Exporting takes ~10-20 s on a CPU."""
        from models.onnx_export import (
            ONNX_FORMAT_VERSION,
            export_reference_encoder,
            export_renderer,
            read_metadata,
        )

        def fresh(path: Path) -> bool:
            if not path.is_file():
                return False
            try:
                meta = read_metadata(path)
            except Exception:
                return False
            want = {"mouthpiece_format": ONNX_FORMAT_VERSION, "source_sha256": source_sha256}
            if meta.get("kind") == "renderer":
                want |= {"n_refs": "dynamic", "fold_translation": str(fold_translation)}
            return all(meta.get(k) == v for k, v in want.items())

        def build(folder: Path, tag: str) -> OnnxRenderer:
            render = folder / f"renderer{tag}.onnx"
            encoder = folder / f"reference_encoder{tag}.onnx"
            if not fresh(render):
                export_renderer(model, render, source_sha256=source_sha256, fold_translation=fold_translation)
            if not fresh(encoder):
                export_reference_encoder(model, encoder, source_sha256=source_sha256)
            return cls(render, encoder, device, threads, tensorrt)

        if cache_dir is not None and source_sha256:
            folder = Path(cache_dir)
            folder.mkdir(parents=True, exist_ok=True)
            return build(folder, f"-{source_sha256[:16]}")
        tmp = Path(tempfile.mkdtemp(prefix="mouthpiece-onnx-"))
        try:
            return build(tmp, "")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- references -------------------------------------------------------------------------------

    def set_references(self, ref_imgs, ref_sketches) -> None:
        """Encode the N references (N, 3, 128, 128) with the encoder graph into the bank."""
        if self._encoder is None:
            raise RuntimeError(
                "this OnnxRenderer has no reference encoder graph: pass encoder_path, or give the bank "
                "with set_bank()"
            )
        imgs, sketches = _array(ref_imgs, "ref_imgs"), _array(ref_sketches, "ref_sketches")
        if imgs.shape != sketches.shape:
            raise ValueError(f"references must be (N, 3, H, W) pairs, got {imgs.shape} and {sketches.shape}")
        dims = self._encoder.check({"ref_imgs": imgs, "ref_sketches": sketches})
        self._check_n(dims["N"] if "N" in dims else imgs.shape[0])
        hi, h2, h2_norm = self._encoder.sess.run(None, {"ref_imgs": imgs, "ref_sketches": sketches})
        self.set_bank(hi, h2, h2_norm)

    def set_bank(self, bank_hi, bank_h2, bank_h2_norm) -> None:
        """Use a precomputed bank (``ReferenceBank.hi``, ``.h2``, ``.h2_norm`` of
        ``FastRenderer.encode_references``, or the encoder graph's outputs)."""
        arrays = {
            "bank_hi": _array(bank_hi, "bank_hi"),
            "bank_h2": _array(bank_h2, "bank_h2"),
            "bank_h2_norm": _array(bank_h2_norm, "bank_h2_norm"),
        }
        n = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
        if len(n) != 1:
            shapes = {k: tuple(a.shape) for k, a in arrays.items()}
            raise ValueError(f"bank tensors disagree on the number of references N: {shapes}")
        self._check_n(n.pop())
        dims = self._render.check(arrays)
        self._bank = {k: self._render.ortvalue(a) for k, a in arrays.items()}
        self._bank_n = dims.get("N", arrays["bank_h2"].shape[0])

    def _check_n(self, n: int) -> None:
        if self.n_refs is not None and n != self.n_refs:
            raise ValueError(
                f"{self._render.path} was exported for N={self.n_refs} references, got N={n}; "
                "export it with n_refs=None (dynamic) or for this N"
            )

    # -- frames -----------------------------------------------------------------------------------

    def render(self, faces, target_sketches, mels) -> torch.Tensor:
        """faces (B, 3, 128, 128), target_sketches (B, 5, 3, 128, 128), mels (B, 1, 80, 16) ->
        generated faces (B, 3, 128, 128) float32 on the CPU."""
        if self._bank is None:
            raise RuntimeError("set_references() must be called before render()")
        arrays = {
            "face": _array(faces, "faces"),
            "target_sketches": _array(target_sketches, "target_sketches"),
            "mel": _array(mels, "mels"),
        }
        self._render.check(arrays)
        sess = self._render.sess
        binding = sess.io_binding()
        for name, value in self._bank.items():
            binding.bind_ortvalue_input(name, value)
        for name, arr in arrays.items():
            binding.bind_cpu_input(name, arr)
        binding.bind_output("generated", "cpu")
        sess.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0])


class OnnxLandmarkGenerator:
    """``LandmarkGenerator.forward`` on ONNX Runtime: (mels (B, 5, 1, 80, 16), pose (B, 5, 2, 74),
    ref_pose (B, 15, 2, 74), ref_content (B, 15, 2, 57)) -> content (B*5, 2, 57) float32 on the CPU."""

    name = "onnx"

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        tensorrt: bool = False,
    ):
        from models.onnx_export import LANDMARK_INPUTS, LANDMARK_ONNX, ONNX_FORMAT_VERSION

        self._sess = _Session(path, LANDMARK_ONNX, device, threads, tensorrt)
        if self._sess.metadata.get("mouthpiece_format") != ONNX_FORMAT_VERSION:
            raise ValueError(
                f"{path}: unsupported ONNX format {self._sess.metadata.get('mouthpiece_format')!r}"
            )
        self._names: Sequence[str] = LANDMARK_INPUTS
        self.device = torch.device("cpu")

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._sess.metadata)

    @classmethod
    def from_torch(cls, model, device: str | torch.device = "cpu", threads: int | None = None):
        """Export ``model`` to a temporary file and load it (the file is removed again)."""
        from models.onnx_export import export_landmark_generator

        tmp = Path(tempfile.mkdtemp(prefix="mouthpiece-onnx-"))
        try:
            return cls(export_landmark_generator(model, tmp / "landmark_generator.onnx"), device, threads)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def __call__(self, mels, pose, ref_pose, ref_content) -> torch.Tensor:
        arrays = {
            n: _array(x, n) for n, x in zip(self._names, (mels, pose, ref_pose, ref_content), strict=True)
        }
        self._sess.check(arrays)
        (content,) = self._sess.sess.run(None, arrays)
        return torch.from_numpy(content)

    forward = __call__
