"""The preview renderer's mouth-library mode (``mode="retrieval"``, for a video avatar whose mouth
opens and closes): per output frame, choose the avatar frame whose mouth best fits the target,
align its lower face to the template with a similarity transform on stable landmarks, and blend it
in with a feathered lower-face mask; jumps in the source video are cross-faded. Keeps the current
pick and fade between frames. See docs/preview_renderer.md.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.core.landmark_sets import N_CONTENT
from engine.synth.preview.config import FrameInfo, PreviewConfig
from engine.synth.preview.geometry import (
    CHIN_MP,
    OVAL_MP,
    STABLE_MP,
    FaceTrack,
    Feather,
    affine,
    cplx,
    similarity,
    xy,
)

__all__ = ["LibraryMode"]

_CONTENT_LIP = np.arange(17, N_CONTENT)  # content columns: 17 jaw points, then 40 lip points
_CONTENT_JAW = np.arange(0, 17)


class LibraryMode:
    """Draws template frame ``t`` with another avatar frame's mouth (see the module docstring).

    ``library_openness`` (L,): how open each avatar frame's mouth is on the target's [0, 1] scale.
    :meth:`render` keeps the current pick and cross-fade, which :meth:`reset` forgets.
    """

    def __init__(
        self,
        avatar,
        track: FaceTrack,
        library_openness: np.ndarray,
        config: PreviewConfig,
        feather: Feather,
    ) -> None:
        self.avatar = avatar
        self.track = track
        self.library_openness = library_openness
        self.config = config
        self.feather = feather
        self.n_frames = len(track.faces)
        self.reset()

    def reset(self) -> None:
        """Forget the current pick and cross-fade."""
        self._pick: int | None = None
        self._from: int | None = None
        self._fade_pos = 0

    def choose(self, t: int, o: float, target_can: np.ndarray | None) -> int:
        """The library frame to show on template ``t`` for openness ``o`` (and canonical target
        content points, when given): the lowest cost of openness, pose, lip/jaw shape, continuity
        and switching, among the frames within ``max_jump`` of the current pick's openness."""
        c = self.config
        tr = self.track
        lib_o = self.library_openness
        diff = lib_o - o
        cost = (diff / np.where(diff > 0, c.open_scale * c.over_open, c.open_scale)) ** 2
        pose = (np.abs(tr.stable_can - tr.stable_can[t]) ** 2).mean(axis=1)
        cost += c.pose_weight * pose / c.pose_scale**2
        if target_can is not None:
            d = np.abs(tr.content_can - target_can) ** 2  # (L, 57)
            shape = d[:, _CONTENT_LIP].mean(axis=1) + 0.5 * d[:, _CONTENT_JAW].mean(axis=1)
            cost += shape / c.shape_scale**2
        allowed = tr.valid.copy()
        prev = self._pick
        if prev is not None:
            dprev = np.abs(tr.content_can[:, _CONTENT_LIP] - tr.content_can[prev, _CONTENT_LIP]) ** 2
            cost += c.continuity_weight * dprev.mean(axis=1) / c.shape_scale**2
            switch = np.full(self.n_frames, c.switch_cost)
            switch[max(0, prev - 1) : prev + 2] = 0.0
            cost += switch
            allowed &= np.abs(lib_o - lib_o[prev]) <= c.max_jump + 1e-9
            allowed[prev] = True
        cost[t] -= c.self_bonus
        cost[~allowed] = np.inf
        return int(np.argmin(cost))

    def aligned(self, j: int, t: int, box) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Frame j warped onto template t over ``box``, and j's lower-face polygon, face oval and
        chin point, all in t's pixels."""
        tr = self.track
        y1, y2, x1, x2 = box
        if j == t:
            crop = np.ascontiguousarray(self.avatar.frames[t][y1:y2, x1:x2])
            return crop, tr.polys[t], tr.pts[t, OVAL_MP], tr.pts[t, CHIN_MP]
        src, dst = cplx(tr.pts[j, STABLE_MP]), cplx(tr.pts[t, STABLE_MP])
        k, cst = similarity(src, dst)
        m = affine(k, cst, (x1, y1))
        img = cv2.warpAffine(
            np.asarray(self.avatar.frames[j]),
            m,
            (x2 - x1, y2 - y1),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        poly = xy(k * cplx(tr.polys[j]) + cst)
        oval = xy(k * cplx(tr.pts[j, OVAL_MP]) + cst)
        chin = xy(k * complex(*tr.pts[j, CHIN_MP]) + cst)
        return img, poly, oval, chin

    def face_limit(
        self, t: int, oval: np.ndarray, chin: np.ndarray, other_chins: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Where a face (its oval, in t's pixels) may take part in the blend: its oval, and under
        its chin a band down to the lowest other chin (its neck may stand in for another face's
        lower chin there; beside its jaw, its background must not be mixed with another's skin)."""
        f = self.track.faces[t]
        drop = max(float((c - chin) @ f.v) for c in other_chins) + 0.05 * f.iod
        if drop <= 0:
            return [oval]
        w, up = 0.3 * f.iod * f.u, 0.3 * f.iod * f.v
        band = np.array([chin - w - up, chin + w - up, chin + w + drop * f.v, chin - w + drop * f.v])
        return [oval, band]

    def render(self, t: int, o: float, target_can, out: np.ndarray) -> FrameInfo:
        """Draw the chosen mouth into ``out`` (template ``t`` already there) for the smoothed
        openness ``o``; returns what was done."""
        c = self.config
        tr = self.track
        j = self.choose(t, o, target_can)
        prev = self._pick
        if prev is not None and abs(j - prev) > 1:  # a jump in the source video: cross-fade
            if self._from is None or self._fade_pos * 2 >= c.crossfade_frames:
                self._from = prev  # fade out what is (mostly) shown now
            self._fade_pos = 0
        # (the next or previous source frame is a natural continuation: no new fade)
        self._pick = j
        fade = 1.0
        if self._from is not None:
            self._fade_pos += 1
            fade = self._fade_pos / c.crossfade_frames
            if fade >= 1.0 or self._from == j:
                self._from, self._fade_pos, fade = None, 0, 1.0
        box = tr.boxes[t]
        # The mask: the lower faces of the template and of the picks, within every one of their
        # faces (each swept down to the lowest chin).
        shown = [self.aligned(j, t, box)]
        if self._from is not None:
            shown.append(self.aligned(self._from, t, box))
        src = shown[0][0]
        if len(shown) == 2:
            src = cv2.addWeighted(shown[1][0], 1.0 - fade, src, fade, 0.0)
        faces = [(tr.pts[t, OVAL_MP], tr.pts[t, CHIN_MP])] + [(s[2], s[3]) for s in shown]
        chins = [c for _, c in faces]
        limits = [self.face_limit(t, oval, chin, chins) for oval, chin in faces]
        mask = self.feather.mask([tr.polys[t]] + [s[1] for s in shown], box, float(tr.sigma[t]), limits)
        if j == t and self._from is None:
            mode = "template"  # the template's own mouth: nothing to change
        else:
            mode = "retrieval"
            self.feather.blend(out, src, mask, box)
        return FrameInfo(
            template_index=t,
            openness=o,
            mode=mode,
            pick=j,
            fade_from=-1 if self._from is None else int(self._from),
            fade=float(fade),
            pick_openness=float(self.library_openness[j]),
            box=box,
            mask=mask,
            source=src,
        )
