"""The preview synthesizer: the CPU preview renderer as a :class:`engine.synth.base.Synthesizer`.

Every window with audio is drawn (speech and silence alike, so the mouth closes smoothly): its mouth
openness comes from the audio (an :class:`OpennessTracker` fed window by window in a live session, the
whole clip's :func:`openness_curve` when the audio is known in advance, as in offline dubbing), or from
the IP_LAP transformer's predicted lips when a landmark model is given. One renderer per avatar, per
stream; nothing is shared between sessions.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from engine.core.avatar import Avatar
from engine.core.frames import Box, Frame, FrameKind
from engine.core.lookahead import FrameAnalysis
from engine.core.schedule import LOOKAHEAD_MS, pingpong
from engine.synth.base import CallInfo, Computed, Planned, planned_timing, readonly, rest_frame
from engine.synth.neural import FaceGenerator, StageTimes
from engine.synth.preview import (
    OpennessConfig,
    OpennessTracker,
    PreviewConfig,
    PreviewRenderer,
    StreamingOpenness,
    openness_curve,
)

__all__ = ["PreviewStream", "PreviewSynthesizer"]


class PreviewSynthesizer:
    """See the module docstring. ``landmark_model``: when given, the transformer drives the mouth;
    ``openness``: how audio becomes openness otherwise.

    Look-ahead: from audio alone a frame needs only the mel frames of its openness analysis
    (``frame_analysis``, from ``openness.frames``: ``lookahead_ms`` = 50 ms by default), and the live
    session makes one window per frame as soon as they exist; with a landmark model it needs the
    transformer's windows (``frame_analysis`` None, 212.5 ms)."""

    name = "preview"
    computes = True

    def __init__(
        self, config: PreviewConfig | None = None, landmark_model=None, openness: OpennessConfig | None = None
    ) -> None:
        self.config = config or PreviewConfig()
        self.landmark_model = landmark_model
        self.openness = openness or OpennessConfig()
        self.frame_analysis: FrameAnalysis | None = None
        self.lookahead_ms = LOOKAHEAD_MS
        if landmark_model is None:
            self.frame_analysis = OpennessTracker(self.openness).analysis
            self.lookahead_ms = self.frame_analysis.lookahead_ms
        self.times = StageTimes()

    def open(self, avatar: Avatar, crossfade: int = 0, audio: np.ndarray | None = None) -> PreviewStream:
        return PreviewStream(self, avatar, audio)

    def warm_up(self, avatar: Avatar) -> float:
        return 0.0

    def release(self, avatar: Avatar) -> None:
        pass

    def close(self) -> None:
        pass


class PreviewStream:
    def __init__(self, synth: PreviewSynthesizer, avatar: Avatar, audio: np.ndarray | None = None) -> None:
        self.synth = synth
        self._renderers: dict[str, PreviewRenderer] = {}
        self._tracker = OpennessTracker(synth.openness)
        self._curve = None
        if audio is not None:  # the whole clip is known: the offline openness curve
            t0 = time.perf_counter()
            self._curve = openness_curve(audio, config=synth.openness)
            synth.times.add("openness", t0)
        self._gen = 0
        self._lm = None if synth.landmark_model is None else FaceGenerator(synth.landmark_model, None)
        self._lm_refs = None
        self.set_avatar(avatar)

    def audio_ahead(self) -> StreamingOpenness:
        """For a dub whose audio streams ahead of its windows: the openness values of the whole clip's
        curve, computed as the audio comes (feed it ``add_samples``, ``end`` and each ``window``); each
        output frame is then drawn with them, as with ``audio`` given whole."""
        self._curve = StreamingOpenness(self.synth.times, self.synth.openness)
        return self._curve

    def set_avatar(self, avatar: Avatar) -> None:
        if self._lm is not None:
            self._lm_refs = self._lm.references(avatar)

    def _renderer(self, avatar: Avatar) -> PreviewRenderer:
        key = str(avatar.folder)
        r = self._renderers.get(key)
        if r is None:
            r = self._renderers[key] = PreviewRenderer(avatar, self.synth.config)
        return r

    def compute(self, avatar: Avatar, group: list[Planned]) -> Computed:
        """The transformer's content landmarks of the speech windows (when it drives the mouth)."""
        out = Computed(group, {})
        out.info = CallInfo(time.perf_counter(), 0.0, 0)
        speech = [i for i, it in enumerate(group) if it.action is FrameKind.SPEECH]
        if self._lm is not None and speech:
            with torch.inference_mode():
                cont = self._lm.content(avatar, [group[i].window for i in speech], self._lm_refs)
            out.results = dict(zip(speech, cont, strict=True))
            out.split = {"transformer": time.perf_counter() - out.info.model_start}
        return out

    def compose(self, avatar: Avatar, computed: Computed, gen: int = 0) -> list[Frame]:
        """Every window with audio through the preview renderer (a few ms each), rest frames otherwise."""
        if gen != self._gen:  # a flush or an avatar switch happened: no carry-over
            self._gen = gen
            self._tracker.reset()
            for r in self._renderers.values():
                r.reset()
        renderer, info = self._renderer(avatar), computed.info
        transformer_s = (computed.split or {}).get("transformer", 0.0)
        out: list[Frame] = []
        drawn = 0
        for i, it in enumerate(computed.group):
            w = it.window
            timing = planned_timing(it)
            if it.action is FrameKind.DROPPED or not w.mel.size:
                out += [rest_frame(avatar, q, timing.copy(), it.action) for q in w.output_indices]
                continue
            drawn += 1
            kind = FrameKind.SPEECH if w.is_speech else FrameKind.REST
            if self._curve is not None:  # one frame per output index, on its own template (offline)
                for q in w.output_indices:
                    t0 = time.perf_counter()
                    ti = int(pingpong(q, avatar.n_frames))
                    img = renderer.render(ti, float(self._curve[min(q, len(self._curve) - 1)]))
                    self.synth.times.add("preview", t0)
                    out.append(self._frame(q, kind, img, renderer, timing, info, transformer_s, ti))
                continue
            o = self._tracker.push_window(w)
            content = computed.results.get(i)
            img = renderer.render(w.render_template, None if content is not None else o, content)
            ti = w.render_template
            for q in w.output_indices:
                out.append(self._frame(q, kind, img, renderer, timing, info, transformer_s, ti))
        info.model_end = time.perf_counter()
        info.windows = max(1, drawn)
        if not any(it.action is FrameKind.SPEECH for it in computed.group):
            computed.info = None  # silence: no model work to account
        return out

    @staticmethod
    def _frame(q, kind, img, renderer, timing, info, transformer_s, template) -> Frame:
        if renderer.last.mode == "template":  # the template itself (a closed mouth): keep no copy of it
            img = readonly(renderer.avatar.frames[template])
        img.flags.writeable = False
        end = time.perf_counter()
        t = timing.copy()
        t.model_start, t.model_end = info.model_start, end
        # the renderer share: from the model start, all that is not the transformer (earlier windows of the
        # group were drawn first: this frame waited for them too)
        t.transformer_s, t.renderer_s = transformer_s, end - info.model_start - transformer_s
        box = Box.from_yyxx(renderer.last.box)
        return Frame(q, kind, img, box, t, template, None, float(renderer.last.openness))
