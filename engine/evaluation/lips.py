"""LipLMD: the distance between the FaceMesh lip points of a generated and a reference frame, in
pixels of the reference frame's 128x128 inference crop (definition in docs/evaluation.md)."""

from __future__ import annotations

import numpy as np

from engine.core.landmark_sets import LIP_MP
from engine.evaluation.common import CROP_SIZE, MARGIN_PX, mesh_xy


def lip_lmd(
    points_gen: np.ndarray,
    points_ref: np.ndarray,
    frame_hw: tuple[int, int],
    *,
    margin_px: float = MARGIN_PX,
    size: int = CROP_SIZE,
) -> float:
    """LipLMD of one frame: the mean Euclidean distance over the 40 lip points (``ORDER[91:131]``)
    between the FaceMesh of the generated frame and of the reference frame, in pixels of the
    ``size`` x ``size`` face crop.

    ``points_gen``, ``points_ref``: raw FaceMesh meshes (468|478, 2|3) in MediaPipe's normalised
    frame coordinates; ``frame_hw``: the frame size (h, w). Both point sets are normalised to the
    *reference* frame's inference box (:func:`engine.core.face.crop_box`, ``margin_px``) as
    ``((w x - x1) / (x2 - x1), (h y - y1) / (y2 - y1))`` and multiplied by ``size``.
    """
    from engine.core.face import crop_box

    h, w = (int(v) for v in frame_hw)
    gen, ref = mesh_xy(points_gen, "points_gen"), mesh_xy(points_ref, "points_ref")
    y1, y2, x1, x2 = crop_box(ref, h, w, margin_px)
    if y2 <= y1 or x2 <= x1:
        raise ValueError(f"degenerate reference face box {(y1, y2, x1, x2)}")
    scale = np.array([size / (x2 - x1), size / (y2 - y1)])
    offset = np.array([x1, y1], dtype=np.float64)
    frame = np.array([w, h], dtype=np.float64)
    g = (gen[LIP_MP] * frame - offset) * scale
    r = (ref[LIP_MP] * frame - offset) * scale
    return float(np.mean(np.linalg.norm(g - r, axis=1)))
