"""Face geometry shared by the preview renderer's two modes: the FaceMesh index sets it uses,
2-D helpers (complex numbers for points: z = x + i y; similarity fits, polygon clipping, triangle
fold relaxing), per-frame face axes and the lower-face polygon, and :class:`Feather` (feathered
masks over a region box, and the blend with them). Pure functions of landmarks and pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from engine.core.landmark_sets import CONTENT_MP, FACE_OVAL_MP

# --------------------------------------------------------------------------------------------
# FaceMesh index sets
# --------------------------------------------------------------------------------------------

#: Points that do not move when the mouth moves: nose bridge, tip and base, eye corners, cheekbones.
STABLE_MP = np.array([168, 6, 197, 195, 5, 4, 1, 2, 98, 327, 33, 133, 362, 263, 116, 345, 234, 454])
EYE_CORNERS_MP = (33, 263)  # outer eye corners: the face's horizontal axis and scale
MOUTH_CORNERS_MP = (61, 291)
INNER_GAP_MP = (13, 14)  # inner lip midpoints
OUTER_MID_MP = (0, 17)  # outer lip midpoints
NOSE_BASE_MP = 2
LOWER_LIP_MID_MP = 17
CHIN_MP = 152
# Lip contours, corner to corner (image left to right for a frontal face).
OUTER_UPPER_MP = np.array([61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291])
OUTER_LOWER_MP = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291])
INNER_UPPER_MP = np.array([78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308])
INNER_LOWER_MP = np.array([78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308])
CORNERS_MP = np.array([61, 291, 78, 308])
LIP_ALL = np.unique(np.concatenate([OUTER_UPPER_MP, OUTER_LOWER_MP, INNER_UPPER_MP, INNER_LOWER_MP]))
LIP_LOWER = np.setdiff1d(np.concatenate([OUTER_LOWER_MP, INNER_LOWER_MP]), CORNERS_MP)
LIP_UPPER = np.setdiff1d(np.concatenate([OUTER_UPPER_MP, INNER_UPPER_MP]), CORNERS_MP)
N_MESH = 468  # the refined mesh's extra 10 points are irises
OVAL_MP = FACE_OVAL_MP[:-1]  # the face oval polygon used throughout (FACE_OVAL_MP without its last point)

# --------------------------------------------------------------------------------------------
# 2-D helpers
# --------------------------------------------------------------------------------------------


def cplx(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    return xy[..., 0] + 1j * xy[..., 1]


def xy(z: np.ndarray) -> np.ndarray:
    return np.stack([np.real(z), np.imag(z)], axis=-1)


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[complex, complex]:
    """Least-squares similarity ``dst ~ k * src + c`` (no reflection) of complex point sets (K,).

    The closed form of ``cv2.estimateAffinePartial2D`` without RANSAC (deterministic).
    """
    ms, md = src.mean(), dst.mean()
    s, d = src - ms, dst - md
    k = np.vdot(s, d) / max(float(np.vdot(s, s).real), 1e-12)
    return complex(k), complex(md - k * ms)


def affine(k: complex, c: complex, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The 2x3 matrix of ``z -> k z + c`` followed by a translation by ``-shift`` (x, y)."""
    return np.array(
        [[k.real, -k.imag, c.real - shift[0]], [k.imag, k.real, c.imag - shift[1]]], dtype=np.float64
    )


def opening(z: np.ndarray, outer_weight: float) -> np.ndarray:
    """Mouth opening of complex meshes (..., 468+): inner-lip gap and outer lip height, mixed."""
    inner = np.abs(z[..., INNER_GAP_MP[0]] - z[..., INNER_GAP_MP[1]])
    outer = np.abs(z[..., OUTER_MID_MP[0]] - z[..., OUTER_MID_MP[1]])
    return (1.0 - outer_weight) * inner + outer_weight * outer


def clip_halfplane(poly: np.ndarray, q: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of polygon ``poly`` (K, 2) where ``(p - q) . n >= 0``."""
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        da, db = float((a - q) @ n), float((b - q) @ n)
        if da >= 0:
            out.append(a)
        if (da >= 0) != (db >= 0):
            out.append(a + (b - a) * (da / (da - db)))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def smoothstep(e0: float, e1: float, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / max(e1 - e0, 1e-9), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def signed_areas(tri_pts: np.ndarray) -> np.ndarray:
    """Signed areas (x2) of triangles (T, 3, 2)."""
    p = tri_pts
    return (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (
        p[:, 1, 1] - p[:, 0, 1]
    )


def relax_folds(
    pts: np.ndarray, disp: np.ndarray, tris: np.ndarray, constrained: np.ndarray, min_ratio: float = 0.15
) -> np.ndarray:
    """Smooth the displacement of free points until no triangle folds (or shrinks under
    ``min_ratio`` of its area) at any openness: each free vertex of a bad triangle moves half-way
    towards the mean displacement of the bad triangles it belongs to."""
    disp = disp.copy()
    a0 = signed_areas(pts[tris])
    free = ~constrained
    for _ in range(100):
        # areas are quadratic in the openness: check it at a few values, not only at 1
        worst = np.min(
            [signed_areas((pts + o * disp)[tris]) * np.sign(a0) for o in (0.25, 0.5, 0.75, 1.0)], axis=0
        )
        bad = tris[worst < min_ratio * np.abs(a0)]
        if bad.size == 0:
            break
        acc = np.zeros_like(disp)
        cnt = np.zeros(len(disp))
        np.add.at(acc, bad.ravel(), np.repeat(disp[bad].mean(axis=1), 3, axis=0))
        np.add.at(cnt, bad.ravel(), 1.0)
        upd = free & (cnt > 0)
        if not upd.any():
            break
        disp[upd] = 0.5 * disp[upd] + 0.5 * acc[upd] / cnt[upd, None]
    return disp


# --------------------------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Face:
    """Per-frame geometry in frame pixels."""

    pts: np.ndarray  # (478, 2) float64 pixels
    u: np.ndarray  # unit vector along the eye line (image left -> right)
    v: np.ndarray  # unit vector down the face
    iod: float  # outer eye corner distance (px)
    mouth_c: np.ndarray  # mouth centre (between the outer corners)
    mouth_w: float  # mouth width (px)


def face(pts: np.ndarray) -> Face:
    a, b = pts[EYE_CORNERS_MP[0]], pts[EYE_CORNERS_MP[1]]
    u = b - a
    iod = float(np.hypot(*u))
    u = u / max(iod, 1e-9)
    v = np.array([-u[1], u[0]])
    ml, mr = pts[MOUTH_CORNERS_MP[0]], pts[MOUTH_CORNERS_MP[1]]
    return Face(pts, u, v, iod, (ml + mr) / 2.0, float(np.hypot(*(mr - ml))))


def lower_face_polygon(f: Face, nose_offset: float = 0.08, half_width: float = 0.5) -> np.ndarray:
    """Lower face (K, 2): the face oval below a line just under the nose base, and within
    ``half_width`` eye-corner distances of the mouth centre across the face (so that ears, earrings
    and hair at the sides are never blended)."""
    oval = f.pts[OVAL_MP]
    q = f.pts[NOSE_BASE_MP] + nose_offset * (f.pts[0] - f.pts[NOSE_BASE_MP])
    poly = clip_halfplane(oval, q, f.v)
    for side in (1.0, -1.0):
        poly = clip_halfplane(poly, f.mouth_c + side * half_width * f.iod * f.u, -side * f.u)
    return poly


def fill_polys(canvas: np.ndarray, polys: list[np.ndarray], offset, scale: float) -> None:
    shift = 4
    for poly in polys:
        p = np.round((poly - offset) * scale * (1 << shift)).astype(np.int32)
        if len(p) >= 3:
            cv2.fillPoly(canvas, [p], 255, lineType=cv2.LINE_8, shift=shift)


def canonical(pts: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The canonical frame of each of L frames (pixels (L, 478, 2), ``valid`` (L,) bool): the
    stable points Procrustes-aligned to their mean shape (over the valid frames), eye-corner
    distance 1. Returns ``k`` (L,) complex (pixel -> canonical scale and rotation, about ``mu``),
    ``mu`` (L,) complex (the stable points' centroid), and the stable points (L, K) and content
    points (L, 57) in canonical coordinates (complex)."""
    z = cplx(pts[:, STABLE_MP])  # (L, K)
    zc = z - z.mean(axis=1, keepdims=True)
    e0, e1 = (int(np.flatnonzero(STABLE_MP == m)[0]) for m in EYE_CORNERS_MP)
    ref = zc[int(np.flatnonzero(valid)[0])]
    for _ in range(3):
        ref = ref / np.abs(ref[e0] - ref[e1])
        k = (np.conj(zc) * ref).sum(axis=1) / (np.abs(zc) ** 2).sum(axis=1)  # (L,)
        ref = (k[:, None] * zc)[valid].mean(axis=0)
    ref = ref / np.abs(ref[e0] - ref[e1])
    k = (np.conj(zc) * ref).sum(axis=1) / (np.abs(zc) ** 2).sum(axis=1)  # pixel -> canonical scale
    mu = z.mean(axis=1)  # (L,) centroid of the stable points
    stable_can = k[:, None] * zc  # (L, K)
    content_can = k[:, None] * (cplx(pts[:, CONTENT_MP]) - mu[:, None])  # (L, 57)
    return k, mu, stable_can, content_can


def region_box(
    f: Face, poly: np.ndarray, s: float, height: int, width: int, i: int
) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2): the part of frame ``i`` (face ``f``, lower-face polygon ``poly``, mask
    feather ``s`` px) that a feathered lower-face blend can touch."""
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    m = 3.0 * s + 2.0
    bottom = m + 0.35 * f.iod  # room for a lower chin
    x1, x2 = int(math.floor(lo[0] - m)), int(math.ceil(hi[0] + m))
    y1, y2 = int(math.floor(lo[1] - m)), int(math.ceil(hi[1] + bottom))
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(x2, width), min(y2, height)
    if x2 - x1 < 4 or y2 - y1 < 4:
        raise ValueError(f"frame {i}: the lower face lies outside the frame")
    return y1, y2, x1, x2


@dataclass(frozen=True)
class FaceTrack:
    """The face geometry of every avatar frame, computed once per renderer (frame pixels)."""

    pts: np.ndarray  # (L, 478, 2) float64 landmarks
    faces: list[Face]
    valid: np.ndarray  # (L,) bool: frames with a detected face (all of them when none has one)
    k: np.ndarray  # (L,) complex: pixel -> canonical (see :func:`canonical`)
    mu: np.ndarray  # (L,) complex: centroid of the stable points
    stable_can: np.ndarray  # (L, K) complex: stable points, canonical
    content_can: np.ndarray  # (L, 57) complex: content points (17 jaw, 40 lip), canonical
    polys: list[np.ndarray]  # lower-face polygons (K, 2)
    sigma: np.ndarray  # (L,) mask feather (px)
    boxes: list[tuple[int, int, int, int]]  # :func:`region_box` of each frame


# --------------------------------------------------------------------------------------------
# Feathered masks
# --------------------------------------------------------------------------------------------


class Feather:
    """Feathered masks over a region box of an (height, width) frame, and the blend with them.

    ``mask_scale``: masks are drawn and blurred at up to 1/mask_scale resolution; ``erode``: alpha
    below this (after the blur) is 0, so that the feather lies inside the polygons. Keeps a cache
    of edge tapers per box size.
    """

    def __init__(self, height: int, width: int, mask_scale: int, erode: float) -> None:
        self.height, self.width = height, width
        self.mask_scale, self.erode = mask_scale, erode
        self._tapers: dict[tuple, np.ndarray] = {}

    def taper(self, box, r: int) -> np.ndarray:
        """(h, w) float32 over ``box``: 0 on its sides inside the frame, rising to 1 over ``r``
        pixels (sides on the frame's edge stay 1); keeps a mask 0 where the box meets the frame."""
        y1, y2, x1, x2 = box
        cut = (y1 > 0, y2 < self.height, x1 > 0, x2 < self.width)
        key = (y2 - y1, x2 - x1, r, cut)
        if key not in self._tapers:

            def ramp(n: int, lo: bool, hi: bool) -> np.ndarray:
                i = np.arange(n, dtype=np.float64)
                d = np.minimum(i if lo else np.inf, (n - 1 - i) if hi else np.inf)
                return smoothstep(0.0, r, d)

            ry, rx = ramp(y2 - y1, cut[0], cut[1]), ramp(x2 - x1, cut[2], cut[3])
            self._tapers[key] = (ry[:, None] * rx[None, :]).astype(np.float32)
        return self._tapers[key]

    def mask(
        self, polys: list[np.ndarray], box, sigma: float, limits: list[list[np.ndarray]] | None = None
    ) -> np.ndarray:
        """Feathered union of polygons (frame pixels) over ``box``, faded out inside the edges of
        the intersection of ``limits`` when given; float32 (h, w) in [0, 1]."""
        y1, y2, x1, x2 = box
        h, w = y2 - y1, x2 - x1
        s = max(1, min(self.mask_scale, int(sigma / 1.5)))  # keep >= 1.5 px of blur at low resolution
        hs, ws = -(-h // s), -(-w // s)
        canvas = np.zeros((hs, ws), np.uint8)
        offset = np.array([x1, y1], np.float64)
        fill_polys(canvas, polys, offset, 1.0 / s)
        sig = sigma / s
        k = 2 * int(math.ceil(3 * sig)) + 1
        small = cv2.GaussianBlur(canvas, (k, k), sig).astype(np.float32) * (1.0 / 255.0)
        if self.erode > 0:
            small = np.clip((small - self.erode) * (1.0 / (1.0 - self.erode)), 0.0, 1.0)
        if limits:  # inside all limits (each a union of polygons): 0 on their edges, 1 inside
            allowed = np.full_like(canvas, 255)
            for lim in limits:
                one = np.zeros_like(canvas)
                fill_polys(one, lim, offset, 1.0 / s)
                allowed &= one
            a = cv2.GaussianBlur(allowed, (k, k), sig).astype(np.float32) * (1.0 / 255.0)
            small *= smoothstep(0.5, 0.95, a).astype(np.float32)
        m = cv2.resize(small, (ws * s, hs * s), interpolation=cv2.INTER_LINEAR)[:h, :w] if s > 1 else small
        return m * self.taper(box, max(2, int(round(1.5 * sigma))))

    @staticmethod
    def blend(out: np.ndarray, source: np.ndarray, mask: np.ndarray, box) -> None:
        """``out[box] = source * mask + out[box] * (1 - mask)``, in place (rounded, uint8)."""
        y1, y2, x1, x2 = box
        region = out[y1:y2, x1:x2]
        region[...] = cv2.blendLinear(source, np.ascontiguousarray(region), mask, 1.0 - mask)
