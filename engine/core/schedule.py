"""The authors' offline schedule (IPLAP_FACTS.md section 8), as pure functions.

- Template frames are visited ping-pong: ``0..L-1, L-1..0, 0..L-1, ...``.
- Window ``b`` (``0 <= b < n_chunks - 2``) covers output frames ``i = b..b+4``: the transformer
  gets mel ``chunks[max(0, i - 2)]`` and the pose of template frame ``f(i)``; the renderer draws
  frame ``f(b + 2)`` with mel ``chunks[b]``.
- The first generated frame is written three times, then one per window: ``n_chunks`` frames.
  Output frame ``p >= 2`` shows template frame ``f(p)`` driven by audio
  ``[(p - 2) * 40, (p - 2) * 40 + 200]`` ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

T = 5  # frames per transformer window
CENTER = 2  # the window's frame that is rendered
#: The audio a window needs beyond its frame's own time, worst case over frames (the live scheduler
#: computes it from the mel arithmetic: engine.live.audio.LiveWindowScheduler.lookahead_ms): the
#: look-ahead of a synthesizer that needs the transformer's windows. A per-frame analysis has its own
#: (engine.core.lookahead.FrameAnalysis.lookahead_ms: the preview's 50 ms).
LOOKAHEAD_MS = 212.5


def pingpong(i: int | np.ndarray, n_frames: int) -> int | np.ndarray:
    """Template frame of output frame ``i`` for ``n_frames`` template frames (0..L-1, L-1..0, ...)."""
    if n_frames <= 0:
        raise ValueError("a template needs at least one frame")
    r = np.asarray(i) % (2 * n_frames)
    out = np.where(r < n_frames, r, 2 * n_frames - 1 - r)
    return int(out) if np.ndim(out) == 0 else out


NO_MEL = np.zeros((0, 80, 16), np.float32)
NO_MEL.flags.writeable = False


@dataclass(frozen=True, slots=True)
class Window:
    """One transformer window and the frame(s) it renders: the one window type of offline and live.

    - ``index``: the output frame it makes; ``output_indices``: the frames that show it, ``(p, p+1, p+2)``
      for the first window of a segment (the first face is shown 3 times, as offline), else ``(p,)``.
    - ``templates``: the 5 template frames (poses) ``f(b)..f(b+4)``; ``render_template``: ``f(b + 2)``,
      the frame the face is drawn into.
    - ``mel``: the 5 transformer mel chunks, (5, 80, 16) float32, ``chunks[max(0, i - 2)]`` for
      ``i = b..b+4`` (empty for a plan without audio, or a gap of rest frames); the renderer's chunk is
      ``mel[CENTER]`` (= ``chunks[b]``).
    - ``start`` (b) and ``mel_indices``: the window and chunk numbers inside its segment.
    - ``span`` / ``render_span``: ``[start, end)`` session samples (16 kHz) of all 5 chunks / of the
      renderer's chunk (live windows); ``is_speech``: the speech gate's verdict on ``render_span``.

    A *frame window* (``engine.live.audio.LiveFrameScheduler``, for a synthesizer that analyses the mel
    around each frame, the preview) makes one frame: ``mel`` (1, 80, n) is that frame's analysis
    (``engine.core.lookahead.FrameAnalysis.block``), ``start`` its frame number in the segment,
    ``templates = (render_template,)``, no ``mel_indices`` and no ``render_mel``.
    """

    index: int
    output_indices: tuple[int, ...]
    templates: tuple[int, ...]
    render_template: int
    mel: np.ndarray = field(default_factory=lambda: NO_MEL)
    start: int = 0
    mel_indices: tuple[int, ...] = ()
    span: tuple[int, int] = (0, 0)
    render_span: tuple[int, int] = (0, 0)
    is_speech: bool = True

    @property
    def render_mel(self) -> np.ndarray:
        """The renderer's mel chunk (80, 16): ``mel[CENTER]``."""
        return self.mel[CENTER]


def num_windows(n_chunks: int) -> int:
    return max(0, n_chunks - 2)


def make_window(b: int, n_chunks: int, n_frames: int, chunks: np.ndarray | None = None) -> Window:
    """Window ``b`` of a clip of ``n_chunks`` mel chunks on ``n_frames`` template frames; with ``chunks``
    (n_chunks, 80, 16) it carries its 5 mel chunks."""
    if not 0 <= b < num_windows(n_chunks):
        raise IndexError(f"window {b} out of range for {n_chunks} mel chunks")
    frames = range(b, b + T)
    mel_indices = tuple(max(0, i - CENTER) for i in frames)
    outputs = (0, 1, 2) if b == 0 else (b + CENTER,)
    return Window(
        index=outputs[0],
        output_indices=outputs,
        templates=tuple(int(pingpong(i, n_frames)) for i in frames),
        render_template=int(pingpong(b + CENTER, n_frames)),
        mel=NO_MEL if chunks is None else np.ascontiguousarray(chunks[list(mel_indices)], dtype=np.float32),
        start=b,
        mel_indices=mel_indices,
    )


def windows(n_chunks: int, n_frames: int, chunks: np.ndarray | None = None) -> list[Window]:
    """All windows of a clip; their output indices cover ``0..n_chunks-1`` exactly once."""
    return [make_window(b, n_chunks, n_frames, chunks) for b in range(num_windows(n_chunks))]


def silent_windows(avatar, count: int = 2) -> list[Window]:
    """The first ``count`` windows of one second of silence on ``avatar`` (a model's warm-up call)."""
    from engine.core.audio import mel_chunks, melspectrogram

    chunks = mel_chunks(melspectrogram(np.zeros(16000, np.float32)))
    return windows(len(chunks), avatar.n_frames, chunks)[:count]


def reference_indices(lip_openness: np.ndarray, count: int) -> np.ndarray:
    """Frames chosen as references: sort by lip openness (ascending, stable) and take
    ``sorted[int(v)]`` for ``v`` in ``torch.linspace(0, L-1, steps=count)`` (float32)."""
    import torch

    lip = np.asarray(lip_openness)
    if lip.ndim != 1 or lip.size == 0:
        raise ValueError("lip openness must be a non-empty 1-D array")
    if count < 1:
        raise ValueError("at least one reference is needed")
    order = np.argsort(lip, kind="stable")
    picks = [int(v) for v in torch.linspace(0, lip.size - 1, steps=count)]
    return order[picks].astype(np.int64)
