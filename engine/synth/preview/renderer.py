"""The preview renderer: a CPU real-time mouth renderer that draws template frame ``t`` of a
prepared avatar with a mouth for a target openness (or target content landmarks). It measures the
avatar's faces once, picks its mode (the mouth library for a video whose mouth moves, else the
photo warp), smooths the target over time and hands each frame to the mode. See
docs/preview_renderer.md.
"""

from __future__ import annotations

import math

import numpy as np

from engine.core.landmark_sets import CONTENT_MP, N_CONTENT
from engine.synth.preview.config import FrameInfo, PreviewConfig
from engine.synth.preview.geometry import (
    N_MESH,
    FaceTrack,
    Feather,
    canonical,
    cplx,
    face,
    lower_face_polygon,
    opening,
    region_box,
)
from engine.synth.preview.library import LibraryMode
from engine.synth.preview.photo import PhotoMode

__all__ = ["FrameInfo", "PreviewConfig", "PreviewRenderer"]


class PreviewRenderer:
    """Draws the mouth of an avatar for a target openness, in real time on a CPU.

    One per session: it keeps temporal state (smoothed openness, current pick, cross-fade), which
    :meth:`reset` forgets. ``render(t, openness, content=None)`` returns the full frame (H, W, 3)
    uint8 BGR: template frame ``t`` with the mouth drawn; ``last`` describes it (:class:`FrameInfo`).

    ``avatar``: an :class:`engine.core.avatar.Avatar` (only ``frames``, ``points``, ``detected`` and
    ``boxes`` are used). ``mode`` tells which way it draws (``"retrieval"`` or ``"warp"``);
    ``library_openness`` (L,) is how open each avatar frame's mouth is on the target scale.
    Construction is cheap (tens of ms); warp data is built per template on first use, or
    beforehand with :meth:`precompute`. Not thread-safe.
    """

    def __init__(self, avatar, config: PreviewConfig | None = None) -> None:
        self.avatar = avatar
        self.config = c = config if config is not None else PreviewConfig()
        frames = avatar.frames
        self.n_frames, self.height, self.width = (
            int(frames.shape[0]),
            int(frames.shape[1]),
            int(frames.shape[2]),
        )
        h, w = self.height, self.width
        pts = np.asarray(avatar.points, dtype=np.float64)[:, :, :2] * (w, h)  # (L, 478, 2) pixels
        faces = [face(p) for p in pts]
        detected = np.asarray(avatar.detected, dtype=bool)
        valid = detected if detected.any() else np.ones(self.n_frames, bool)
        # Canonical frame: stable points Procrustes-aligned to their mean shape, eye distance 1.
        k, mu, stable_can, content_can = canonical(pts, valid)

        zc_all = cplx(pts)
        #: (L,) mouth opening (mean of the inner-lip gap and the outer lip height) in eye-corner distances
        self.library_opening = gap = np.abs(k) * opening(zc_all, c.outer_weight)
        vg = gap[valid]
        self._gap_lo, self._gap_hi = float(np.percentile(vg, 2)), float(np.percentile(vg, 98))
        span = self._gap_hi - self._gap_lo
        #: (L,) how open each avatar frame's mouth is, on the target's [0, 1] scale
        self.library_openness = np.clip((gap - self._gap_lo) / max(span, 1e-6), 0.0, 1.0)
        if c.mode == "auto":
            self.mode = "retrieval" if self.n_frames > 1 and span >= c.min_library_range else "warp"
        else:
            self.mode = c.mode
        if self.mode == "retrieval" and self.n_frames < 2:
            raise ValueError("retrieval needs a video avatar (more than one frame); use mode='warp'")

        polys = [lower_face_polygon(f) for f in faces]
        sigma = np.array([c.feather * f.iod for f in faces])
        boxes = [region_box(faces[i], polys[i], sigma[i], h, w, i) for i in range(self.n_frames)]
        self._track = track = FaceTrack(
            pts, faces, valid, k, mu, stable_can, content_can, polys, sigma, boxes
        )
        feather = Feather(h, w, c.mask_scale, c.erode)
        self._library = LibraryMode(avatar, track, self.library_openness, c, feather)
        self._photo = PhotoMode(avatar, track, c, feather)
        self.last: FrameInfo | None = None
        self.reset()

    # ---- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the temporal state (smoothed openness, current pick, cross-fade)."""
        self._o: float | None = None
        self._library.reset()

    # ---- public -----------------------------------------------------------------------------

    def render(
        self,
        template_index: int,
        openness: float | None,
        content: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Template frame ``template_index`` with the mouth for ``openness`` (full frame, uint8 BGR).

        ``openness``: the target in [0, 1] (0 closed, 1 the widest mouth; clipped, NaN counts as 0).
        ``content``: optional target content landmarks (2, 57) (17 jaw + 40 lip points, normalised
        to the template's crop box ``avatar.boxes[t]``, as the IP_LAP transformer predicts them);
        when given, the target openness is measured from them (``openness`` may be None and is
        ignored), and in retrieval mode the lip/jaw shape is matched too.
        ``out``: an optional (H, W, 3) uint8 array to write into (returned).
        """
        t = int(template_index)
        if not 0 <= t < self.n_frames:
            raise IndexError(f"template index {t} out of range for {self.n_frames} frames")
        target_can = None
        if content is not None:
            target_can, o = self._content_target(t, content)
        elif openness is None:
            raise ValueError("render() needs an openness or content landmarks")
        else:
            o = float(openness)
            o = 0.0 if not math.isfinite(o) else min(max(o, 0.0), 1.0)
        o = self._smooth(o)
        template = self.avatar.frames[t]
        if out is None:
            out = np.array(template, copy=True)
        else:
            np.copyto(out, template)
        if self.mode == "warp":
            self.last = self._photo.render(t, o, out)
        else:
            self.last = self._library.render(t, o, target_can, out)
        return out

    def content_openness(self, template_index: int, content: np.ndarray) -> float:
        """The openness in [0, 1] that content landmarks (2, 57) of template ``template_index`` show."""
        return self._content_target(int(template_index), content)[1]

    def precompute(self, templates=None, levels: bool = False) -> None:
        """Build now what warp mode otherwise builds on first use: the warp of each template in
        ``templates`` (default: all), and with ``levels`` also its warped patch at every openness
        level (kept up to ``cache_size``). Nothing to do in retrieval mode."""
        if self.mode != "warp":
            return
        for t in range(self.n_frames) if templates is None else templates:
            rig = self._photo.rig(int(t))
            if levels:
                for level in range(1, self.config.levels + 1):
                    self._photo.patch(int(t), rig, level)

    def warp_mesh(self, template_index: int, openness: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Warp mode's mesh of a template, for inspection: control points at rest and at
        ``openness`` (N, 2) float32 in frame pixels, and the triangles (T, 3) int32."""
        rig = self._photo.rig(int(template_index))
        off = np.array([rig.box[2], rig.box[0]], np.float32)
        o = min(max(float(openness), 0.0), 1.0)
        return rig.src + off, rig.src + o * rig.disp + off, rig.tris.copy()

    def region_box(self, template_index: int) -> tuple[int, int, int, int]:
        """(y1, y2, x1, x2): the only part of template frame ``template_index`` that can change."""
        if self.mode == "warp":
            return self._photo.rig(int(template_index)).box
        return self._track.boxes[int(template_index)]

    # ---- shared -----------------------------------------------------------------------------

    def _smooth(self, o: float) -> float:
        c = self.config
        if self._o is None:
            self._o = o
        else:
            step = (1.0 - c.smooth) * (o - self._o)
            self._o = self._o + min(max(step, -c.max_step), c.max_step)
            if o == 0.0 and self._o < 1e-3:
                self._o = 0.0
        return self._o

    def _content_target(self, t: int, content: np.ndarray) -> tuple[np.ndarray, float]:
        cnt = np.asarray(content, dtype=np.float64)
        if cnt.shape != (2, N_CONTENT) or not np.isfinite(cnt).all():
            raise ValueError(f"content must be finite, of shape (2, {N_CONTENT}); got {cnt.shape}")
        y1, y2, x1, x2 = (float(v) for v in self.avatar.boxes[t])
        z = (x1 + cnt[0] * (x2 - x1)) + 1j * (y1 + cnt[1] * (y2 - y1))  # template pixels
        tr = self._track
        can = tr.k[t] * (z - tr.mu[t])
        full = np.zeros(N_MESH, complex)
        full[CONTENT_MP] = can
        gap = float(opening(full, self.config.outer_weight))
        if self.mode == "warp":
            f = tr.faces[t]
            rest = self.library_opening[t]
            drop = self.config.open_gain * f.mouth_w * abs(tr.k[t])
            o = (gap - rest) / max(drop, 1e-9)
        else:
            o = (gap - self._gap_lo) / max(self._gap_hi - self._gap_lo, 1e-6)
        return can, float(min(max(o, 0.0), 1.0))
