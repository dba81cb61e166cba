"""A CPU real-time mouth renderer: the prepared avatar as a library of mouth shapes (issue 6).

The neural renderer needs about a second per frame on a small CPU. This module draws the mouth
without a network, fast enough for a live session on two cores:

- :class:`RetrievalRenderer` draws one output frame: template frame ``t`` with a mouth for a
  target *openness* in [0, 1] (and, optionally, target content landmarks, the IP_LAP transformer's
  (2, 57) prediction). Two modes:

  * ``"retrieval"`` (a video avatar whose mouth opens and closes): pick the avatar frame whose
    mouth best matches the target (openness, lip/jaw shape, head pose, continuity with the previous
    pick, a cost for switching), align its lower face to the template with a similarity transform
    fitted on stable landmarks (nose bridge and base, eye corners, cheekbones), and blend it in
    with a feathered lower-face mask (the union of both lower faces: nose base to chin, within
    half an eye-corner distance of the mouth centre across, kept inside both face ovals so that
    no background is mixed with skin). Picks that are not neighbours in the source video are
    cross-faded over a few frames. Silence picks the most closed mouths, and the template frame
    itself whenever its own mouth fits (then the output is the template exactly).
  * ``"warp"`` (a still image, or a video whose mouth never opens): open the mouth by a piecewise
    affine warp of the lower face (the lower lip and jaw move down by up to ``open_gain`` mouth
    widths, the upper lip slightly up, the corners a little down and in) and paint the mouth
    interior (a dark red-brown gradient, darker in the middle, with the template's own upper teeth
    kept in place when it shows them, else a light band of upper teeth). The warp is the identity
    outside a ring around the lower face, so nothing outside the mask changes; its triangles never
    fold (checked at build time, free points relaxed until they do not).

  Everything that does not depend on the target is computed once per avatar (library features,
  per-template canonical transforms and regions, triangulations); per-frame work touches only the
  lower-face box. Warped still frames are cached per (template, openness level).

- :class:`OpennessTracker` (streaming) and :func:`openness_curve` (a whole file) turn audio into
  openness per output frame when there is no transformer: the band-limited (300-3000 Hz) energy of
  the renderer's mel chunk around the frame's time, gated by the speech gate and an energy floor,
  normalised by a slowly adapting range (running peak and noise floor), smoothed with a fast attack
  and a slower release. Silence gives exactly 0.

Typical live use (one renderer and one tracker per session)::

    renderer = RetrievalRenderer(avatar)
    tracker = OpennessTracker()
    for window in scheduler.push(mel):              # engine.live.audio.LiveWindowScheduler
        o = tracker.push_window(window)
        frame = renderer.render(window.render_template, o)
        for p in window.output_indices: ...         # show `frame`
    # after a FLUSH / INTERRUPT: renderer.reset(); tracker.reset()

Neither class is thread-safe; both keep temporal state.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from engine.core.audio import (
    MEL_CHUNK_LEN,
    MEL_FPS,
    MelConfig,
    _hz_to_mel,
    _mel_to_hz,
    mel_chunks,
    melspectrogram,
)
from engine.core.landmark_sets import CONTENT_MP, FACE_OVAL_MP, N_CONTENT

__all__ = [
    "FrameInfo",
    "OpennessConfig",
    "OpennessTracker",
    "RetrievalConfig",
    "RetrievalRenderer",
    "openness_curve",
]

# --------------------------------------------------------------------------------------------
# FaceMesh index sets used here
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
_LIP_ALL = np.unique(np.concatenate([OUTER_UPPER_MP, OUTER_LOWER_MP, INNER_UPPER_MP, INNER_LOWER_MP]))
_LIP_LOWER = np.setdiff1d(np.concatenate([OUTER_LOWER_MP, INNER_LOWER_MP]), CORNERS_MP)
_LIP_UPPER = np.setdiff1d(np.concatenate([OUTER_UPPER_MP, INNER_UPPER_MP]), CORNERS_MP)
_N_MESH = 468  # the refined mesh's extra 10 points are irises

_CAVITY_EDGE = np.array([48.0, 58.0, 118.0], np.float32)  # BGR: dark red-brown near the lips
_CAVITY_TINT = np.array([0.8, 0.8, 1.0], np.float32)  # BGR: the mouth interior is redder than the lips
_TEETH = np.array([165.0, 180.0, 196.0], np.float32)  # BGR ivory (upper teeth band)

_CONTENT_LIP = np.arange(17, N_CONTENT)  # content columns: 17 jaw points, then 40 lip points
_CONTENT_JAW = np.arange(0, 17)


# --------------------------------------------------------------------------------------------
# Audio -> openness
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpennessConfig:
    """How audio becomes mouth openness (per output frame, 25 fps)."""

    band_hz: tuple[float, float] = (300.0, 3000.0)  # mel bins whose centre lies in this band
    #: Mel frames of the renderer chunk that count (a Hann window over them). The chunk of output
    #: frame p starts at (p - 2) * 40 ms, so its frame 6.4 is the frame's nominal time; the window
    #: is centred ~30 ms later, which makes up for the smoothing lag (and lips lead the sound).
    frames: tuple[int, int] = (6, 13)
    floor_db: float = -82.0  # band level (dB, mel scale) under which a frame is silence
    range_db: float = 25.0  # levels from (running peak - range_db) to the peak map to 0..1
    initial_peak_db: float = -48.0  # the running peak before any speech (a typical speech level)
    peak_decay_db: float = 0.06  # per voiced frame: the running peak falls 1.5 dB/s of speech
    noise_rise_db: float = 0.02  # per frame: the noise floor estimate creeps up (adapts to noise)
    noise_margin_db: float = 6.0  # levels within this of the noise floor map to 0
    gamma: float = 1.3  # openness = normalised level ** gamma
    attack: float = 0.85  # one-pole smoothing coefficient when opening (per frame)
    release: float = 0.5  # ... when closing
    snap: float = 0.02  # below this, a closing mouth snaps shut (silence gives exactly 0)


def _band_bins(band: tuple[float, float], cfg: MelConfig) -> np.ndarray:
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    centres = edges[1:-1]
    bins = np.flatnonzero((centres >= band[0]) & (centres <= band[1]))
    if bins.size == 0:
        raise ValueError(f"no mel bin has its centre in {band} Hz")
    return bins


class OpennessTracker:
    """Streaming audio -> openness in [0, 1], one value per renderer window / output frame.

    Feed it, in order, each :class:`engine.live.messages.MelWindow` the live scheduler makes
    (:meth:`push_window`), or a renderer mel chunk (80, 16) and a speech verdict (:meth:`push`).
    ``render_mel`` is the IP_LAP normalised log-mel in [-4, 4]; it is turned back into dB and the
    mean power of the bins in ``band_hz`` over the chunk frames around the output frame's time is
    the frame's *level*. A frame is silent (target 0) when the speech gate says so or the level is
    under ``floor_db``; otherwise the level is mapped linearly from ``(peak - range_db)`` (or the
    noise floor + margin, whichever is higher) to the running peak, clipped to [0, 1]. The result
    is smoothed with ``attack`` / ``release`` and snaps to 0 under ``snap`` when closing.
    """

    def __init__(self, config: OpennessConfig | None = None, mel_config: MelConfig | None = None) -> None:
        self.config = config if config is not None else OpennessConfig()
        self.mel_config = mel_config if mel_config is not None else MelConfig()
        c = self.config
        self._bins = _band_bins(c.band_hz, self.mel_config)
        lo, hi = c.frames
        if not 0 <= lo < hi <= MEL_CHUNK_LEN:
            raise ValueError(f"frames must satisfy 0 <= lo < hi <= {MEL_CHUNK_LEN}, got {c.frames}")
        w = np.hanning(hi - lo + 2)[1:-1]
        self._frames = slice(lo, hi)
        self._weights = (w / w.sum()).astype(np.float64)
        self.peak_db: float | None = None  # running peak of the band level (dB)
        self.noise_db: float | None = None  # running noise floor estimate (dB)
        self.reset()

    def reset(self, levels: bool = False) -> None:
        """Forget the smoothing state (after a flush); ``levels``: also forget the running peak and
        noise floor (a new speaker or audio source). By default the learnt level range is kept."""
        self.value = 0.0
        self.frames_total = 0
        if levels:
            self.peak_db = None
            self.noise_db = None

    def level_db(self, render_mel: np.ndarray) -> float:
        """Band level (dB) of one renderer mel chunk (80, 16) around the output frame's time."""
        m = np.asarray(render_mel, dtype=np.float64)
        cfg = self.mel_config
        if m.ndim != 2 or m.shape[0] != cfg.n_mels or m.shape[1] < self._frames.stop:
            raise ValueError(f"expected a mel chunk ({cfg.n_mels}, {MEL_CHUNK_LEN}), got {m.shape}")
        a = cfg.max_abs_value
        db = (m[self._bins, self._frames] + a) / (2 * a) * -cfg.min_level_db + cfg.min_level_db  # [-100, 0]
        power = np.power(10.0, db / 10.0).mean(axis=0)  # (frames,)
        return float(10.0 * np.log10(float(power @ self._weights) + 1e-20))

    def target(self, level_db: float, is_speech: bool = True) -> float:
        """The unsmoothed openness of one frame of level ``level_db``; updates the level range."""
        c = self.config
        voiced = bool(is_speech) and level_db >= c.floor_db
        # noise floor: follows the level down at once, creeps up slowly
        if self.noise_db is None or level_db < self.noise_db:
            self.noise_db = level_db
        else:
            self.noise_db += c.noise_rise_db
        if not voiced:
            return 0.0
        peak = c.initial_peak_db if self.peak_db is None else self.peak_db - c.peak_decay_db
        self.peak_db = max(peak, level_db, c.floor_db + c.range_db / 2)
        lo = max(self.peak_db - c.range_db, self.noise_db + c.noise_margin_db, c.floor_db)
        span = max(self.peak_db - lo, 1e-6)
        x = min(max((level_db - lo) / span, 0.0), 1.0)
        return x**c.gamma

    def push(self, render_mel: np.ndarray, is_speech: bool = True) -> float:
        """Openness of the next output frame from its renderer mel chunk and speech verdict."""
        return self.push_level(self.level_db(render_mel), is_speech)

    def push_level(self, level_db: float, is_speech: bool = True) -> float:
        """:meth:`push` for a level already measured with :meth:`level_db`."""
        raw = self.target(level_db, is_speech)
        c = self.config
        k = c.attack if raw > self.value else c.release
        v = self.value + k * (raw - self.value)
        if raw == 0.0 and v < c.snap:
            v = 0.0
        self.value = float(min(max(v, 0.0), 1.0))
        self.frames_total += 1
        return self.value

    def push_window(self, window) -> float:
        """:meth:`push` with a :class:`engine.live.messages.MelWindow` (its ``render_mel``, ``is_speech``).

        The value is the openness of every frame in ``window.output_indices``.
        """
        return self.push(window.render_mel, window.is_speech)


def openness_curve(
    audio16k: np.ndarray,
    fps: float = 25.0,
    config: OpennessConfig | None = None,
    speech_gate: bool = True,
    return_levels: bool = False,
):
    """Openness per output frame (n_frames,) float32 of a whole 16 kHz mono signal.

    The same numbers the live path gives (:class:`OpennessTracker` fed with the live scheduler's
    windows): frame p >= 2 uses the renderer chunk ``chunks[p - 2]``, frames 0..2 share chunk 0;
    ``n_frames`` is the number of mel chunks (as :func:`engine.core.audio.num_video_frames`). With
    ``speech_gate`` a :class:`engine.live.audio.SpeechGate` (webrtcvad + energy, default settings,
    as the live session) decides silence per chunk; otherwise only the energy floor does.
    ``return_levels``: also return the band level (dB) per frame.
    """
    x = np.asarray(audio16k, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono 16 kHz samples (n,), got shape {x.shape}")
    mcfg = MelConfig()
    chunks = mel_chunks(melspectrogram(x, mcfg), fps)  # (K, 80, 16)
    n = chunks.shape[0]
    out = np.zeros(n, np.float32)
    levels = np.full(n, np.nan, np.float32)
    gate = None
    if speech_gate:
        from engine.live.audio import SpeechGate

        gate = SpeechGate()
    pushed = 0
    tracker = OpennessTracker(config, mcfg)
    hop, half = mcfg.hop, mcfg.n_fft // 2
    for b in range(max(0, n - 2)):  # window b makes output frame b + 2 (and 0, 1 for b = 0)
        speech = True
        if gate is not None:
            s = int(b * (MEL_FPS / float(fps)))
            lo, hi = max(0, s * hop - half), (s + MEL_CHUNK_LEN - 1) * hop + half  # the chunk's samples
            # feed the gate as the live path does: past the span's end (its frames are decided),
            # and no further back than its history
            need = min(x.size, hi + gate.frame_len)
            if need > pushed:
                gate.push(x[pushed:need])
                pushed = need
            speech = gate.is_speech_between(lo, hi)
        level = tracker.level_db(chunks[b])
        v = tracker.push_level(level, speech)
        for p in (0, 1, 2) if b == 0 else (b + 2,):
            out[p], levels[p] = v, level
    return (out, levels) if return_levels else out


# --------------------------------------------------------------------------------------------
# Geometry helpers (complex numbers for 2-D points: z = x + i y)
# --------------------------------------------------------------------------------------------


def _cplx(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    return xy[..., 0] + 1j * xy[..., 1]


def _xy(z: np.ndarray) -> np.ndarray:
    return np.stack([np.real(z), np.imag(z)], axis=-1)


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[complex, complex]:
    """Least-squares similarity ``dst ~ k * src + c`` (no reflection) of complex point sets (K,).

    The closed form of ``cv2.estimateAffinePartial2D`` without RANSAC (deterministic).
    """
    ms, md = src.mean(), dst.mean()
    s, d = src - ms, dst - md
    k = np.vdot(s, d) / max(float(np.vdot(s, s).real), 1e-12)
    return complex(k), complex(md - k * ms)


def _affine(k: complex, c: complex, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The 2x3 matrix of ``z -> k z + c`` followed by a translation by ``-shift`` (x, y)."""
    return np.array(
        [[k.real, -k.imag, c.real - shift[0]], [k.imag, k.real, c.imag - shift[1]]], dtype=np.float64
    )


def _opening(z: np.ndarray, outer_weight: float) -> np.ndarray:
    """Mouth opening of complex meshes (..., 468+): inner-lip gap and outer lip height, mixed."""
    inner = np.abs(z[..., INNER_GAP_MP[0]] - z[..., INNER_GAP_MP[1]])
    outer = np.abs(z[..., OUTER_MID_MP[0]] - z[..., OUTER_MID_MP[1]])
    return (1.0 - outer_weight) * inner + outer_weight * outer


def _clip_halfplane(poly: np.ndarray, q: np.ndarray, n: np.ndarray) -> np.ndarray:
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


def _smoothstep(e0: float, e1: float, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / max(e1 - e0, 1e-9), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _signed_areas(tri_pts: np.ndarray) -> np.ndarray:
    """Signed areas (x2) of triangles (T, 3, 2)."""
    p = tri_pts
    return (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (
        p[:, 1, 1] - p[:, 0, 1]
    )


def _relax_folds(
    pts: np.ndarray, disp: np.ndarray, tris: np.ndarray, constrained: np.ndarray, min_ratio: float = 0.15
) -> np.ndarray:
    """Smooth the displacement of free points until no triangle folds (or shrinks under
    ``min_ratio`` of its area) at any openness: each free vertex of a bad triangle moves half-way
    towards the mean displacement of the bad triangles it belongs to."""
    disp = disp.copy()
    a0 = _signed_areas(pts[tris])
    free = ~constrained
    for _ in range(100):
        # areas are quadratic in the openness: check it at a few values, not only at 1
        worst = np.min(
            [_signed_areas((pts + o * disp)[tris]) * np.sign(a0) for o in (0.25, 0.5, 0.75, 1.0)], axis=0
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


@dataclass(frozen=True)
class _Face:
    """Per-frame geometry in frame pixels."""

    pts: np.ndarray  # (478, 2) float64 pixels
    u: np.ndarray  # unit vector along the eye line (image left -> right)
    v: np.ndarray  # unit vector down the face
    iod: float  # outer eye corner distance (px)
    mouth_c: np.ndarray  # mouth centre (between the outer corners)
    mouth_w: float  # mouth width (px)


def _face(pts: np.ndarray) -> _Face:
    a, b = pts[EYE_CORNERS_MP[0]], pts[EYE_CORNERS_MP[1]]
    u = b - a
    iod = float(np.hypot(*u))
    u = u / max(iod, 1e-9)
    v = np.array([-u[1], u[0]])
    ml, mr = pts[MOUTH_CORNERS_MP[0]], pts[MOUTH_CORNERS_MP[1]]
    return _Face(pts, u, v, iod, (ml + mr) / 2.0, float(np.hypot(*(mr - ml))))


def _lower_face_polygon(f: _Face, nose_offset: float = 0.08, half_width: float = 0.5) -> np.ndarray:
    """Lower face (K, 2): the face oval below a line just under the nose base, and within
    ``half_width`` eye-corner distances of the mouth centre across the face (so that ears, earrings
    and hair at the sides are never blended)."""
    oval = f.pts[FACE_OVAL_MP[:-1]]
    q = f.pts[NOSE_BASE_MP] + nose_offset * (f.pts[0] - f.pts[NOSE_BASE_MP])
    poly = _clip_halfplane(oval, q, f.v)
    for side in (1.0, -1.0):
        poly = _clip_halfplane(poly, f.mouth_c + side * half_width * f.iod * f.u, -side * f.u)
    return poly


def _fill_polys(canvas: np.ndarray, polys: list[np.ndarray], offset, scale: float) -> None:
    shift = 4
    for poly in polys:
        p = np.round((poly - offset) * scale * (1 << shift)).astype(np.int32)
        if len(p) >= 3:
            cv2.fillPoly(canvas, [p], 255, lineType=cv2.LINE_8, shift=shift)


# --------------------------------------------------------------------------------------------
# Renderer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalConfig:
    """Settings of :class:`RetrievalRenderer` (defaults suit 25 fps output)."""

    #: "auto": retrieval when the avatar's mouth opens enough across its frames, else warp.
    mode: str = "auto"
    min_library_range: float = 0.08  # mouth-opening range (eye-corner distances) needed for retrieval
    #: Mouth opening = (1 - w) * inner-lip gap + w * outer lip height (both open with the jaw; the
    #: outer height also sees pursed lips)
    outer_weight: float = 0.5

    # temporal behaviour
    smooth: float = 0.2  # one-pole smoothing of the target openness (0: none)
    max_step: float = 0.35  # largest change of the smoothed openness per frame
    max_jump: float = 0.35  # largest change of the picked mouth's library openness per frame
    crossfade_frames: int = 3  # a jump to a non-adjacent library frame is blended over this many

    # retrieval costs (dimensionless; lower is better)
    open_scale: float = 0.1  # an openness difference of this costs 1
    over_open: float = 0.6  # ... times this when the mouth is more open than the target (silence)
    shape_scale: float = 0.04  # canonical lip/jaw RMS distance (eye-corner units) that costs 1
    pose_scale: float = 0.03  # canonical stable-point RMS distance (template vs candidate) that costs 1
    pose_weight: float = 1.0
    continuity_weight: float = 0.5  # lip-shape distance to the previous pick (shape_scale units)
    switch_cost: float = 1.0  # a pick that is not the previous one or its video neighbour
    self_bonus: float = 0.3  # the template's own mouth (no alignment at all)

    # blending
    feather: float = 0.06  # mask blur sigma, in eye-corner distances
    erode: float = 0.25  # mask alpha below this (after the blur) is 0: the feather lies inside
    mask_scale: int = 4  # the mask is drawn and blurred at 1/mask_scale resolution

    # warp mode
    open_gain: float = 0.35  # lower-lip drop at openness 1, in mouth widths
    upper_lift: float = 0.1  # upper-lip rise, as a fraction of the drop
    corner_drop: float = 0.3  # mouth-corner drop, as a fraction of the drop
    levels: int = 32  # openness is quantised to 1/levels in warp mode (cached patches)
    cache_size: int = 64  # warped patches kept (LRU): all levels of a still fit
    teeth: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "retrieval", "warp"):
            raise ValueError(f"mode must be 'auto', 'retrieval' or 'warp', got {self.mode!r}")
        if self.crossfade_frames < 1 or self.levels < 1 or self.mask_scale < 1:
            raise ValueError("crossfade_frames, levels and mask_scale must be >= 1")
        if not 0.0 <= self.smooth < 1.0:
            raise ValueError("smooth must be in [0, 1)")


@dataclass(frozen=True)
class FrameInfo:
    """What :meth:`RetrievalRenderer.render` did for its last frame (for tests and debugging).

    Inside ``box`` the output is ``round(source * mask + template * (1 - mask))``; outside it the
    output is the template frame exactly.
    """

    template_index: int
    openness: float  # the smoothed openness drawn
    mode: str  # "retrieval", "warp" or "template" (the template frame itself, unchanged)
    pick: int  # library frame shown (retrieval), -1 otherwise
    fade_from: int  # library frame being faded out, -1 when none
    fade: float  # weight of ``pick`` in the cross-fade (1.0 when none)
    pick_openness: float  # library openness of the mouth shown (retrieval), or ``openness``
    box: tuple[int, int, int, int]  # (y1, y2, x1, x2) of the region written
    mask: np.ndarray  # (y2-y1, x2-x1) float32 alpha in [0, 1]
    source: np.ndarray  # (y2-y1, x2-x1, 3) uint8 BGR: what was blended over the template


@dataclass
class _WarpRig:
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


class RetrievalRenderer:
    """Draws the mouth of an avatar for a target openness, in real time on a CPU.

    One per session: it keeps temporal state (smoothed openness, current pick, cross-fade), which
    :meth:`reset` forgets. ``render(t, openness, content=None)`` returns the full frame (H, W, 3)
    uint8 BGR: template frame ``t`` with the mouth drawn; ``last`` describes it (:class:`FrameInfo`).

    ``avatar``: an :class:`engine.core.avatar.Avatar` (only ``frames``, ``points``, ``detected`` and
    ``boxes`` are used). ``mode`` tells which way it draws (``"retrieval"`` or ``"warp"``);
    ``library_openness`` (L,) is how open each avatar frame's mouth is on the target scale.
    Construction is cheap (tens of ms); warp data is built per template on first use, or
    beforehand with :meth:`precompute`.
    """

    def __init__(self, avatar, config: RetrievalConfig | None = None) -> None:
        self.avatar = avatar
        self.config = c = config if config is not None else RetrievalConfig()
        frames = avatar.frames
        self.n_frames, self.height, self.width = (
            int(frames.shape[0]),
            int(frames.shape[1]),
            int(frames.shape[2]),
        )
        h, w = self.height, self.width
        pts = np.asarray(avatar.points, dtype=np.float64)[:, :, :2] * (w, h)  # (L, 478, 2) pixels
        self._pts = pts
        self._faces = [_face(p) for p in pts]
        detected = np.asarray(avatar.detected, dtype=bool)
        self._valid = detected if detected.any() else np.ones(self.n_frames, bool)

        # Canonical frame: stable points Procrustes-aligned to their mean shape, eye distance 1.
        z = _cplx(pts[:, STABLE_MP])  # (L, K)
        zc = z - z.mean(axis=1, keepdims=True)
        e0, e1 = (int(np.flatnonzero(STABLE_MP == m)[0]) for m in EYE_CORNERS_MP)
        ref = zc[int(np.flatnonzero(self._valid)[0])]
        for _ in range(3):
            ref = ref / np.abs(ref[e0] - ref[e1])
            k = (np.conj(zc) * ref).sum(axis=1) / (np.abs(zc) ** 2).sum(axis=1)  # (L,)
            ref = (k[:, None] * zc)[self._valid].mean(axis=0)
        ref = ref / np.abs(ref[e0] - ref[e1])
        self._k = (np.conj(zc) * ref).sum(axis=1) / (np.abs(zc) ** 2).sum(axis=1)  # pixel -> canonical scale
        self._mu = z.mean(axis=1)  # (L,) centroid of the stable points
        self._stable_can = self._k[:, None] * zc  # (L, K)
        self._content_can = self._k[:, None] * (_cplx(pts[:, CONTENT_MP]) - self._mu[:, None])  # (L, 57)

        zc_all = _cplx(pts)
        #: (L,) mouth opening (mean of the inner-lip gap and the outer lip height) in eye-corner distances
        self.library_opening = gap = np.abs(self._k) * _opening(zc_all, c.outer_weight)
        vg = gap[self._valid]
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

        self._polys = [_lower_face_polygon(f) for f in self._faces]
        self._sigma = np.array([c.feather * f.iod for f in self._faces])
        self._boxes = [self._region_box(i) for i in range(self.n_frames)]
        self._tapers: dict[tuple, np.ndarray] = {}
        self._rigs: dict[int, _WarpRig] = {}
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.last: FrameInfo | None = None
        self.reset()

    # ---- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the temporal state (smoothed openness, current pick, cross-fade)."""
        self._o: float | None = None
        self._pick: int | None = None
        self._from: int | None = None
        self._fade_pos = 0

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
            self._render_warp(t, o, out)
        else:
            self._render_retrieval(t, o, target_can, out)
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
            rig = self._rig(int(t))
            if levels:
                for level in range(1, self.config.levels + 1):
                    self._patch(int(t), rig, level)

    def warp_mesh(self, template_index: int, openness: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Warp mode's mesh of a template, for inspection: control points at rest and at
        ``openness`` (N, 2) float32 in frame pixels, and the triangles (T, 3) int32."""
        rig = self._rig(int(template_index))
        off = np.array([rig.box[2], rig.box[0]], np.float32)
        o = min(max(float(openness), 0.0), 1.0)
        return rig.src + off, rig.src + o * rig.disp + off, rig.tris.copy()

    def region_box(self, template_index: int) -> tuple[int, int, int, int]:
        """(y1, y2, x1, x2): the only part of template frame ``template_index`` that can change."""
        if self.mode == "warp":
            return self._rig(int(template_index)).box
        return self._boxes[int(template_index)]

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
        can = self._k[t] * (z - self._mu[t])
        full = np.zeros(_N_MESH, complex)
        full[CONTENT_MP] = can
        gap = float(_opening(full, self.config.outer_weight))
        if self.mode == "warp":
            f = self._faces[t]
            rest = self.library_opening[t]
            drop = self.config.open_gain * f.mouth_w * abs(self._k[t])
            o = (gap - rest) / max(drop, 1e-9)
        else:
            o = (gap - self._gap_lo) / max(self._gap_hi - self._gap_lo, 1e-6)
        return can, float(min(max(o, 0.0), 1.0))

    def _region_box(self, i: int) -> tuple[int, int, int, int]:
        f, poly, s = self._faces[i], self._polys[i], self._sigma[i]
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        m = 3.0 * s + 2.0
        bottom = m + 0.35 * f.iod  # room for a lower chin
        x1, x2 = int(math.floor(lo[0] - m)), int(math.ceil(hi[0] + m))
        y1, y2 = int(math.floor(lo[1] - m)), int(math.ceil(hi[1] + bottom))
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, self.width), min(y2, self.height)
        if x2 - x1 < 4 or y2 - y1 < 4:
            raise ValueError(f"frame {i}: the lower face lies outside the frame")
        return y1, y2, x1, x2

    def _taper(self, box, r: int) -> np.ndarray:
        """(h, w) float32 over ``box``: 0 on its sides inside the frame, rising to 1 over ``r``
        pixels (sides on the frame's edge stay 1); keeps a mask 0 where the box meets the frame."""
        y1, y2, x1, x2 = box
        cut = (y1 > 0, y2 < self.height, x1 > 0, x2 < self.width)
        key = (y2 - y1, x2 - x1, r, cut)
        if key not in self._tapers:

            def ramp(n: int, lo: bool, hi: bool) -> np.ndarray:
                i = np.arange(n, dtype=np.float64)
                d = np.minimum(i if lo else np.inf, (n - 1 - i) if hi else np.inf)
                return _smoothstep(0.0, r, d)

            ry, rx = ramp(y2 - y1, cut[0], cut[1]), ramp(x2 - x1, cut[2], cut[3])
            self._tapers[key] = (ry[:, None] * rx[None, :]).astype(np.float32)
        return self._tapers[key]

    def _mask(
        self, polys: list[np.ndarray], box, sigma: float, limits: list[list[np.ndarray]] | None = None
    ) -> np.ndarray:
        """Feathered union of polygons (frame pixels) over ``box``, faded out inside the edges of
        the intersection of ``limits`` when given; float32 (h, w) in [0, 1]."""
        c = self.config
        y1, y2, x1, x2 = box
        h, w = y2 - y1, x2 - x1
        s = max(1, min(c.mask_scale, int(sigma / 1.5)))  # keep >= 1.5 px of blur at low resolution
        hs, ws = -(-h // s), -(-w // s)
        canvas = np.zeros((hs, ws), np.uint8)
        offset = np.array([x1, y1], np.float64)
        _fill_polys(canvas, polys, offset, 1.0 / s)
        sig = sigma / s
        k = 2 * int(math.ceil(3 * sig)) + 1
        small = cv2.GaussianBlur(canvas, (k, k), sig).astype(np.float32) * (1.0 / 255.0)
        if c.erode > 0:
            small = np.clip((small - c.erode) * (1.0 / (1.0 - c.erode)), 0.0, 1.0)
        if limits:  # inside all limits (each a union of polygons): 0 on their edges, 1 inside
            allowed = np.full_like(canvas, 255)
            for lim in limits:
                one = np.zeros_like(canvas)
                _fill_polys(one, lim, offset, 1.0 / s)
                allowed &= one
            a = cv2.GaussianBlur(allowed, (k, k), sig).astype(np.float32) * (1.0 / 255.0)
            small *= _smoothstep(0.5, 0.95, a).astype(np.float32)
        m = cv2.resize(small, (ws * s, hs * s), interpolation=cv2.INTER_LINEAR)[:h, :w] if s > 1 else small
        return m * self._taper(box, max(2, int(round(1.5 * sigma))))

    @staticmethod
    def _blend(out: np.ndarray, source: np.ndarray, mask: np.ndarray, box) -> None:
        y1, y2, x1, x2 = box
        region = out[y1:y2, x1:x2]
        region[...] = cv2.blendLinear(source, np.ascontiguousarray(region), mask, 1.0 - mask)

    # ---- retrieval ----------------------------------------------------------------------------

    def _choose(self, t: int, o: float, target_can: np.ndarray | None) -> int:
        c = self.config
        lib_o = self.library_openness
        diff = lib_o - o
        cost = (diff / np.where(diff > 0, c.open_scale * c.over_open, c.open_scale)) ** 2
        pose = (np.abs(self._stable_can - self._stable_can[t]) ** 2).mean(axis=1)
        cost += c.pose_weight * pose / c.pose_scale**2
        if target_can is not None:
            d = np.abs(self._content_can - target_can) ** 2  # (L, 57)
            shape = d[:, _CONTENT_LIP].mean(axis=1) + 0.5 * d[:, _CONTENT_JAW].mean(axis=1)
            cost += shape / c.shape_scale**2
        allowed = self._valid.copy()
        prev = self._pick
        if prev is not None:
            dprev = np.abs(self._content_can[:, _CONTENT_LIP] - self._content_can[prev, _CONTENT_LIP]) ** 2
            cost += c.continuity_weight * dprev.mean(axis=1) / c.shape_scale**2
            switch = np.full(self.n_frames, c.switch_cost)
            switch[max(0, prev - 1) : prev + 2] = 0.0
            cost += switch
            allowed &= np.abs(lib_o - lib_o[prev]) <= c.max_jump + 1e-9
            allowed[prev] = True
        cost[t] -= c.self_bonus
        cost[~allowed] = np.inf
        return int(np.argmin(cost))

    def _aligned(self, j: int, t: int, box) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Frame j warped onto template t over ``box``, and j's lower-face polygon, face oval and
        chin point, all in t's pixels."""
        y1, y2, x1, x2 = box
        if j == t:
            crop = np.ascontiguousarray(self.avatar.frames[t][y1:y2, x1:x2])
            return crop, self._polys[t], self._pts[t, FACE_OVAL_MP[:-1]], self._pts[t, CHIN_MP]
        src, dst = _cplx(self._pts[j, STABLE_MP]), _cplx(self._pts[t, STABLE_MP])
        k, cst = _similarity(src, dst)
        m = _affine(k, cst, (x1, y1))
        img = cv2.warpAffine(
            np.asarray(self.avatar.frames[j]),
            m,
            (x2 - x1, y2 - y1),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        poly = _xy(k * _cplx(self._polys[j]) + cst)
        oval = _xy(k * _cplx(self._pts[j, FACE_OVAL_MP[:-1]]) + cst)
        chin = _xy(k * complex(*self._pts[j, CHIN_MP]) + cst)
        return img, poly, oval, chin

    def _face_limit(
        self, t: int, oval: np.ndarray, chin: np.ndarray, other_chins: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Where a face (its oval, in t's pixels) may take part in the blend: its oval, and under
        its chin a band down to the lowest other chin (its neck may stand in for another face's
        lower chin there; beside its jaw, its background must not be mixed with another's skin)."""
        f = self._faces[t]
        drop = max(float((c - chin) @ f.v) for c in other_chins) + 0.05 * f.iod
        if drop <= 0:
            return [oval]
        w, up = 0.3 * f.iod * f.u, 0.3 * f.iod * f.v
        band = np.array([chin - w - up, chin + w - up, chin + w + drop * f.v, chin - w + drop * f.v])
        return [oval, band]

    def _render_retrieval(self, t: int, o: float, target_can, out: np.ndarray) -> None:
        c = self.config
        j = self._choose(t, o, target_can)
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
        box = self._boxes[t]
        y1, y2, x1, x2 = box
        # The mask: the lower faces of the template and of the picks, within every one of their
        # faces (each swept down to the lowest chin).
        shown = [self._aligned(j, t, box)]
        if self._from is not None:
            shown.append(self._aligned(self._from, t, box))
        src = shown[0][0]
        if len(shown) == 2:
            src = cv2.addWeighted(shown[1][0], 1.0 - fade, src, fade, 0.0)
        faces = [(self._pts[t, FACE_OVAL_MP[:-1]], self._pts[t, CHIN_MP])] + [(s[2], s[3]) for s in shown]
        chins = [c for _, c in faces]
        limits = [self._face_limit(t, oval, chin, chins) for oval, chin in faces]
        mask = self._mask([self._polys[t]] + [s[1] for s in shown], box, float(self._sigma[t]), limits)
        if j == t and self._from is None:
            mode = "template"  # the template's own mouth: nothing to change
        else:
            mode = "retrieval"
            self._blend(out, src, mask, box)
        self.last = FrameInfo(
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

    # ---- warp -------------------------------------------------------------------------------

    def _rig(self, t: int) -> _WarpRig:
        rig = self._rigs.get(t)
        if rig is None:
            rig = self._rigs[t] = self._build_rig(t)
        return rig

    def _build_rig(self, t: int) -> _WarpRig:
        """The warp of template t: control points, their displacement at openness 1, triangles."""
        c = self.config
        f = self._faces[t]
        pts = f.pts[:_N_MESH]
        d = c.open_gain * f.mouth_w  # drop of the lower lip at openness 1
        hw = f.mouth_w / 2.0

        # The moving region: the lower face and where it moves to, plus a margin. A ring of fixed
        # anchors around it keeps the warp the identity outside.
        poly = self._polys[t]
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
        x2, y2 = min(int(math.ceil(hi[0] + pad)), self.width), min(int(math.ceil(hi[1] + pad)), self.height)
        box = (y1, y2, x1, x2)
        bw, bh = x2 - x1, y2 - y1

        # Control points: the mesh points inside the ring (and all lip points), the ring, and the
        # box's corners and edge midpoints.
        ring32 = ring.astype(np.float32).reshape(-1, 1, 2)
        inside = np.array([cv2.pointPolygonTest(ring32, (float(p[0]), float(p[1])), True) > 1.0 for p in pts])
        inside[_LIP_ALL] = False
        # Points inside the lips or next to a lip contour point only crowd the triangulation there
        # (thin triangles that fold): the lip contours alone carry the lips.
        outer = np.vstack([pts[OUTER_UPPER_MP], pts[OUTER_LOWER_MP[::-1][1:-1]]]).astype(np.float32)
        near = 0.08 * f.mouth_w
        for i in np.flatnonzero(inside):
            p = (float(pts[i, 0]), float(pts[i, 1]))
            if (
                cv2.pointPolygonTest(outer, p, False) >= 0
                or np.hypot(*(pts[_LIP_ALL] - pts[i]).T).min() < near
            ):
                inside[i] = False
        mesh_idx = np.concatenate([_LIP_ALL, np.flatnonzero(inside)])  # lips first: they win merges
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
        in_lower = np.isin(mesh_idx, _LIP_LOWER)
        in_upper = np.isin(mesh_idx, _LIP_UPPER)
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
        w_down[beside] = prof[beside] * _smoothstep(0.0, b17, b[beside])
        w_down[corner] = c.corner_drop
        disp = np.zeros_like(local)
        disp[:n_mesh] = d * w_down[:, None] * f.v
        # the lips narrow a little as the mouth opens: a scaling across, about the mouth centre
        lips = np.isin(mesh_idx, _LIP_ALL)
        disp[:n_mesh][lips] -= (0.06 * d * np.clip(a[lips], -1.0, 1.0))[:, None] * f.u
        constrained = np.ones(len(local), bool)  # lips, ring and border keep their displacement
        constrained[:n_mesh] = np.isin(mesh_idx, _LIP_ALL)

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
        disp = _relax_folds(local, disp, tris, constrained)

        moving = (np.abs(disp[tris]) > 1e-6).any(axis=(1, 2))
        reach = np.vstack([local[tris[moving]].reshape(-1, 2), (local + disp)[tris[moving]].reshape(-1, 2)])
        wx1, wy1 = np.maximum(np.floor(reach.min(axis=0)).astype(int) - 1, 0)
        wx2, wy2 = np.minimum(np.ceil(reach.max(axis=0)).astype(int) + 2, (bw, bh))
        gx, gy = np.meshgrid(np.arange(wx1, wx2, dtype=np.float32), np.arange(wy1, wy2, dtype=np.float32))
        return _WarpRig(
            box=box,
            src=local.astype(np.float32),
            disp=disp.astype(np.float32),
            tris=tris,
            inner_upper=merged[[where[int(m)] for m in INNER_UPPER_MP]],
            inner_lower=merged[[where[int(m)] for m in INNER_LOWER_MP]],
            mask=self._mask([ring], box, float(self._sigma[t])),
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
        f = self._faces[t]
        frame = np.asarray(self.avatar.frames[t])
        lo, hi = (
            np.floor(f.pts[_LIP_ALL].min(axis=0)).astype(int),
            np.ceil(f.pts[_LIP_ALL].max(axis=0)).astype(int),
        )
        x1, y1 = max(lo[0] - 1, 0), max(lo[1] - 1, 0)
        x2, y2 = min(hi[0] + 2, self.width), min(hi[1] + 2, self.height)
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
        f = self._faces[t]
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

    def _render_warp(self, t: int, o: float, out: np.ndarray) -> None:
        c = self.config
        rig = self._rig(t)
        level = int(round(o * c.levels))
        box = rig.box
        y1, y2, x1, x2 = box
        if level == 0:
            self.last = FrameInfo(
                t, 0.0, "template", -1, -1, 1.0, 0.0, box, rig.mask, out[y1:y2, x1:x2].copy()
            )
            return
        source, mask = self._patch(t, rig, level)
        self._blend(out, source, mask, box)
        ol = level / c.levels
        self.last = FrameInfo(t, ol, "warp", -1, -1, 1.0, ol, box, mask, source)

    def _patch(self, t: int, rig: _WarpRig, level: int) -> tuple[np.ndarray, np.ndarray]:
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

    def _warp_patch(self, rig: _WarpRig, frame: np.ndarray, o: float) -> tuple[np.ndarray, np.ndarray]:
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
        self, rig: _WarpRig, img: np.ndarray, crop: np.ndarray, dst: np.ndarray, o: float
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
        depth = (0.85 * _smoothstep(0.25, 1.0, depth)).astype(np.float32)[..., None]
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
            ta = _smoothstep(-0.5, 0.5, dep) * (1.0 - _smoothstep(band - 0.7, band + 0.7, dep))
            ta *= 1.0 - _smoothstep(0.45, 0.8, np.abs(acr))  # the teeth do not reach the corners
            shade = (1.0 - 0.25 * np.clip(dep / band, 0.0, 1.0)) * (1.0 - 0.4 * acr * acr)  # lit from above
            tcol = _TEETH * shade.astype(np.float32)[..., None]
            ta = (0.9 * np.minimum(ta.astype(np.float32), alpha))[..., None]
            fill = fill * (1.0 - ta) + tcol * ta
        a3 = (alpha * float(_smoothstep(0.0, 0.15, o)))[..., None]
        region = img[ry1:ry2, rx1:rx2]
        region[...] = np.clip(region * (1.0 - a3) + fill * a3 + 0.5, 0, 255).astype(np.uint8)
