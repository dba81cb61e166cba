"""Pasting a generated face back into its frame with a feathered face-region mask.

The authors paste the 128x128 output, resized to the crop box, into the frame and blend it with a
mask: a face contour (from a second, 68-point landmark model) filled as a convex polygon, blurred
with ``GaussianBlur((21, 21), 11)``, ``out = generated * m + original * (1 - m)`` truncated to
uint8. We build the same kind of mask from the FaceMesh points we already have (no second model):
the convex hull of the face oval (jaw and cheeks up to the temples) and the upper eyebrow line,
which covers the region the 68-point contour covers (jaw + eyebrows).

The mask is kept only over the crop box: the polygon lies inside the 131 landmarks' bounding box
and the box adds a 25-pixel margin, more than the blur's 10-pixel reach, so nothing is lost. Pixels
where the mask is 0 (everything outside the box, and the box's border) keep the template's value
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.core.landmark_sets import FACE_OVAL_MP

# Upper edge of the eyebrows (right brow outer -> inner, left brow inner -> outer).
BROW_TOP_MP = np.array([70, 63, 105, 66, 107, 336, 296, 334, 293, 300], dtype=np.int64)
MASK_POINTS_MP = np.concatenate([FACE_OVAL_MP, BROW_TOP_MP])


@dataclass(frozen=True)
class MaskConfig:
    blur_kernel: int = 21
    blur_sigma: float = 11.0


def face_polygon(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """Convex hull (K, 2) int32 in frame pixels of the mask points of a (478, 2+) normalised mesh."""
    pts = np.asarray(points, dtype=np.float64)[MASK_POINTS_MP, :2] * (w, h)
    return cv2.convexHull(pts.astype(np.int32)).reshape(-1, 2)


def paste_mask(points: np.ndarray, box, h: int, w: int, cfg: MaskConfig = MaskConfig()) -> np.ndarray:
    """Feathered uint8 mask (y2-y1, x2-x1) over the crop box, as a full-frame blur would give it."""
    y1, y2, x1, x2 = (int(v) for v in box)
    r = cfg.blur_kernel // 2
    # Work on the box plus the blur's reach (clipped to the frame): identical to blurring the whole frame.
    ey1, ey2, ex1, ex2 = max(y1 - r, 0), min(y2 + r, h), max(x1 - r, 0), min(x2 + r, w)
    canvas = np.zeros((ey2 - ey1, ex2 - ex1), dtype=np.uint8)
    poly = face_polygon(points, h, w) - (ex1, ey1)
    cv2.fillConvexPoly(canvas, poly.astype(np.int32), 255)
    # Box pixels see only the canvas through the kernel; at frame edges the canvas edge is the
    # frame edge and OpenCV's default border is what a full-frame blur uses too.
    canvas = cv2.GaussianBlur(canvas, (cfg.blur_kernel, cfg.blur_kernel), cfg.blur_sigma)
    return np.ascontiguousarray(canvas[y1 - ey1 : y2 - ey1, x1 - ex1 : x2 - ex1])


def composite(
    frame: np.ndarray, face: np.ndarray, box, mask: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """The frame with ``face`` (128x128x3 uint8 BGR) resized into ``box`` and blended by ``mask``.

    ``out`` may be a preallocated frame-sized array to write into; returns the composited frame.
    """
    y1, y2, x1, x2 = (int(v) for v in box)
    if out is None:
        out = frame.copy()
    elif out is not frame:
        np.copyto(out, frame)
    region = frame[y1:y2, x1:x2]
    pasted = cv2.resize(face, (x2 - x1, y2 - y1))
    m = mask.astype(np.float64)[..., None] / 255.0
    out[y1:y2, x1:x2] = (pasted * m + region * (1.0 - m)).astype(np.uint8)
    return out
