"""What every evaluation module shares: the frame rate and face-crop constants, the error type
(:class:`EvaluationError`, a ``ValueError`` whose message names the file or the reason) and the
check of a raw FaceMesh array."""

from __future__ import annotations

import numpy as np

FPS = 25.0
CROP_SIZE = 128  # face crop side (the model's resolution); LipLMD is in pixels of this crop
MARGIN_PX = 25  # inference crop margin (IPLAP_FACTS.md section 4)
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
DOCS = "docs/evaluation.md"


class EvaluationError(ValueError):
    """Inputs or network files that cannot be evaluated (the message names the file or the reason)."""


def mesh_xy(points: np.ndarray, what: str) -> np.ndarray:
    """The (x, y) columns of a raw FaceMesh (468|478, 2|3) array in MediaPipe's normalised frame
    coordinates (``ValueError`` naming ``what`` for any other shape)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] not in (468, 478) or p.shape[1] < 2:
        raise ValueError(f"{what}: expected a raw FaceMesh (468|478, 2|3) array, got {p.shape}")
    return p[:, :2]


def mesh_pixels(points: np.ndarray, frame_hw: tuple[int, int], what: str = "points") -> np.ndarray:
    """:func:`mesh_xy` in pixels of a frame of size ``frame_hw`` (h, w)."""
    return mesh_xy(points, what) * np.array([frame_hw[1], frame_hw[0]], dtype=np.float64)
