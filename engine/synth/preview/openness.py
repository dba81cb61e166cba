"""Mouth openness from audio: how open the preview renderer draws the mouth when there is no
transformer to predict lips. :class:`OpennessTracker` streams (one value per renderer window /
output frame), :func:`openness_curve` does a whole 16 kHz file with the same numbers, and
:class:`StreamingOpenness` gives the curve's values as a file's audio streams. Silence gives
exactly 0. See docs/preview_renderer.md.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass

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
from engine.core.schedule import Window
from engine.core.voice import SpeechGate

__all__ = ["OpennessConfig", "OpennessTracker", "StreamingOpenness", "openness_curve"]


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

    Feed it, in order, each :class:`engine.core.schedule.Window` the live scheduler makes
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
        """:meth:`push` with a :class:`engine.core.schedule.Window` (its ``render_mel``, ``is_speech``).

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
        from engine.core.voice import SpeechGate

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


class StreamingOpenness:
    """The preview renderer's openness per output frame, as the audio streams: the same values as
    :func:`engine.synth.preview.openness_curve` of the whole file (its speech gate fed exactly as far,
    its tracker window by window), 4 bytes per frame.

    Feed it the 16 kHz samples (:meth:`add_samples`), the end of the audio (:meth:`end`) and each
    window as it is made (:meth:`window`); read it like the curve: ``curve[p]`` for output frame p,
    ``len(curve)`` the frames known so far."""

    def __init__(self, times=None) -> None:
        self.gate = SpeechGate()
        self.tracker = OpennessTracker()
        self.times = times  # a StageTimes: "openness" seconds
        cfg = self.tracker.mel_config
        self._hop, self._half = cfg.hop, cfg.n_fft // 2
        self._step = MEL_FPS / 25.0  # mel frames per output frame (the curve's fps: 25)
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
        b = w.start
        s = int(b * self._step)
        lo, hi = max(0, s * self._hop - self._half), (s + MEL_CHUNK_LEN - 1) * self._hop + self._half
        need = hi + self.gate.frame_len
        if self._ended:
            need = min(need, self._received)
        if need > self._received:
            raise RuntimeError("openness: a window was made before its audio")  # pragma: no cover
        if need > self._pushed:
            self.gate.push(self._take(need - self._pushed))
            self._pushed = need
        v = self.tracker.push_level(self.tracker.level_db(w.render_mel), self.gate.is_speech_between(lo, hi))
        for p in w.output_indices:
            if p != len(self._values):
                raise RuntimeError("openness: windows out of order")  # pragma: no cover
            self._values.append(v)
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
