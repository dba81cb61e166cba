"""What the preview renderer is told (:class:`PreviewConfig`) and what it reports about each frame
it draws (:class:`FrameInfo`). Plain frozen dataclasses, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameInfo", "PreviewConfig"]


@dataclass(frozen=True)
class PreviewConfig:
    """Settings of the :class:`~engine.synth.preview.PreviewRenderer` (defaults suit 25 fps output)."""

    #: "retrieval" (the mouth-library mode), "warp" (the photo mode) or "auto": retrieval when the
    #: avatar's mouth opens enough across its frames, else warp.
    mode: str = "auto"
    min_library_range: float = 0.08  # mouth-opening range (eye-corner distances) needed for retrieval
    #: Mouth opening = (1 - w) * inner-lip gap + w * outer lip height (both open with the jaw; the
    #: outer height also sees pursed lips)
    outer_weight: float = 0.5

    # temporal behaviour
    smooth: float = 0.2  # one-pole smoothing of the target openness (0: none)
    max_step: float = 0.6  # largest change of the smoothed openness per frame
    max_jump: float = 0.6  # largest change of the picked mouth's library openness per frame
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
    """What ``PreviewRenderer.render`` did for its last frame (for tests and debugging).

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
