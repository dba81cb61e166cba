"""Synthesis: windows of a prepared avatar become frames (:mod:`engine.synth.base` is the seam).

:func:`make_synthesizer` makes the one a caller names: ``neural`` (IP_LAP: transformer, sketches, a
renderer backend; :mod:`engine.synth.neural`), ``preview`` (the CPU preview renderer;
:mod:`engine.synth.preview`) or ``none`` (the avatar at rest; :mod:`engine.synth.none`).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SYNTHESIZERS", "canonical_renderer", "make_synthesizer"]

SYNTHESIZERS = ("neural", "preview", "none")


def canonical_renderer(value: str) -> str:
    """A renderer named on a command line or in a config: ``retrieval`` is the preview renderer's old name."""
    return "preview" if value == "retrieval" else value


def make_synthesizer(
    kind: str,
    landmark_model=None,
    backend_factory: Callable | None = None,
    max_batch: int = 16,
    shared: bool = True,
    preview_config=None,
):
    """A synthesizer of ``kind``. ``neural`` needs ``landmark_model`` and ``backend_factory`` (a renderer
    backend per avatar, :func:`engine.synth.backends.make_renderer_backend`); with ``shared`` its streams
    batch their windows in one model worker. ``preview`` uses ``landmark_model``, when given, to drive the
    mouth."""
    if kind == "neural":
        from engine.synth.neural import NeuralSynthesizer

        if landmark_model is None or backend_factory is None:
            raise ValueError("the neural synthesizer needs a landmark model and a renderer backend")
        return NeuralSynthesizer(landmark_model, backend_factory, shared=shared, max_batch=max_batch)
    kind = canonical_renderer(kind)
    if kind == "preview":
        from engine.synth.preview.synthesizer import PreviewSynthesizer

        return PreviewSynthesizer(preview_config, landmark_model)
    if kind == "none":
        from engine.synth.none import NoneSynthesizer

        return NoneSynthesizer()
    raise ValueError(f"unknown synthesizer {kind!r}; choose one of {', '.join(SYNTHESIZERS)}")
