"""The live audio front end: streaming resampling, incremental mel, window scheduling, speech gate.

Each class is a small, synchronous state machine that takes audio (or mel) in arbitrary pieces and
returns what became complete, so that the concatenated results equal the offline functions of
:mod:`engine.core.audio` and :mod:`engine.core.schedule` on the same audio:

- :class:`StreamingResampler`: any rate and channel count -> mono float32 16 kHz, stateful
  (equal to :func:`engine.core.audio.to_mono_16k` on the whole signal).
- :class:`IncrementalMel`: 16 kHz samples -> mel frames (80, k) as soon as each is complete (equal
  to :func:`engine.core.audio.melspectrogram`), with bounded history.
- :class:`LiveWindowScheduler`: mel frames -> :class:`engine.core.schedule.Window` per output frame,
  in order, as soon as the mel it needs exists (equal to :func:`engine.core.schedule.windows`).
- :class:`LiveFrameScheduler`: mel frames -> one window per output frame with the mel around its own
  time, for a synthesizer that needs no transformer window (the preview: 50 ms of look-ahead).
- :class:`SpeechGate`: webrtcvad + energy floor, per 20 ms frame, with onset and hangover.

None of them is thread-safe; the session engine owns one of each per session.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from engine.core.audio import MEL_CHUNK_LEN, MEL_FPS, MelConfig, _padded_window, mel_filterbank
from engine.core.clock import AUDIO_RATE
from engine.core.lookahead import FrameAnalysis
from engine.core.schedule import CENTER, T, Window, pingpong
from engine.core.voice import SpeechGate  # noqa: F401  (re-exported: part of the live front end)
from engine.core.voice import as_float as _as_float

__all__ = [
    "IncrementalMel",
    "LiveFrameScheduler",
    "LiveWindowScheduler",
    "SpeechGate",
    "StreamingResampler",
    "mel_chunk_start",
]

TARGET_RATE = AUDIO_RATE  # the session clock (engine.core.clock)
DEFAULT_MEL = MelConfig()  # the IP_LAP mel constants


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------


class StreamingResampler:
    """Stateful conversion of a stream of chunks to mono float32 at 16 kHz.

    ``push(chunk)`` takes shape (n,) or (n, channels_in), int16 / other signed int (scaled by the
    type's range) or float, mixes the channels as their mean (as :func:`engine.core.audio.to_mono_16k`)
    and returns the 16 kHz samples that became available (possibly none: the filter holds a few
    samples back). ``flush()`` returns the filter's tail at the end of the stream. Consecutive
    chunks are fed to one FFmpeg swresample context as consecutive frames with pts, so the
    concatenated output equals the one-shot conversion of the whole signal. At 16 kHz input it is a
    pass-through (exact, nothing held back).
    """

    def __init__(self, sample_rate_in: int, channels_in: int = 1, target_rate: int = TARGET_RATE) -> None:
        if int(sample_rate_in) <= 0 or int(sample_rate_in) != sample_rate_in:
            raise ValueError(f"sample_rate_in must be a positive integer, got {sample_rate_in}")
        if int(channels_in) <= 0:
            raise ValueError(f"channels_in must be positive, got {channels_in}")
        if int(target_rate) <= 0:
            raise ValueError(f"target_rate must be positive, got {target_rate}")
        self.sample_rate_in = int(sample_rate_in)
        self.channels_in = int(channels_in)
        self.target_rate = int(target_rate)
        self.samples_in = 0  # input samples (per channel) pushed so far
        self.samples_out = 0  # output samples returned so far
        self._resampler: av.AudioResampler | None = None
        self._flushed = False

    @property
    def passthrough(self) -> bool:
        return self.sample_rate_in == self.target_rate

    def _mono(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk)
        if x.ndim == 1:
            if self.channels_in != 1:
                raise ValueError(f"expected shape (n, {self.channels_in}), got {x.shape}")
            mono = _as_float(x)
        elif x.ndim == 2:
            if x.shape[1] != self.channels_in:
                raise ValueError(f"expected {self.channels_in} channels, got shape {x.shape}")
            mono = _as_float(x).mean(axis=1)
        else:
            raise ValueError(f"expected samples of shape (n,) or (n, channels), got {x.shape}")
        return np.ascontiguousarray(mono, dtype=np.float32)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Feed one chunk; return the mono 16 kHz float32 samples now available, shape (m,)."""
        if self._flushed:
            raise RuntimeError("push() after flush(); make a new StreamingResampler")
        mono = self._mono(chunk)
        n = mono.size
        if n == 0:
            return np.zeros(0, np.float32)
        if self.passthrough:
            self.samples_in += n
            self.samples_out += n
            return mono
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.target_rate)
        frame = av.AudioFrame.from_ndarray(mono[None], format="flt", layout="mono")
        frame.sample_rate = self.sample_rate_in
        frame.time_base = Fraction(1, self.sample_rate_in)
        frame.pts = self.samples_in
        self.samples_in += n
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """End of stream: return the samples the filter still holds (idempotent)."""
        if self._flushed or self._resampler is None:
            self._flushed = True
            return np.zeros(0, np.float32)
        self._flushed = True
        return self._collect(self._resampler.resample(None))

    def _collect(self, frames: list) -> np.ndarray:
        parts = [f.to_ndarray()[0] for f in frames]
        out = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
        self.samples_out += out.size
        return out


# --------------------------------------------------------------------------------------------
# Incremental mel spectrogram
# --------------------------------------------------------------------------------------------


class IncrementalMel:
    """:func:`engine.core.audio.melspectrogram`, computed as the audio arrives.

    Mel frame j is centred on sample ``j * hop`` and sees samples ``[j*hop - n_fft/2, j*hop +
    n_fft/2)`` of the pre-emphasised signal, zeros before sample 0 (the offline left padding). It is
    therefore complete, and equal to the offline frame, once ``j * hop + n_fft/2`` samples have been
    pushed (200 j + 400 at 16 kHz). :meth:`push` returns the frames completed by each push;
    :meth:`finish` pads the end with n_fft/2 zeros, as the offline function does, and returns the
    last frames, so that the concatenation of everything returned equals the offline mel of the
    whole signal (``1 + n // hop`` frames).

    Pre-emphasis runs across pushes (the last sample is kept). Only the samples the next frames
    still need are kept (at most n_fft + one push), so memory stays bounded over long sessions.
    ``frames_total`` counts the frames returned since the last :meth:`reset`.
    """

    def __init__(self, cfg: MelConfig = DEFAULT_MEL) -> None:
        self.cfg = cfg
        self._basis = mel_filterbank(cfg).astype(np.float64)  # (M, F)
        self._window = _padded_window(cfg)  # (n_fft,) float64
        self.reset()

    def reset(self) -> None:
        """Start a new stream: sample 0 is preceded by zeros again, pre-emphasis state zero."""
        self._pad = self.cfg.n_fft // 2
        self._buf = np.zeros(self._pad, np.float64)  # pre-emphasised, padded signal ...
        self._buf_start = 0  # ... from this index of the padded signal on
        self._prev = 0.0  # last raw sample (pre-emphasis state)
        self.samples_total = 0  # samples pushed
        self.frames_total = 0  # frames returned
        self.finished = False

    @property
    def buffered_samples(self) -> int:
        return int(self._buf.size)

    def frames_available(self, n_samples: int) -> int:
        """Mel frames complete once ``n_samples`` samples exist (before :meth:`finish`)."""
        if n_samples < self._pad:
            return 0
        return (n_samples - self._pad) // self.cfg.hop + 1

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append 16 kHz mono samples (n,); return the newly completed mel frames, (n_mels, k) float32."""
        if self.finished:
            raise RuntimeError("push() after finish(); call reset() to start a new stream")
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
        if x.size:
            y = x.copy()
            y[0] -= self.cfg.preemphasis * self._prev
            y[1:] -= self.cfg.preemphasis * x[:-1]
            self._prev = float(x[-1])
            self._buf = np.concatenate([self._buf, y])
            self.samples_total += x.size
        return self._emit()

    def finish(self) -> np.ndarray:
        """End of stream: pad the right end with n_fft/2 zeros and return the last frames."""
        if self.finished:
            return np.zeros((self.cfg.n_mels, 0), np.float32)
        self._buf = np.concatenate([self._buf, np.zeros(self._pad, np.float64)])
        self.finished = True
        return self._emit()

    def _emit(self) -> np.ndarray:
        cfg = self.cfg
        end = self._buf_start + self._buf.size  # padded-signal samples available
        count = (end - cfg.n_fft) // cfg.hop + 1 if end >= cfg.n_fft else 0  # frames complete in all
        k = count - self.frames_total
        if k <= 0:
            return np.zeros((cfg.n_mels, 0), np.float32)
        lo = self.frames_total * cfg.hop - self._buf_start
        seg = self._buf[lo : lo + (k - 1) * cfg.hop + cfg.n_fft]
        frames = np.lib.stride_tricks.sliding_window_view(seg, cfg.n_fft)[:: cfg.hop]  # (k, n_fft)
        mag = np.abs(np.fft.rfft(frames * self._window, axis=1))  # (k, F)
        mel = self._basis @ mag.T  # (M, k)
        db = 20.0 * np.log10(np.maximum(cfg.min_level, mel)) - cfg.ref_level_db
        a = cfg.max_abs_value
        out = np.clip(2.0 * a * (db - cfg.min_level_db) / -cfg.min_level_db - a, -a, a).astype(np.float32)
        self.frames_total = count
        drop = count * cfg.hop - self._buf_start  # the next frame starts here
        self._buf = self._buf[drop:].copy()
        self._buf_start += drop
        return out


# --------------------------------------------------------------------------------------------
# Window scheduling
# --------------------------------------------------------------------------------------------


def mel_chunk_start(k: int, fps: float = 25.0) -> int:
    """First mel frame of chunk k: ``int(k * 3.2)`` at 25 fps (float product, then truncation)."""
    return int(k * (MEL_FPS / float(fps)))


class _SegmentMel:
    """The current segment's mel frames for a scheduler: appended as they come, those no window
    needs any more dropped (``_mel[:, 0]`` is segment mel frame ``_mel_base``)."""

    cfg: MelConfig

    next_index: int

    def _start_segment(self, next_index: int | None, sample_offset: int) -> None:
        """A new segment at output frame ``next_index`` (None: the next one) from session sample
        ``sample_offset``, with no mel frames yet."""
        if next_index is None:
            next_index = self.next_index
        if next_index < 0 or sample_offset < 0:
            raise ValueError("next_index and sample_offset must be >= 0")
        self.segment_start = int(next_index)
        self.sample_offset = int(sample_offset)
        self._mel = np.zeros((self.cfg.n_mels, 0), np.float32)
        self._mel_base = 0  # segment mel index of self._mel[:, 0]
        self.mel_total = 0  # segment mel frames received

    @property
    def buffered_mel_frames(self) -> int:
        return int(self._mel.shape[1])

    def _append_mel(self, mel_frames: np.ndarray) -> None:
        m = np.asarray(mel_frames, dtype=np.float32)
        if m.ndim != 2 or m.shape[0] != self.cfg.n_mels:
            raise ValueError(f"expected mel frames ({self.cfg.n_mels}, k), got {m.shape}")
        if m.shape[1]:
            self._mel = np.concatenate([self._mel, m], axis=1)
            self.mel_total += m.shape[1]

    def _forget_mel_before(self, keep_from: int) -> None:
        if keep_from > self._mel_base:
            self._mel = self._mel[:, keep_from - self._mel_base :].copy()
            self._mel_base = keep_from


class LiveWindowScheduler(_SegmentMel):
    """Turns a stream of mel frames into the offline schedule's windows, one per output frame.

    Within a *segment* (the audio since the start or the last :meth:`reset`), window b is exactly
    :func:`engine.core.schedule.make_window` ``(b, ...)``: transformer chunks ``chunks[max(0, i-2)]`` for
    ``i = b..b+4``, renderer chunk ``chunks[b]``, templates ``f(i)``; it makes output frame
    ``p0 + b + 2`` (``p0, p0+1, p0+2`` for b = 0: the first face is shown 3 times), where ``p0`` is
    the segment's first output index (0 for the first segment).

    **Look-ahead.** Window b needs chunks up to ``b + 2``; chunk k needs mel frames up to
    ``int(3.2 k) + 15``; mel frame j needs samples up to ``200 j + 400`` (its right half-window).
    Output frame ``p = b + 2 >= 2`` therefore needs the audio up to
    ``(int(3.2 p) + 15) * 200 + 400`` samples = ``12.5 int(3.2 p) + 212.5`` ms, i.e. beyond its
    nominal time ``t_p = 40 p`` ms by ``212.5 - 12.5 frac(3.2 p)`` ms: between 202.5 and 212.5 ms,
    212.5 ms whenever p is a multiple of 5. :attr:`lookahead_ms` is that worst case, 212.5 ms
    (computed by :meth:`required_samples`, not assumed). The first window of a segment (frames
    p0..p0+2) needs ``(6 + 15) * 200 + 400 = 4600`` samples, :attr:`startup_ms` = 287.5 ms of audio.

    Feed it with :meth:`push` (mel frames from :class:`IncrementalMel`, in order); it returns the
    windows that became possible. Only the mel frames that later windows still need are kept
    (from chunk ``max(0, b - 2)`` of the next window b on: at most ~30 frames).

    ``speech_gate``: optional :class:`SpeechGate` fed with the same audio (before the mel); each
    window's ``is_speech`` is the gate's verdict on its renderer chunk's audio.
    """

    def __init__(
        self,
        n_template_frames: int,
        fps: float = 25.0,
        speech_gate: SpeechGate | None = None,
        cfg: MelConfig = DEFAULT_MEL,
    ) -> None:
        if n_template_frames <= 0:
            raise ValueError("a template needs at least one frame")
        self.n_template_frames = int(n_template_frames)
        self.fps = float(fps)
        self.speech_gate = speech_gate
        self.cfg = cfg
        self.windows_total = 0  # windows emitted over the whole session
        self.segment_start = 0
        self._next_b = 0
        self.reset(0, 0)

    # ---- look-ahead -------------------------------------------------------------------------

    def mel_frames_needed(self, b: int) -> int:
        """Number of segment mel frames window b needs (its last chunk is ``b + 2``)."""
        last_chunk = max(max(0, i - CENTER) for i in range(b, b + T))  # = b + 2
        return mel_chunk_start(last_chunk, self.fps) + MEL_CHUNK_LEN

    def required_samples(self, p: int) -> int:
        """Segment samples that must exist before segment output frame ``p`` can be made."""
        b = max(0, p - CENTER)
        last_mel = self.mel_frames_needed(b) - 1
        return last_mel * self.cfg.hop + self.cfg.n_fft // 2

    def lookahead_samples(self, p: int) -> int:
        """Audio beyond frame p's nominal time ``p / fps`` that must exist before it can be made."""
        return self.required_samples(p) - round(p * self.cfg.sample_rate / self.fps)

    @property
    def lookahead_ms(self) -> float:
        """Steady-state look-ahead: the worst case of :meth:`lookahead_samples` over p >= 2 (212.5 ms)."""
        period = 5 * int(round(self.fps))  # chunk starts repeat every 5 frames at 25 fps
        worst = max(self.lookahead_samples(p) for p in range(CENTER, CENTER + period))
        return 1000.0 * worst / self.cfg.sample_rate

    @property
    def startup_ms(self) -> float:
        """Audio a segment needs before its first window (frames p0..p0+2) can be made (287.5 ms)."""
        return 1000.0 * self.required_samples(0) / self.cfg.sample_rate

    # ---- state ------------------------------------------------------------------------------

    def reset(self, next_index: int | None = None, sample_offset: int = 0) -> None:
        """Start a new segment (after a flush or an interrupt).

        Clears the pending mel (and so the audio state tied to it; reset the :class:`IncrementalMel`
        too); the next window is window 0 of the new segment, making output frames ``next_index``,
        ``+1``, ``+2`` (the first face of a segment is shown 3 times, as offline). ``next_index``
        defaults to the frame after the last one emitted, so output numbering (and pts) continues
        without gaps. ``sample_offset``: the session-clock sample of the new segment's sample 0
        (used for the windows' spans).

        Continuity kept: the template ping-pong position. Templates are indexed by the global
        output frame, so frame p shows template ``f(p)`` whatever the segment (the first two frames
        of a segment show ``f(p0 + 2)``, as offline); nothing else carries over.
        """
        self._start_segment(next_index, sample_offset)
        self._next_b = 0  # next window of the segment

    @property
    def next_index(self) -> int:
        """The first output frame the next window will make."""
        return self.segment_start + (self._next_b + CENTER if self._next_b > 0 else 0)

    # ---- streaming --------------------------------------------------------------------------

    def push(self, mel_frames: np.ndarray) -> list[Window]:
        """Append mel frames (n_mels, k) of the current segment; return the windows now possible."""
        self._append_mel(mel_frames)
        out: list[Window] = []
        while self.mel_frames_needed(self._next_b) <= self.mel_total:
            out.append(self._make(self._next_b))
            self._next_b += 1
            self.windows_total += 1
        keep_from = mel_chunk_start(max(0, self._next_b - CENTER), self.fps)  # oldest chunk still needed
        self._forget_mel_before(keep_from)
        return out

    def _chunk(self, k: int) -> np.ndarray:
        s = mel_chunk_start(k, self.fps) - self._mel_base
        return self._mel[:, s : s + MEL_CHUNK_LEN]

    def _chunk_span(self, k: int) -> tuple[int, int]:
        """Session-clock samples ``[start, end)`` chunk k's mel frames see."""
        hop, half = self.cfg.hop, self.cfg.n_fft // 2
        s = mel_chunk_start(k, self.fps)
        lo = max(0, s * hop - half)
        hi = (s + MEL_CHUNK_LEN - 1) * hop + half
        return lo + self.sample_offset, hi + self.sample_offset

    def _make(self, b: int) -> Window:
        g = self.segment_start + b  # global position for the template ping-pong
        mel_indices = tuple(max(0, i - CENTER) for i in range(b, b + T))
        mel = np.stack([self._chunk(k) for k in mel_indices])  # (5, M, 16)
        render_span = self._chunk_span(b)
        p = self.segment_start + (0 if b == 0 else b + CENTER)
        outputs = (p, p + 1, p + 2) if b == 0 else (p,)
        is_speech = True
        if self.speech_gate is not None:
            is_speech = self.speech_gate.is_speech_between(*render_span)
        return Window(
            index=p,
            output_indices=outputs,
            mel=mel,
            templates=tuple(int(pingpong(g + i, self.n_template_frames)) for i in range(T)),
            render_template=int(pingpong(g + CENTER, self.n_template_frames)),
            span=(self._chunk_span(mel_indices[0])[0], self._chunk_span(mel_indices[-1])[1]),
            render_span=render_span,
            is_speech=is_speech,
            start=b,
            mel_indices=mel_indices,
        )


class LiveFrameScheduler(_SegmentMel):
    """One window per output frame, for a synthesizer that analyses the mel around each frame's own
    time (:class:`engine.core.lookahead.FrameAnalysis`) instead of the transformer's 5-chunk windows
    (the preview renderer's openness): segment frame ``q`` is made as soon as the segment holds
    ``analysis.required_samples(q)`` samples, i.e. :attr:`lookahead_ms` (50 ms for the preview) past
    its own time, and every frame of the segment, the first ones too, is its own window.

    The same interface as :class:`LiveWindowScheduler` (``push``, ``reset``, ``next_index``, the
    look-ahead). Window ``q`` of a segment starting at output frame ``p0``: ``index = p0 + q``,
    ``output_indices = (p0 + q,)``, ``templates = (f(p0 + q),)``, ``render_template = f(p0 + q)``,
    ``mel``: its analysis block, shape (1, n_mels, n) (:meth:`FrameAnalysis.block`, silence before
    the segment), ``start = q``, ``span = render_span``: the samples the analysis sees;
    ``is_speech``: :meth:`SpeechGate.speech_or_onset` over that span (which depends on the audio up
    to the span's end only, so it is the same however the audio was cut into pushes).
    """

    def __init__(
        self,
        n_template_frames: int,
        analysis: FrameAnalysis,
        speech_gate: SpeechGate | None = None,
    ) -> None:
        if n_template_frames <= 0:
            raise ValueError("a template needs at least one frame")
        if analysis.mel != DEFAULT_MEL:
            raise ValueError("the live front end computes the IP_LAP mel only")
        self.n_template_frames = int(n_template_frames)
        self.analysis = analysis
        self.speech_gate = speech_gate
        self.cfg = analysis.mel
        self.windows_total = 0
        self.reset(0, 0)

    # ---- look-ahead -------------------------------------------------------------------------

    def required_samples(self, q: int) -> int:
        """Segment samples that must exist before segment frame ``q`` can be made."""
        return self.analysis.required_samples(q)

    def lookahead_samples(self, q: int) -> int:
        return self.analysis.lookahead_samples(q)

    @property
    def lookahead_ms(self) -> float:
        return self.analysis.lookahead_ms

    @property
    def startup_ms(self) -> float:
        """Audio a segment needs before its first frame can be made (= the look-ahead)."""
        return 1000.0 * self.required_samples(0) / self.cfg.sample_rate

    # ---- state ------------------------------------------------------------------------------

    def reset(self, next_index: int | None = None, sample_offset: int = 0) -> None:
        """Start a new segment at output frame ``next_index`` (default: the next one), whose sample 0
        is session sample ``sample_offset`` (see :meth:`LiveWindowScheduler.reset`)."""
        self._start_segment(next_index, sample_offset)
        self._next_q = 0

    @property
    def next_index(self) -> int:
        return self.segment_start + self._next_q

    # ---- streaming --------------------------------------------------------------------------

    def push(self, mel_frames: np.ndarray) -> list[Window]:
        """Append mel frames (n_mels, k) of the current segment; return the windows now possible."""
        self._append_mel(mel_frames)
        out: list[Window] = []
        while self.analysis.mel_range(self._next_q)[1] <= self.mel_total:
            out.append(self._make(self._next_q))
            self._next_q += 1
            self.windows_total += 1
        # the next frame's first mel frame (not past the frames received: it may start after them)
        keep_from = min(max(0, self.analysis.mel_range(self._next_q)[0]), self.mel_total)
        self._forget_mel_before(keep_from)
        return out

    def _make(self, q: int) -> Window:
        p = self.segment_start + q
        lo, hi = self.analysis.span(q)
        span = (lo + self.sample_offset, hi + self.sample_offset)
        is_speech = True
        if self.speech_gate is not None:
            is_speech = self.speech_gate.speech_or_onset(*span)
        template = int(pingpong(p, self.n_template_frames))
        return Window(
            index=p,
            output_indices=(p,),
            templates=(template,),
            render_template=template,
            mel=self.analysis.block(self._mel, q, self._mel_base)[None],
            start=q,
            span=span,
            render_span=span,
            is_speech=is_speech,
        )
