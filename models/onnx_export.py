"""ONNX export of the IP_LAP networks for the ONNX Runtime backend (``engine/onnx_backend.py``).

Three graphs, all float32, opset 17 by default, exported with PyTorch's TorchScript-based exporter
(``dynamo=False``; the ``torch.export`` one needs ``onnxscript``, which is not a dependency):

* ``export_landmark_generator``: ``LandmarkGenerator.forward`` with a dynamic batch axis,
  ``mels`` (B, 5, 1, 80, 16), ``pose`` (B, 5, 2, 74), ``ref_pose`` (B, 15, 2, 74),
  ``ref_content`` (B, 15, 2, 57) -> ``content`` (B*5, 2, 57). Exported with PyTorch's fused
  ``TransformerEncoder`` fast path switched off, so the graph holds the standard attention maths
  (MatMul, Softmax, LayerNormalization); the export checks that only standard ONNX ops appear.
* ``export_renderer``: ``FastRenderer.forward`` with the reference bank as inputs,
  ``bank_hi`` (N, 35, 128, 128), ``bank_h2`` (N, 256, 64, 64), ``bank_h2_norm`` (N, 256, 64, 64),
  ``face`` (B, 3, 128, 128), ``target_sketches`` (B, 5, 3, 128, 128), ``mel`` (B, 1, 80, 16)
  -> ``generated`` (B, 3, 128, 128). B is dynamic; N is dynamic by default (one graph serves
  every avatar; the export verifies it at another N and B than it traced with) or fixed with
  ``n_refs=N``.
* ``export_reference_encoder``: ``FastRenderer.encode_references``, ``ref_imgs`` and
  ``ref_sketches`` (N, 3, 128, 128) -> ``bank_hi``, ``bank_h2``, ``bank_h2_norm``, N dynamic. With
  it the ONNX backend needs no torch weights at render time.

Each file carries ``metadata_props`` (see :data:`METADATA_KEYS`): the network kind, the mouthpiece
ONNX format version, N (``"dynamic"`` or a number), the source checkpoint's sha256 when given, and
the exporting torch version. :func:`read_metadata` reads them back. Exports are written to a
temporary name and renamed, pass ``onnx.checker``, are verified numerically against the torch
module with ONNX Runtime (``verify=True``), and print nothing.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fast_renderer import FastRenderer, Modulation, ReferenceBank, SharedModulation
from .landmark_generator import LandmarkGenerator
from .renderer import Renderer

#: Version of the graph interface (input/output names, layouts) written to every export.
ONNX_FORMAT_VERSION = "1"
DEFAULT_OPSET = 17

LANDMARK_ONNX = "landmark_generator"
RENDERER_ONNX = "renderer"
REFERENCE_ENCODER_ONNX = "reference_encoder"

IMAGE_SIZE = 128
BANK_CHANNELS = {"bank_hi": 35, "bank_h2": 256, "bank_h2_norm": 256}

LANDMARK_INPUTS = ("mels", "pose", "ref_pose", "ref_content")
LANDMARK_OUTPUTS = ("content",)
BANK_NAMES = ("bank_hi", "bank_h2", "bank_h2_norm")
RENDERER_INPUTS = (*BANK_NAMES, "face", "target_sketches", "mel")
RENDERER_OUTPUTS = ("generated",)
ENCODER_INPUTS = ("ref_imgs", "ref_sketches")

METADATA_KEYS = (
    "mouthpiece_format",  # ONNX_FORMAT_VERSION
    "kind",  # landmark_generator | renderer | reference_encoder
    "n_refs",  # "dynamic" or the fixed N (renderer); "dynamic" (reference encoder)
    "source_sha256",  # sha256 of the source checkpoint, "" when not given
    "fold_alignment",  # renderer/encoder: FastRenderer settings the graph was traced with
    "fold_translation",
    "image_size",
    "torch_version",
)

# Standard-domain ops only: a fused PyTorch kernel or an ATen fallback would show up as another domain.
_STANDARD_DOMAINS = {"", "ai.onnx"}


class OnnxExportError(RuntimeError):
    """The exported graph is not usable (non-standard ops, or outputs that differ from torch)."""


# ---------------------------------------------------------------------------------------------------
# Tracing helpers


class _TraceableModulation(SharedModulation):
    """``SharedModulation`` with the folded path's border correction written out of place.

    The eager code subtracts the corrections from the border rows and columns in place; traced, each
    of those becomes a ``ScatterND`` that copies the whole (B, L*2C, h, w) map (~9% of the ONNX
    Runtime frame time at N = 5 on CPU). Here the border rows, then the border columns, are
    recomputed and concatenated back: the same subtractions of the same values in the same order
    (top, bottom, left, right), so the same numbers, with two copies instead of eight.
    """

    def __init__(self, base: SharedModulation):
        super().__init__(base.layers, base.fold)

    def __call__(self, m: torch.Tensor) -> list[Modulation]:
        if not self.fold:
            return super().__call__(m)
        k, bias, w1, b1, wg = self._folded()
        g = len(self.layers)
        out = F.conv2d(m, k, bias, padding=2)  # (B, L*2C, h, w)
        top = F.conv2d(m[..., :1, :], w1[:, :, 2:3, :], b1, padding=(0, 2))
        bottom = F.conv2d(m[..., -1:, :], w1[:, :, 0:1, :], b1, padding=(0, 2))
        left = F.conv2d(m[..., :, :1], w1[:, :, :, 2:3], b1, padding=(1, 0))
        right = F.conv2d(m[..., :, -1:], w1[:, :, :, 0:1], b1, padding=(1, 0))
        rows = [
            out[..., :1, :] - F.conv2d(top, wg[:, :, 0:1, :], groups=g),
            out[..., 1:-1, :],
            out[..., -1:, :] - F.conv2d(bottom, wg[:, :, 2:3, :], groups=g),
        ]
        out = torch.cat(rows, dim=-2)
        cols = [
            out[..., :, :1] - F.conv2d(left, wg[:, :, :, 0:1], padding=(1, 0), groups=g),
            out[..., :, 1:-1],
            out[..., :, -1:] - F.conv2d(right, wg[:, :, :, 2:3], padding=(1, 0), groups=g),
        ]
        gamma_beta = torch.cat(cols, dim=-1).unflatten(1, (g, 2, -1))  # (B, L, 2, C, h, w)
        return [(gamma_beta[:, i, 0], gamma_beta[:, i, 1]) for i in range(g)]


@contextlib.contextmanager
def _export_context() -> Iterator[None]:
    """No grad, no TransformerEncoder fast path, no exporter warnings."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` for the block, then every submodule's own mode restored."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=gen)


def _param(module: nn.Module) -> torch.Tensor:
    return next(module.parameters())


def _trace_to_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
):
    import onnx

    buf = io.BytesIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(
            module,
            args,
            buf,
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    domains = {n.domain for n in model.graph.node} - _STANDARD_DOMAINS
    if domains:
        raise OnnxExportError(f"exported graph uses non-standard op domains {sorted(domains)}")
    return model


def _finish(model, path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Attach metadata, run the checker and write atomically."""
    import onnx

    del model.metadata_props[:]
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _metadata(kind: str, source_sha256: str | None, **extra) -> dict[str, str]:
    meta = {
        "mouthpiece_format": ONNX_FORMAT_VERSION,
        "kind": kind,
        "source_sha256": source_sha256 or "",
        "torch_version": torch.__version__,
    }
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def _verify(model, feeds: list[tuple[torch.Tensor, ...]], run_torch, names, atol: float, what: str) -> None:
    """Run the graph with ONNX Runtime on ``feeds`` and compare with ``run_torch(*feed)``: max abs
    difference <= ``atol`` times max(1, max abs value) per output (the bank's instance-normalised
    features reach ~50)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures surface as the exception below, not as log lines
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for feed in feeds:
        shapes = [tuple(t.shape) for t in feed]
        try:
            got = sess.run(None, {n: t.numpy() for n, t in zip(names, feed, strict=True)})
        except Exception as e:  # e.g. a size baked into the graph at trace time
            raise OnnxExportError(f"{what}: the exported graph fails at input shapes {shapes}: {e}") from e
        with torch.no_grad():
            want = run_torch(*feed)
        want = want if isinstance(want, (tuple, list)) else (want,)
        for g, w in zip(got, want, strict=True):
            w = w.float().numpy()
            if g.shape != w.shape:
                raise OnnxExportError(f"{what}: ONNX output shape {g.shape}, torch {w.shape}")
            diff = float(abs(g.astype("float64") - w.astype("float64")).max())
            if not diff <= atol * max(1.0, float(abs(w).max())):  # relative for large values
                raise OnnxExportError(f"{what}: ONNX differs from torch by {diff:.3g} (> {atol}) at {shapes}")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading the weights into memory twice)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


# ---------------------------------------------------------------------------------------------------
# Landmark generator


def export_landmark_generator(
    model: LandmarkGenerator,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    source_sha256: str | None = None,
    verify: bool = True,
) -> Path:
    """Export ``model`` (float32, any device: a CPU copy is traced) to ``path``; returns the path.

    Inputs ``mels`` (B, T, 1, 80, 16), ``pose`` (B, T, 2, 74), ``ref_pose`` (B, Nl, 2, 74),
    ``ref_content`` (B, Nl, 2, 57) with T and Nl fixed by the config (5, 15) and B dynamic;
    output ``content`` (B*T, 2, 57).
    """
    cfg = model.cfg
    cpu = _cpu_float(model)
    gen = torch.Generator().manual_seed(0)

    def example(b: int) -> tuple[torch.Tensor, ...]:
        return (
            _rand(gen, b, cfg.T, 1, 80, 16) * 8 - 4,
            _rand(gen, b, cfg.T, 2, 74),
            _rand(gen, b, cfg.n_ref, 2, 74),
            _rand(gen, b, cfg.n_ref, 2, 57),
        )

    dynamic = {name: {0: "B"} for name in LANDMARK_INPUTS} | {"content": {0: "B_times_T"}}
    with _eval_mode(cpu), _export_context():
        onnx_model = _trace_to_onnx(cpu, example(2), LANDMARK_INPUTS, LANDMARK_OUTPUTS, dynamic, opset)
        if verify:  # another batch size than traced: catches sizes baked into the graph
            _verify(onnx_model, [example(1), example(3)], cpu, LANDMARK_INPUTS, 1e-4, "landmark generator")
    meta = _metadata(LANDMARK_ONNX, source_sha256, T=cfg.T, n_ref_landmarks=cfg.n_ref)
    return _finish(onnx_model, path, meta)


# ---------------------------------------------------------------------------------------------------
# Renderer


class _BankRenderer(nn.Module):
    """``FastRenderer.forward`` with the bank's three tensors as separate inputs."""

    def __init__(self, fast: FastRenderer):
        super().__init__()
        self.fast = fast

    def forward(self, bank_hi, bank_h2, bank_h2_norm, face, target_sketches, mel):
        c = bank_hi.shape[1] - 3
        bank = ReferenceBank(bank_hi, bank_hi[:, :c], bank_hi[:, c:], bank_h2, bank_h2_norm)
        return self.fast(bank, face, target_sketches, mel)


class _ReferenceEncoder(nn.Module):
    def __init__(self, fast: FastRenderer):
        super().__init__()
        self.fast = fast

    def forward(self, ref_imgs, ref_sketches):
        bank = self.fast.encode_references(ref_imgs, ref_sketches)
        return bank.hi, bank.h2, bank.h2_norm


def _cpu_float(module: nn.Module) -> nn.Module:
    """``module`` itself when it is float32 on the CPU, else a float32 CPU copy."""
    p = _param(module)
    if p.device.type == "cpu" and p.dtype == torch.float32:
        return module
    return copy.deepcopy(module).to("cpu", torch.float32)


def _fast_renderer(renderer: Renderer | FastRenderer, fold_translation: bool) -> FastRenderer:
    """A new float32 CPU FastRenderer (sharing the modules, or on a float32 CPU copy of them)."""
    if isinstance(renderer, FastRenderer):
        fold_alignment, fold_translation = renderer.fold_alignment, renderer.fold_translation
    elif isinstance(renderer, Renderer):
        fold_alignment = True
    else:
        raise TypeError(f"expected a models.Renderer or FastRenderer, got {type(renderer).__name__}")
    # FastRenderer(x) only reads x.flow_module and x.translation, which both classes have.
    return FastRenderer(_cpu_float(renderer), fold_alignment, fold_translation)


def _traceable(fast: FastRenderer) -> FastRenderer:
    """``fast`` (a private instance) with out-of-place folded modulations for tracing."""
    for attr in ("_mod_half", "_mod_full", "_mod_h1", "_mod_ref"):
        setattr(fast, attr, _TraceableModulation(getattr(fast, attr)))
    return fast


def _bank_example(fast: FastRenderer, gen: torch.Generator, n: int) -> tuple[torch.Tensor, ...]:
    s = IMAGE_SIZE
    bank = fast.encode_references(_rand(gen, n, 3, s, s), _rand(gen, n, 3, s, s))
    return bank.hi, bank.h2, bank.h2_norm


def _frame_example(gen: torch.Generator, b: int) -> tuple[torch.Tensor, ...]:
    s = IMAGE_SIZE
    return _rand(gen, b, 3, s, s), _rand(gen, b, 5, 3, s, s), _rand(gen, b, 1, 80, 16) * 8 - 4


def export_renderer(
    renderer: Renderer | FastRenderer,
    path: str | os.PathLike,
    n_refs: int | None = None,
    opset: int = DEFAULT_OPSET,
    source_sha256: str | None = None,
    fold_translation: bool = True,
    verify: bool = True,
) -> Path:
    """Export the renderer's per-frame pass (``FastRenderer.forward`` on a bank) to ``path``.

    ``renderer``: a :class:`models.Renderer` (wrapped as ``FastRenderer(renderer, fold_alignment=True,
    fold_translation=fold_translation)``) or a :class:`FastRenderer` (its own settings are used).
    ``n_refs=None`` (default) exports N as a dynamic axis (metadata ``n_refs="dynamic"``); an int
    fixes N in the graph. B is always dynamic. The bank comes from :func:`export_reference_encoder`'s
    graph or ``FastRenderer.encode_references``.
    """
    if n_refs is not None and (not isinstance(n_refs, int) or n_refs < 1):
        raise ValueError(f"n_refs must be a positive int or None (dynamic), got {n_refs!r}")
    fast = _fast_renderer(renderer, fold_translation)
    traced = _traceable(_fast_renderer(fast, fold_translation))  # same modules, traceable modulations
    gen = torch.Generator().manual_seed(0)
    trace_n = n_refs if n_refs is not None else 2
    with _eval_mode(fast), _export_context():
        bank = _bank_example(fast, gen, trace_n)
        frames = _frame_example(gen, 2)
        wrapper = _BankRenderer(traced).eval()  # eval: the exporter restores the wrapper's mode afterwards
        wrapper(*bank, *frames)  # eager call: builds the cached grids and folded kernels
        n_axis = {0: "N"} if n_refs is None else {}
        dynamic = {name: n_axis for name in BANK_NAMES if n_axis}
        dynamic |= {name: {0: "B"} for name in ("face", "target_sketches", "mel", "generated")}
        onnx_model = _trace_to_onnx(
            wrapper, (*bank, *frames), RENDERER_INPUTS, RENDERER_OUTPUTS, dynamic, opset
        )
    if verify:  # the original FastRenderer code as reference, at another B (and N) than traced
        with _eval_mode(fast), _export_context():
            feeds = [(*_bank_example(fast, gen, 1 if n_refs is None else n_refs), *_frame_example(gen, 1))]
            if n_refs is None:
                feeds.append((*_bank_example(fast, gen, 3), *_frame_example(gen, 3)))
            _verify(onnx_model, feeds, _BankRenderer(fast), RENDERER_INPUTS, 1e-4, "renderer")
    meta = _metadata(
        RENDERER_ONNX,
        source_sha256,
        n_refs="dynamic" if n_refs is None else n_refs,
        fold_alignment=fast.fold_alignment,
        fold_translation=fast.fold_translation,
        image_size=IMAGE_SIZE,
    )
    return _finish(onnx_model, path, meta)


def export_reference_encoder(
    renderer: Renderer | FastRenderer,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    source_sha256: str | None = None,
    verify: bool = True,
) -> Path:
    """Export ``FastRenderer.encode_references``: ``ref_imgs``, ``ref_sketches`` (N, 3, 128, 128) ->
    ``bank_hi`` (N, 35, 128, 128), ``bank_h2``, ``bank_h2_norm`` (N, 256, 64, 64); N dynamic."""
    fast = _fast_renderer(renderer, fold_translation=True)  # folding does not affect the encoder
    gen = torch.Generator().manual_seed(0)
    s = IMAGE_SIZE
    dynamic = {name: {0: "N"} for name in (*ENCODER_INPUTS, *BANK_NAMES)}
    with _eval_mode(fast), _export_context():
        wrapper = _ReferenceEncoder(fast).eval()  # eval: the exporter restores the wrapper's mode afterwards
        example = (_rand(gen, 2, 3, s, s), _rand(gen, 2, 3, s, s))
        onnx_model = _trace_to_onnx(wrapper, example, ENCODER_INPUTS, BANK_NAMES, dynamic, opset)
        if verify:
            feeds = [(_rand(gen, n, 3, s, s), _rand(gen, n, 3, s, s)) for n in (1, 3)]
            _verify(onnx_model, feeds, wrapper, ENCODER_INPUTS, 1e-4, "reference encoder")
    meta = _metadata(REFERENCE_ENCODER_ONNX, source_sha256, n_refs="dynamic", image_size=IMAGE_SIZE)
    return _finish(onnx_model, path, meta)
