"""Mouth openness from audio: how open the preview renderer draws the mouth when there is no
transformer to predict lips. :class:`OpennessTracker` streams (one value per output frame, from
the mel frames around the frame's own time: :class:`engine.core.lookahead.FrameAnalysis`, 50 ms of
look-ahead), :func:`openness_curve` does a whole 16 kHz file with the same numbers, and
:class:`StreamingOpenness` gives the curve's values as a file's audio streams. Silence gives
exactly 0. See docs/preview_renderer.md.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass

import numpy as np

from engine.core.audio import MelConfig, _hz_to_mel, _mel_to_hz, melspectrogram, num_video_frames
from engine.core.lookahead import FrameAnalysis, frame_mel_position
from engine.core.schedule import Window
from engine.core.voice import SpeechGate

__all__ = ["OpennessConfig", "OpennessTracker", "StreamingOpenness", "openness_curve"]


@dataclass(frozen=True)
class OpennessConfig:
    """How audio becomes mouth openness (per output frame, 25 fps)."""

    band_hz: tuple[float, float] = (300.0, 3000.0)  # mel bins whose centre lies in this band
    #: Mel frames of each output frame that count (a Hann window over them), relative to its mel
    #: position int(3.2 q) (engine.core.lookahead): (1, 3), the two mel frames centred in the middle
    #: of the frame (about 15 ms after its start), which see its audio and no more than 50 ms past its
    #: start: the preview's look-ahead (:attr:`OpennessTracker.lookahead_ms`)
    frames: tuple[int, int] = (1, 3)
    floor_db: float = -82.0  # band level (dB, mel scale) under which a frame is silence
    range_db: float = 25.0  # levels from (running peak - range_db) to the peak map to 0..1
    initial_peak_db: float = -48.0  # the running peak before any speech (a typical speech level)
    peak_decay_db: float = 0.06  # per voiced frame: the running peak falls 1.5 dB/s of speech
    noise_rise_db: float = 0.02  # per frame: the noise floor estimate creeps up (adapts to noise)
    noise_margin_db: float = 6.0  # levels within this of the noise floor map to 0
    gamma: float = 1.3  # openness = normalised level ** gamma
    attack: float = 0.85  # one-pole smoothing coefficient when opening (per frame)
    release: float = 0.7  # ... when closing
    snap: float = 0.02  # below this, a closing mouth snaps shut (silence gives exactly 0)


def _band_bins(band: tuple[float, float], cfg: MelConfig) -> np.ndarray:
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    centres = edges[1:-1]
    bins = np.flatnonzero((centres >= band[0]) & (centres <= band[1]))
    if bins.size == 0:
        raise ValueError(f"no mel bin has its centre in {band} Hz")
    return bins


class OpennessTracker:
    """Streaming audio -> openness in [0, 1], one value per output frame.

    Feed it, in order, each frame's mel frames (:meth:`push`: the block ``analysis.block(mel, q)``
    of :class:`engine.core.lookahead.FrameAnalysis` ``config.frames``, (80, n)) and speech verdict,
    or the :class:`engine.core.schedule.Window` the live scheduler makes (:meth:`push_window`).
    The mel is the IP_LAP normalised log-mel in [-4, 4]; it is turned back into dB and the
    Hann-weighted mean power of the bins in ``band_hz`` over the block is the frame's *level*. A
    frame is silent (target 0) when the speech gate says so or the level is under ``floor_db``;
    otherwise the level is mapped linearly from ``(peak - range_db)`` (or the noise floor + margin,
    whichever is higher) to the running peak, clipped to [0, 1]. The result is smoothed with
    ``attack`` / ``release`` and snaps to 0 under ``snap`` when closing. :attr:`lookahead_ms`: the
    audio past a frame's own time its value needs.
    """

    def __init__(self, config: OpennessConfig | None = None, mel_config: MelConfig | None = None) -> None:
        self.config = config if config is not None else OpennessConfig()
        self.mel_config = mel_config if mel_config is not None else MelConfig()
        c = self.config
        self._bins = _band_bins(c.band_hz, self.mel_config)
        self.analysis = FrameAnalysis(*c.frames, self.mel_config)
        w = np.hanning(self.analysis.n_frames + 2)[1:-1]
        self._weights = (w / w.sum()).astype(np.float64)
        self.peak_db: float | None = None  # running peak of the band level (dB)
        self.noise_db: float | None = None  # running noise floor estimate (dB)
        self.reset()

    @property
    def lookahead_ms(self) -> float:
        """Audio past an output frame's own time that its openness needs (50 ms by default)."""
        return self.analysis.lookahead_ms

    def reset(self, levels: bool = False) -> None:
        """Forget the smoothing state (after a flush); ``levels``: also forget the running peak and
        noise floor (a new speaker or audio source). By default the learnt level range is kept."""
        self.value = 0.0
        self.frames_total = 0
        if levels:
            self.peak_db = None
            self.noise_db = None

    def level_db(self, mel: np.ndarray) -> float:
        """Band level (dB) of one frame's mel frames (80, n) (``analysis.block``)."""
        m = np.asarray(mel, dtype=np.float64)
        cfg = self.mel_config
        if m.shape != (cfg.n_mels, self.analysis.n_frames):
            raise ValueError(f"expected mel frames ({cfg.n_mels}, {self.analysis.n_frames}), got {m.shape}")
        a = cfg.max_abs_value
        db = (m[self._bins] + a) / (2 * a) * -cfg.min_level_db + cfg.min_level_db  # [-100, 0]
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

    def push(self, mel: np.ndarray, is_speech: bool = True) -> float:
        """Openness of the next output frame from its mel frames (80, n) and speech verdict."""
        return self.push_level(self.level_db(mel), is_speech)

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

    def push_window(self, window: Window) -> float:
        """:meth:`push` for every output frame of a live :class:`engine.core.schedule.Window`, in order;
        returns the last value. A frame window (``mel`` (1, 80, n): the live scheduler's windows for
        this analysis) is one frame; a transformer window (``mel`` (5, 80, 16)) holds the mel of its
        frames (the first of a segment makes three), each with the window's speech verdict."""
        if window.mel.shape[0] == 1:
            return self.push(window.mel[0], window.is_speech)
        mel, base = window_mel(window)
        for q in window_frames(window):
            v = self.push(self.analysis.block(mel, q, base), window.is_speech)
        return v


def window_frames(window: Window) -> tuple[int, ...]:
    """Segment frame numbers of a transformer window's output frames (b = 0: 0, 1, 2; else b + 2)."""
    b = window.start
    return (0, 1, 2) if b == 0 else (b + 2,)


def window_mel(window: Window) -> tuple[np.ndarray, int]:
    """A transformer window's mel as one run of segment mel frames: (mel (80, n), first frame). Its five
    chunks ``chunks[max(0, b - 2)] .. chunks[b + 2]`` overlap and together cover every frame of it."""
    starts = [frame_mel_position(k) for k in window.mel_indices]
    base = starts[0]
    out = np.empty((window.mel.shape[1], starts[-1] + window.mel.shape[2] - base), np.float32)
    for chunk, s in zip(window.mel, starts, strict=True):
        out[:, s - base : s - base + chunk.shape[1]] = chunk
    return out, base


def openness_curve(
    audio16k: np.ndarray,
    fps: float = 25.0,
    config: OpennessConfig | None = None,
    speech_gate: bool = True,
    return_levels: bool = False,
):
    """Openness per output frame (n_frames,) float32 of a whole 16 kHz mono signal.

    The same numbers the live path gives (:class:`OpennessTracker` fed with the live scheduler's
    frame windows): frame q uses the mel frames of ``tracker.analysis`` around its own time, and
    ``n_frames`` is the number of mel chunks (as :func:`engine.core.audio.num_video_frames`: the
    length of a dub). With ``speech_gate`` a :class:`engine.core.voice.SpeechGate` (webrtcvad +
    energy, the live session's settings for this analysis) decides silence per frame
    (:meth:`~engine.core.voice.SpeechGate.speech_or_onset` over the frame's analysis span);
    otherwise only the energy floor does. ``return_levels``: also return the band level (dB) per frame.
    """
    x = np.asarray(audio16k, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono 16 kHz samples (n,), got shape {x.shape}")
    if fps != 25.0:
        raise ValueError(f"the openness is defined at 25 fps, got {fps}")
    mcfg = MelConfig()
    mel = melspectrogram(x, mcfg)
    n = num_video_frames(mel.shape[1], fps)
    out = np.zeros(n, np.float32)
    levels = np.full(n, np.nan, np.float32)
    gate = SpeechGate(warm_up_on_quiet=True) if speech_gate else None
    pushed = 0
    tracker = OpennessTracker(config, mcfg)
    an = tracker.analysis
    for q in range(n):
        speech = True
        if gate is not None:
            lo, hi = an.span(q)
            need = min(x.size, hi)  # the live gate has at least this (the frame's audio) when it is made
            if need > pushed:
                gate.push(x[pushed:need])
                pushed = need
            speech = gate.speech_or_onset(lo, hi)
        level = tracker.level_db(an.block(mel, q))
        out[q], levels[q] = tracker.push_level(level, speech), level
    return (out, levels) if return_levels else out


class StreamingOpenness:
    """The preview renderer's openness per output frame, as the audio streams: the same values as
    :func:`engine.synth.preview.openness_curve` of the whole file (its speech gate fed exactly as far,
    its tracker frame by frame), 4 bytes per frame.

    Feed it the 16 kHz samples (:meth:`add_samples`), the end of the audio (:meth:`end`) and each
    (transformer) window as it is made (:meth:`window`): its mel holds its frames' analyses; read it
    like the curve: ``curve[p]`` for output frame p, ``len(curve)`` the frames known so far."""

    def __init__(self, times=None, config: OpennessConfig | None = None) -> None:
        self.gate = SpeechGate(warm_up_on_quiet=True)
        self.tracker = OpennessTracker(config)
        self.times = times  # a StageTimes: "openness" seconds
        self._pending: list[np.ndarray] = []  # samples received, not yet given to the gate
        self._received = 0
        self._pushed = 0
        self._ended = False
        self._values = array("f")

    def add_samples(self, samples: np.ndarray) -> None:
        self._pending.append(np.asarray(samples, dtype=np.float32))
        self._received += len(samples)

    def end(self) -> None:
        self._ended = True

    def window(self, w: Window) -> None:
        t0 = time.perf_counter()
        an = self.tracker.analysis
        mel, base = window_mel(w)
        for q in window_frames(w):
            lo, hi = an.span(q)
            need = min(hi, self._received) if self._ended else hi
            if need > self._received:
                raise RuntimeError("openness: a window was made before its audio")  # pragma: no cover
            if need > self._pushed:
                self.gate.push(self._take(need - self._pushed))
                self._pushed = need
            if q != len(self._values):
                raise RuntimeError("openness: windows out of order")  # pragma: no cover
            level = self.tracker.level_db(an.block(mel, q, base))
            self._values.append(self.tracker.push_level(level, self.gate.speech_or_onset(lo, hi)))
        if self.times is not None:
            self.times.add("openness", t0)

    def _take(self, n: int) -> np.ndarray:
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = [data[n:]] if n < data.size else []
        return data[:n]

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, p: int) -> float:
        return self._values[p]
