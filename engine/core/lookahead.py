"""Per-frame audio analysis: the mel frames output frame ``q`` of a segment uses, the audio they
need, and the look-ahead that follows (for a synthesizer that needs no transformer window: the
preview renderer's mouth openness).

Output frame ``q`` (its audio: segment samples ``[640 q, 640 (q + 1))``) sits at mel position
``s(q) = int(3.2 q)`` (where its renderer chunk would start, :func:`engine.core.audio.mel_chunk_starts`;
within 0.8 mel frames, 10 ms, before the frame's own time ``40 q`` ms). A :class:`FrameAnalysis`
``(first, stop)`` uses mel frames ``s(q) + first .. s(q) + stop - 1``. Mel frame ``j`` is centred on
sample ``200 j`` and sees ``[200 j - 400, 200 j + 400)`` (it is complete once ``200 j + 400``
samples exist), so frame ``q`` can be made once the segment holds
``200 (s(q) + stop - 1) + 400`` samples: ``12.5 (stop - 1) + 25`` ms past the frame's own time
at most (when ``3.2 q`` is a whole number, every 5 frames). Mel frames before the segment (``j < 0``)
are silence. Compare the transformer's windows: 212.5 ms (:mod:`engine.core.schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.core.audio import MelConfig
from engine.core.clock import FPS, MEL_FPS, SAMPLES_PER_FRAME

__all__ = ["FrameAnalysis", "frame_mel_position"]


def frame_mel_position(q: int) -> int:
    """Mel position of segment output frame ``q``: ``int(q * 3.2)`` (float product, then truncation)."""
    return int(q * (MEL_FPS / float(FPS)))


@dataclass(frozen=True)
class FrameAnalysis:
    """Mel frames ``[first, stop)`` relative to each output frame's mel position (module docstring)."""

    first: int
    stop: int
    mel: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self) -> None:
        if self.stop <= self.first:
            raise ValueError(f"an analysis needs at least one mel frame, got [{self.first}, {self.stop})")

    @property
    def n_frames(self) -> int:
        return self.stop - self.first

    def mel_range(self, q: int) -> tuple[int, int]:
        """Segment mel frames ``[a, b)`` that frame ``q`` uses (``a`` may be negative: silence)."""
        s = frame_mel_position(q)
        return s + self.first, s + self.stop

    def span(self, q: int) -> tuple[int, int]:
        """Segment samples ``[lo, hi)`` the analysis of frame ``q`` sees (``lo`` clipped to 0)."""
        a, b = self.mel_range(q)
        half = self.mel.n_fft // 2
        return max(0, a * self.mel.hop - half), max(0, (b - 1) * self.mel.hop + half)

    def required_samples(self, q: int) -> int:
        """Segment samples that must exist before frame ``q`` can be made."""
        return self.span(q)[1]

    def lookahead_samples(self, q: int) -> int:
        """Audio beyond frame ``q``'s own time ``640 q`` that must exist before it can be made."""
        return self.required_samples(q) - q * SAMPLES_PER_FRAME

    @property
    def lookahead_ms(self) -> float:
        """The worst case of :meth:`lookahead_samples` over the frames (the positions repeat every 5)."""
        worst = max(self.lookahead_samples(q) for q in range(5, 10))
        return 1000.0 * max(0, worst) / self.mel.sample_rate

    def block(self, mel: np.ndarray, q: int, base: int = 0) -> np.ndarray:
        """Frame ``q``'s mel frames (n_mels, n_frames) float32 from ``mel``, whose column 0 is segment mel
        frame ``base``; frames before the segment are silence (``-max_abs_value``)."""
        a, b = self.mel_range(q)
        lo, hi = a - base, b - base
        if hi > mel.shape[1] or (lo < 0 and (a >= 0 or base > 0)):
            raise ValueError(f"mel frames [{a}, {b}) are not in the {mel.shape[1]} frames from {base}")
        if lo >= 0:
            return np.ascontiguousarray(mel[:, lo:hi], dtype=np.float32)
        out = np.full((mel.shape[0], self.n_frames), -self.mel.max_abs_value, np.float32)
        if hi > 0:  # (an analysis wholly before the segment's start is silence)
            out[:, -lo:] = mel[:, 0:hi]
        return out
