"""Synthesis: windows of a prepared avatar become frames (:mod:`engine.synth.base` is the seam).

:func:`make_synthesizer` makes the one a caller names: ``neural`` (IP_LAP: transformer, sketches, a
renderer backend; :mod:`engine.synth.neural`), ``preview`` (the CPU preview renderer;
:mod:`engine.synth.preview`) or ``none`` (the avatar at rest; :mod:`engine.synth.none`).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.synth.backends import DEFAULT_BACKEND, DEFAULT_PRECISION

__all__ = ["SYNTHESIZERS", "canonical_renderer", "make_synthesizer"]

SYNTHESIZERS = ("neural", "preview", "none")


def canonical_renderer(value: str) -> str:
    """A renderer named on a command line or in a config: ``retrieval`` is the preview renderer's old name."""
    return "preview" if value == "retrieval" else value


def make_synthesizer(
    kind: str,
    landmark_model=None,
    renderer=None,
    backend_factory: Callable | None = None,
    backend: str = DEFAULT_BACKEND,
    precision: str = DEFAULT_PRECISION,
    device: str = "cpu",
    max_batch: int = 16,
    shared: bool = True,
    preview_config=None,
    random_weights: bool = False,
):
    """A synthesizer of ``kind`` (``retrieval`` is accepted for ``preview``).

    ``neural``: the landmark model and a renderer backend per avatar from ``backend_factory``, or made from
    the ``renderer`` network (``backend``, ``precision``); without networks both are loaded from
    ``checkpoints/`` (or stand-in weights with ``random_weights``) onto ``device``. With ``shared`` its
    streams batch their windows in one model worker. ``preview``: ``landmark_model``, when given, drives the
    mouth; ``preview_config``: :class:`engine.synth.preview.PreviewConfig`. ``none``: the avatar at rest."""
    kind = canonical_renderer(kind)
    if kind == "neural":
        from engine.synth.backends import DTYPES, make_renderer_backend
        from engine.synth.neural import NeuralSynthesizer

        if backend_factory is None:
            if landmark_model is None or renderer is None:
                from engine.synth.weights import load_models

                landmark_model, renderer = load_models(device=device, random_weights=random_weights)
            dtype = DTYPES[precision]

            def backend_factory():
                return make_renderer_backend(backend, renderer, dtype)

        return NeuralSynthesizer(landmark_model, backend_factory, shared=shared, max_batch=max_batch)
    if kind == "preview":
        from engine.synth.preview.synthesizer import PreviewSynthesizer

        return PreviewSynthesizer(preview_config, landmark_model)
    if kind == "none":
        from engine.synth.none import NoneSynthesizer

        return NoneSynthesizer()
    raise ValueError(f"unknown synthesizer {kind!r}; choose one of {', '.join(SYNTHESIZERS)}")
