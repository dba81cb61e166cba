"""The preview renderer: the mouth of a prepared avatar drawn on a CPU in real time, without
weights (the neural renderer's stand-in where there is no GPU). :class:`PreviewRenderer` draws
template frame ``t`` with a mouth for a target openness in [0, 1] (or target content landmarks),
from the avatar's own mouths (a video) or by warping its one mouth open (a photo);
:class:`OpennessTracker` (streaming) and :func:`openness_curve` (a whole file) turn audio into
that openness. One renderer and one tracker per session; neither is thread-safe. How it works and
what it cannot do: docs/preview_renderer.md.
"""

from engine.synth.preview.config import FrameInfo, PreviewConfig
from engine.synth.preview.openness import OpennessConfig, OpennessTracker, StreamingOpenness, openness_curve
from engine.synth.preview.renderer import PreviewRenderer

__all__ = [
    "FrameInfo",
    "OpennessConfig",
    "OpennessTracker",
    "PreviewConfig",
    "PreviewRenderer",
    "StreamingOpenness",
    "openness_curve",
]
