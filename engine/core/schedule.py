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

from dataclasses import dataclass

import numpy as np

T = 5  # frames per transformer window
CENTER = 2  # the window's frame that is rendered


def pingpong(i: int | np.ndarray, n_frames: int) -> int | np.ndarray:
    """Template frame of output frame ``i`` for ``n_frames`` template frames (0..L-1, L-1..0, ...)."""
    if n_frames <= 0:
        raise ValueError("a template needs at least one frame")
    r = np.asarray(i) % (2 * n_frames)
    out = np.where(r < n_frames, r, 2 * n_frames - 1 - r)
    return int(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class Window:
    """One transformer window and the frame it renders."""

    start: int  # b
    templates: tuple[int, ...]  # f(b), ..., f(b+4)
    mel_indices: tuple[int, ...]  # max(0, i - 2) for i = b..b+4
    render_template: int  # f(b + 2)
    render_mel: int  # b
    output_indices: tuple[
        int, ...
    ]  # output frames showing this window's face: (0, 1, 2) for b = 0, else (b + 2,)


def num_windows(n_chunks: int) -> int:
    return max(0, n_chunks - 2)


def make_window(b: int, n_chunks: int, n_frames: int) -> Window:
    if not 0 <= b < num_windows(n_chunks):
        raise IndexError(f"window {b} out of range for {n_chunks} mel chunks")
    frames = range(b, b + T)
    return Window(
        start=b,
        templates=tuple(int(pingpong(i, n_frames)) for i in frames),
        mel_indices=tuple(max(0, i - CENTER) for i in frames),
        render_template=int(pingpong(b + CENTER, n_frames)),
        render_mel=b,
        output_indices=(0, 1, 2) if b == 0 else (b + CENTER,),
    )


def windows(n_chunks: int, n_frames: int) -> list[Window]:
    """All windows of a clip; their output indices cover ``0..n_chunks-1`` exactly once."""
    return [make_window(b, n_chunks, n_frames) for b in range(num_windows(n_chunks))]


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
