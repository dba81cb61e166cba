"""The preview renderer's photo mode (``mode="warp"``, for a still image or a video whose mouth
never opens): a piecewise-affine warp of the lower face opens the mouth (lower lip and jaw down,
upper lip slightly up, corners a little down and in; triangles never fold), and the mouth interior
is painted (dark red-brown gradient, the template's own upper teeth or a light band). Warps are
built per template on first use; warped patches are cached per (template, openness level).
See docs/preview_renderer.md.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from engine.synth.preview.config import FrameInfo, PreviewConfig
from engine.synth.preview.geometry import (
    CORNERS_MP,
    INNER_LOWER_MP,
    INNER_UPPER_MP,
    LIP_ALL,
    LIP_LOWER,
    LIP_UPPER,
    LOWER_LIP_MID_MP,
    N_MESH,
    OUTER_LOWER_MP,
    OUTER_UPPER_MP,
    FaceTrack,
    Feather,
    relax_folds,
    smoothstep,
)

__all__ = ["PhotoMode", "WarpRig"]

_CAVITY_EDGE = np.array([48.0, 58.0, 118.0], np.float32)  # BGR: dark red-brown near the lips
_CAVITY_TINT = np.array([0.8, 0.8, 1.0], np.float32)  # BGR: the mouth interior is redder than the lips
_TEETH = np.array([165.0, 180.0, 196.0], np.float32)  # BGR ivory (upper teeth band)


@dataclass
class WarpRig:
    """Per-template warp data, in box coordinates."""

    box: tuple[int, int, int, int]
    src: np.ndarray  # (N, 2) float32 control points
    disp: np.ndarray  # (N, 2) float32 displacement at openness 1
    tris: np.ndarray  # (T, 3) int32
    inner_upper: np.ndarray  # indices into src of the inner upper lip, corner to corner
    inner_lower: np.ndarray  # ... of the inner lower lip
    mask: np.ndarray  # (h, w) float32 blend mask (1 inside the moving region)
    mouth_w: float
    u: np.ndarray
    v: np.ndarray
    moving: np.ndarray  # (T,) bool: triangles with a moving corner
    work: tuple[int, int, int, int]  # (y1, y2, x1, x2) in the box: where moving triangles can be
    grid: tuple[np.ndarray, np.ndarray]  # identity maps (x, y) of the work rect, float32
    rest_teeth: np.ndarray | None  # (h, w) float32 alpha of teeth visible at rest (kept in place)
    lip_bgr: np.ndarray  # (3,) float32 median lip colour


class PhotoMode:
    """Opens the mouth of template frames by warping them (see the module docstring).

    No temporal state: the same (template, openness) always gives the same pixels. ``rig(t)`` is
    template t's warp (control points, their displacement at openness 1, triangles).
    """

    def __init__(self, avatar, track: FaceTrack, config: PreviewConfig, feather: Feather) -> None:
        self.avatar = avatar
        self.track = track
        self.config = config
        self.feather = feather
        self._rigs: dict[int, WarpRig] = {}
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def rig(self, t: int) -> WarpRig:
        """The warp of template ``t`` (built on first use)."""
        rig = self._rigs.get(t)
        if rig is None:
            rig = self._rigs[t] = self._build_rig(t)
        return rig

    def _build_rig(self, t: int) -> WarpRig:
        """The warp of template t: control points, their displacement at openness 1, triangles."""
        c = self.config
        f = self.track.faces[t]
        pts = f.pts[:N_MESH]
        d = c.open_gain * f.mouth_w  # drop of the lower lip at openness 1
        hw = f.mouth_w / 2.0

        # The moving region: the lower face and where it moves to, plus a margin. A ring of fixed
        # anchors around it keeps the warp the identity outside.
        poly = self.track.polys[t]
        hull = cv2.convexHull(np.vstack([poly, poly + d * f.v]).astype(np.float32)).reshape(-1, 2)
        hull = hull.astype(np.float64)
        r = hull - hull.mean(axis=0)
        ring = hull + (0.25 * f.iod + 0.5 * d) * r / np.maximum(np.hypot(r[:, 0], r[:, 1]), 1e-9)[:, None]
        closed = np.vstack([ring, ring[:1]])
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(closed, axis=0).T))])
        s = np.linspace(0, cum[-1], 28, endpoint=False)  # 28 evenly spaced anchors
        ring = np.stack([np.interp(s, cum, closed[:, 0]), np.interp(s, cum, closed[:, 1])], axis=1)

        lo, hi = ring.min(axis=0), ring.max(axis=0)
        pad = 0.1 * f.iod + 2
        x1, y1 = max(int(math.floor(lo[0] - pad)), 0), max(int(math.floor(lo[1] - pad)), 0)
        width, height = self.feather.width, self.feather.height
        x2, y2 = min(int(math.ceil(hi[0] + pad)), width), min(int(math.ceil(hi[1] + pad)), height)
        box = (y1, y2, x1, x2)
        bw, bh = x2 - x1, y2 - y1

        # Control points: the mesh points inside the ring (and all lip points), the ring, and the
        # box's corners and edge midpoints.
        ring32 = ring.astype(np.float32).reshape(-1, 1, 2)
        inside = np.array([cv2.pointPolygonTest(ring32, (float(p[0]), float(p[1])), True) > 1.0 for p in pts])
        inside[LIP_ALL] = False
        # Points inside the lips or next to a lip contour point only crowd the triangulation there
        # (thin triangles that fold): the lip contours alone carry the lips.
        outer = np.vstack([pts[OUTER_UPPER_MP], pts[OUTER_LOWER_MP[::-1][1:-1]]]).astype(np.float32)
        near = 0.08 * f.mouth_w
        for i in np.flatnonzero(inside):
            p = (float(pts[i, 0]), float(pts[i, 1]))
            if (
                cv2.pointPolygonTest(outer, p, False) >= 0
                or np.hypot(*(pts[LIP_ALL] - pts[i]).T).min() < near
            ):
                inside[i] = False
        mesh_idx = np.concatenate([LIP_ALL, np.flatnonzero(inside)])  # lips first: they win merges
        mesh = pts[mesh_idx]
        ex, ey = bw - 1e-3, bh - 1e-3
        border = np.array(
            [[0, 0], [ex / 2, 0], [ex, 0], [ex, ey / 2], [ex, ey], [ex / 2, ey], [0, ey], [0, ey / 2]]
        )
        local = np.vstack([mesh, ring, border + (x1, y1)]) - (x1, y1)
        local = np.clip(local, 0.0, (ex, ey))  # a face at the frame's edge: its ring is cut there
        n_mesh = len(mesh_idx)

        # Displacement at openness 1 along the face's down axis v (u: across, left to right).
        rel = mesh - f.mouth_c
        a = (rel @ f.u) / hw  # -1 .. 1 between the mouth corners
        b = rel @ f.v  # px below the corner line
        aa = np.abs(a)
        prof = np.where(aa <= 1.0, 1.0 - 0.55 * a * a, 0.45 * np.clip(1.0 - (aa - 1.0) / 1.2, 0.0, 1.0))

        def contour_b(idx: np.ndarray) -> np.ndarray:  # b of a lip contour at each point's a
            r = pts[idx] - f.mouth_c
            ca, cb = (r @ f.u) / hw, r @ f.v
            order = np.argsort(ca)
            return np.interp(a, ca[order], cb[order])

        tol = 0.02 * f.mouth_w
        b17 = max(float((pts[LOWER_LIP_MID_MP] - f.mouth_c) @ f.v), 1.0)
        in_lower = np.isin(mesh_idx, LIP_LOWER)
        in_upper = np.isin(mesh_idx, LIP_UPPER)
        corner = np.isin(mesh_idx, CORNERS_MP)
        mid = (aa <= 1.0) & ~in_lower & ~in_upper & ~corner
        below = mid & (b >= contour_b(INNER_LOWER_MP) - tol)  # lower lip body, chin under the mouth
        upper_body = (
            mid & ~below & (b >= contour_b(OUTER_UPPER_MP) - tol) & (b <= contour_b(INNER_UPPER_MP) + tol)
        )
        beside = (aa > 1.0) & ~in_lower & ~in_upper & ~corner  # cheeks and jaw follow the jaw
        w_down = np.zeros(n_mesh)
        w_down[in_lower | below] = prof[in_lower | below]
        w_down[in_upper | upper_body] = -c.upper_lift * prof[in_upper | upper_body]
        w_down[beside] = prof[beside] * smoothstep(0.0, b17, b[beside])
        w_down[corner] = c.corner_drop
        disp = np.zeros_like(local)
        disp[:n_mesh] = d * w_down[:, None] * f.v
        # the lips narrow a little as the mouth opens: a scaling across, about the mouth centre
        lips = np.isin(mesh_idx, LIP_ALL)
        disp[:n_mesh][lips] -= (0.06 * d * np.clip(a[lips], -1.0, 1.0))[:, None] * f.u
        constrained = np.ones(len(local), bool)  # lips, ring and border keep their displacement
        constrained[:n_mesh] = np.isin(mesh_idx, LIP_ALL)

        # A closed mouth has its inner lips on top of each other: part them by a pixel (the strip
        # between them becomes the mouth interior) so that they move apart cleanly.
        where = {int(m): n for n, m in enumerate(mesh_idx)}
        for mu, ml in zip(INNER_UPPER_MP[1:-1], INNER_LOWER_MP[1:-1], strict=True):
            iu, il = where[int(mu)], where[int(ml)]
            gap = float((local[il] - local[iu]) @ f.v)
            if gap < 1.0:
                local[iu] -= 0.5 * (1.0 - gap) * f.v
                local[il] += 0.5 * (1.0 - gap) * f.v

        # Delaunay triangulation of the rest positions (cv2.Subdiv2D; points closer than 0.25 px
        # are merged), as index triples.
        keys = np.round(local * 4).astype(np.int64)
        key1 = keys[:, 0] * 1_000_003 + keys[:, 1]
        uniq, first = np.unique(key1, return_index=True)
        sub = cv2.Subdiv2D((-1, -1, bw + 2, bh + 2))
        for i in first:
            sub.insert((float(local[i, 0]), float(local[i, 1])))
        tri = np.round(sub.getTriangleList().reshape(-1, 3, 2).astype(np.float64) * 4).astype(np.int64)
        tkey = tri[..., 0] * 1_000_003 + tri[..., 1]  # (T, 3)
        pos = np.clip(np.searchsorted(uniq, tkey), 0, len(uniq) - 1)
        real = (uniq[pos] == tkey).all(axis=1)  # drop triangles touching Subdiv2D's outer vertices
        tris = first[pos[real]].astype(np.int32)
        merged = first[np.searchsorted(uniq, key1)]  # each point -> the point it was merged into
        disp = relax_folds(local, disp, tris, constrained)

        moving = (np.abs(disp[tris]) > 1e-6).any(axis=(1, 2))
        reach = np.vstack([local[tris[moving]].reshape(-1, 2), (local + disp)[tris[moving]].reshape(-1, 2)])
        wx1, wy1 = np.maximum(np.floor(reach.min(axis=0)).astype(int) - 1, 0)
        wx2, wy2 = np.minimum(np.ceil(reach.max(axis=0)).astype(int) + 2, (bw, bh))
        gx, gy = np.meshgrid(np.arange(wx1, wx2, dtype=np.float32), np.arange(wy1, wy2, dtype=np.float32))
        return WarpRig(
            box=box,
            src=local.astype(np.float32),
            disp=disp.astype(np.float32),
            tris=tris,
            inner_upper=merged[[where[int(m)] for m in INNER_UPPER_MP]],
            inner_lower=merged[[where[int(m)] for m in INNER_LOWER_MP]],
            mask=self.feather.mask([ring], box, float(self.track.sigma[t])),
            mouth_w=f.mouth_w,
            u=f.u,
            v=f.v,
            moving=moving,
            work=(int(wy1), int(wy2), int(wx1), int(wx2)),
            grid=(gx, gy),
            rest_teeth=self._rest_teeth(t, box),
            lip_bgr=self._lip_colour(t),
        )

    def _lip_colour(self, t: int) -> np.ndarray:
        """Median colour (BGR float32) of the template's lips (between the outer and inner contours)."""
        f = self.track.faces[t]
        frame = np.asarray(self.avatar.frames[t])
        lo, hi = (
            np.floor(f.pts[LIP_ALL].min(axis=0)).astype(int),
            np.ceil(f.pts[LIP_ALL].max(axis=0)).astype(int),
        )
        x1, y1 = max(lo[0] - 1, 0), max(lo[1] - 1, 0)
        x2, y2 = min(hi[0] + 2, self.feather.width), min(hi[1] + 2, self.feather.height)
        canvas = np.zeros((y2 - y1, x2 - x1), np.uint8)
        outer = np.vstack([f.pts[OUTER_UPPER_MP], f.pts[OUTER_LOWER_MP[::-1][1:-1]]]) - (x1, y1)
        inner = np.vstack([f.pts[INNER_UPPER_MP], f.pts[INNER_LOWER_MP[::-1][1:-1]]]) - (x1, y1)
        cv2.fillPoly(canvas, [np.round(outer).astype(np.int32)], 255)
        cv2.fillPoly(canvas, [np.round(inner).astype(np.int32)], 0)
        px = frame[y1:y2, x1:x2][canvas > 0]
        if len(px) < 4:
            return np.array([90.0, 100.0, 170.0], np.float32)
        return np.median(px, axis=0).astype(np.float32)

    def _rest_teeth(self, t: int, box) -> np.ndarray | None:
        """Alpha (box) of the teeth the template shows at rest, or None when its mouth shows none
        (closed, or a dark opening). Upper teeth stay where they are when the jaw drops."""
        f = self.track.faces[t]
        y1, y2, x1, x2 = box
        crop = np.asarray(self.avatar.frames[t])[y1:y2, x1:x2]
        poly = np.vstack([f.pts[INNER_UPPER_MP], f.pts[INNER_LOWER_MP[::-1][1:-1]]]) - (x1, y1)
        canvas = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillPoly(canvas, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        inside = canvas > 127
        if inside.sum() < 1.5 * f.mouth_w:  # thinner than ~1.5 px on average: closed mouth
            return None
        lum = crop[inside].astype(np.float64).mean(axis=1)
        if np.percentile(lum, 60) < 110:  # a dark opening, not teeth
            return None
        return cv2.GaussianBlur(canvas, (3, 3), 0.8).astype(np.float32) / 255.0

    def render(self, t: int, o: float, out: np.ndarray) -> FrameInfo:
        """Draw template ``t`` opened to the smoothed openness ``o`` (quantised to 1/levels) into
        ``out`` (the template already there); returns what was done."""
        c = self.config
        rig = self.rig(t)
        level = int(round(o * c.levels))
        box = rig.box
        y1, y2, x1, x2 = box
        if level == 0:
            return FrameInfo(t, 0.0, "template", -1, -1, 1.0, 0.0, box, rig.mask, out[y1:y2, x1:x2].copy())
        source, mask = self.patch(t, rig, level)
        self.feather.blend(out, source, mask, box)
        ol = level / c.levels
        return FrameInfo(t, ol, "warp", -1, -1, 1.0, ol, box, mask, source)

    def patch(self, t: int, rig: WarpRig, level: int) -> tuple[np.ndarray, np.ndarray]:
        """The warped box of template t at openness ``level / levels`` (LRU-cached)."""
        key = (t, level)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._warp_patch(rig, np.asarray(self.avatar.frames[t]), level / self.config.levels)
            self._cache[key] = hit
            if len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit

    def _warp_patch(self, rig: WarpRig, frame: np.ndarray, o: float) -> tuple[np.ndarray, np.ndarray]:
        """The box of ``frame`` warped to openness ``o``, with the mouth interior painted."""
        y1, y2, x1, x2 = rig.box
        crop = np.ascontiguousarray(frame[y1:y2, x1:x2])
        warped = crop.copy()
        dst = rig.src + o * rig.disp  # (N, 2)
        # Only triangles with a moving corner need a map; the rest of the box is the identity.
        tris = rig.tris[rig.moving]
        tri_dst = dst[tris].astype(np.float64)  # (T, 3, 2)
        tri_src = rig.src[tris].astype(np.float64)
        # per triangle, the affine map dst -> src: src = s0 + S D^-1 (p - d0) (closed-form 2x2 inverse)
        dd = np.stack([tri_dst[:, 1] - tri_dst[:, 0], tri_dst[:, 2] - tri_dst[:, 0]], axis=2)  # (T, 2, 2)
        ss = np.stack([tri_src[:, 1] - tri_src[:, 0], tri_src[:, 2] - tri_src[:, 0]], axis=2)
        det = dd[:, 0, 0] * dd[:, 1, 1] - dd[:, 0, 1] * dd[:, 1, 0]
        ok = np.abs(det) > 1e-9
        dd, ss, det, tri_dst, tri_src = dd[ok], ss[ok], det[ok], tri_dst[ok], tri_src[ok]
        inv = np.stack(
            [np.stack([dd[:, 1, 1], -dd[:, 0, 1]], 1), np.stack([-dd[:, 1, 0], dd[:, 0, 0]], 1)], 1
        )
        lin = np.einsum("tij,tjk->tik", ss, inv / det[:, None, None])  # (T, 2, 2)
        trans = tri_src[:, 0] - np.einsum("tij,tj->ti", lin, tri_dst[:, 0])  # (T, 2)
        wy1, wy2, wx1, wx2 = rig.work
        ids = np.zeros((wy2 - wy1, wx2 - wx1), np.int32)
        fixed = np.round((tri_dst - (wx1, wy1)) * 16).astype(np.int32)
        for n in range(len(fixed)):
            cv2.fillConvexPoly(ids, fixed[n], n + 1, cv2.LINE_8, 4)
        xx, yy = rig.grid
        mapx, mapy = xx.copy(), yy.copy()
        sel = ids > 0
        tid = ids[sel] - 1
        m, tr = lin[tid], trans[tid]  # (P, 2, 2), (P, 2)
        px, py = xx[sel].astype(np.float64), yy[sel].astype(np.float64)
        mapx[sel] = m[:, 0, 0] * px + m[:, 0, 1] * py + tr[:, 0]
        mapy[sel] = m[:, 1, 0] * px + m[:, 1, 1] * py + tr[:, 1]
        warped[wy1:wy2, wx1:wx2] = cv2.remap(
            crop, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        self._paint_mouth(rig, warped, crop, dst, o)
        return warped, rig.mask

    def _paint_mouth(
        self, rig: WarpRig, img: np.ndarray, crop: np.ndarray, dst: np.ndarray, o: float
    ) -> None:
        """The mouth interior between the warped inner lip contours, in place: a dark red-brown
        gradient (darker in the middle) and upper teeth (the template's own, or a light band)."""
        up, lo = dst[rig.inner_upper].astype(np.float64), dst[rig.inner_lower].astype(np.float64)
        poly = np.vstack([up, lo[::-1][1:-1]])
        x, y = poly[:, 0], poly[:, 1]
        area = 0.5 * abs(float(x @ np.roll(y, 1) - y @ np.roll(x, 1)))
        if area < 1.0:
            return
        mid_gap = float(np.hypot(*(up[len(up) // 2] - lo[len(lo) // 2])))
        sig = max(0.8, mid_gap / 4.0)
        k = 2 * int(math.ceil(2.5 * sig)) + 1
        # work on the cavity's bounding rect (plus the blur's reach) only
        h, w = img.shape[:2]
        pad = k // 2 + 2
        rx1, ry1 = max(int(x.min()) - pad, 0), max(int(y.min()) - pad, 0)
        rx2, ry2 = min(int(math.ceil(x.max())) + pad, w), min(int(math.ceil(y.max())) + pad, h)
        if rx2 <= rx1 or ry2 <= ry1:
            return
        off = np.array([rx1, ry1], np.float64)
        rh, rw = ry2 - ry1, rx2 - rx1
        shift = 4
        cavity = np.zeros((rh, rw), np.uint8)
        cv2.fillPoly(
            cavity, [np.round((poly - off) * (1 << shift)).astype(np.int32)], 255, cv2.LINE_AA, shift
        )
        alpha = cv2.GaussianBlur(cavity, (3, 3), 0.7).astype(np.float32) * (1.0 / 255.0)
        # depth: a blurred copy of the cavity is ~1 deep inside, lower near the lips
        depth = cv2.GaussianBlur(cavity, (k, k), sig).astype(np.float32) * (1.0 / 255.0)
        depth = (0.85 * smoothstep(0.25, 1.0, depth)).astype(np.float32)[..., None]
        # dark red-brown: the lip colour darkened, and darker still in the middle
        edge = 0.5 * _CAVITY_EDGE + 0.3 * rig.lip_bgr * _CAVITY_TINT
        fill = edge * (1.0 - depth) + (0.4 * edge) * depth  # (rh, rw, 3)
        if rig.rest_teeth is not None:  # the template's own teeth stay in place
            ta = np.minimum(rig.rest_teeth[ry1:ry2, rx1:rx2], alpha)[..., None]
            fill = fill * (1.0 - ta) + crop[ry1:ry2, rx1:rx2].astype(np.float32) * ta
        elif self.config.teeth and mid_gap > 2.0:  # a band of upper teeth under the upper lip
            band = max(1.0, min(0.09 * rig.mouth_w, 0.3 * mid_gap))
            gx, gy = np.meshgrid(np.arange(rw) + off[0], np.arange(rh) + off[1])
            # across the mouth (-1..1 between the corners) and depth below the upper inner lip
            cu = up.mean(axis=0)
            acr = ((gx - cu[0]) * rig.u[0] + (gy - cu[1]) * rig.u[1]) / (0.5 * rig.mouth_w)
            lip_y = np.interp(acr, ((up - cu) @ rig.u) / (0.5 * rig.mouth_w), (up - cu) @ rig.v)
            dep = (gx - cu[0]) * rig.v[0] + (gy - cu[1]) * rig.v[1] - lip_y
            ta = smoothstep(-0.5, 0.5, dep) * (1.0 - smoothstep(band - 0.7, band + 0.7, dep))
            ta *= 1.0 - smoothstep(0.45, 0.8, np.abs(acr))  # the teeth do not reach the corners
            shade = (1.0 - 0.25 * np.clip(dep / band, 0.0, 1.0)) * (1.0 - 0.4 * acr * acr)  # lit from above
            tcol = _TEETH * shade.astype(np.float32)[..., None]
            ta = (0.9 * np.minimum(ta.astype(np.float32), alpha))[..., None]
            fill = fill * (1.0 - ta) + tcol * ta
        a3 = (alpha * float(smoothstep(0.0, 0.15, o)))[..., None]
        region = img[ry1:ry2, rx1:rx2]
        region[...] = np.clip(region * (1.0 - a3) + fill * a3 + 0.5, 0, 255).astype(np.uint8)
