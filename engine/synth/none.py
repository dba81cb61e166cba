"""The ``none`` synthesizer: the avatar at rest for every frame, no model and no look-ahead (what a
server without weights streams while the audio passes through)."""

from __future__ import annotations

import numpy as np

from engine.core.avatar import Avatar
from engine.core.frames import Frame
from engine.core.lookahead import FrameAnalysis
from engine.synth.base import Computed, Planned, planned_timing, rest_frame

__all__ = ["NoneSynthesizer"]


class NoneSynthesizer:
    name = "none"
    # it reads no audio: one window per frame, due at the frame's own start (the mel frames before it,
    # which nothing uses), so the live session schedules it with no look-ahead
    frame_analysis = FrameAnalysis(-2, -1)
    lookahead_ms = frame_analysis.lookahead_ms  # 0
    computes = False

    def open(self, avatar: Avatar, crossfade: int = 0, audio: np.ndarray | None = None) -> NoneSynthesizer:
        return self  # stateless: one stream serves every session

    def set_avatar(self, avatar: Avatar) -> None:
        pass

    def audio_ahead(self) -> None:
        return None

    def compute(self, avatar: Avatar, group: list[Planned]) -> Computed:
        return Computed(group, {})

    def compose(self, avatar: Avatar, computed: Computed, gen: int = 0) -> list[Frame]:
        return [
            rest_frame(avatar, q, planned_timing(it), it.action)
            for it in computed.group
            for q in it.window.output_indices
        ]

    def warm_up(self, avatar: Avatar) -> float:
        return 0.0

    def release(self, avatar: Avatar) -> None:
        pass

    def close(self) -> None:
        pass
