"""The speech gate: webrtcvad and an energy floor per 20 ms frame, with onset and hangover (used by the
live front end and by the preview renderer's offline openness curve)."""

from __future__ import annotations

import collections

import numpy as np

__all__ = ["SpeechGate", "as_float"]


def as_float(samples: np.ndarray) -> np.ndarray:
    """int -> float64 scaled by the type's full range (int16: / 32768); float kept as is."""
    x = np.asarray(samples)
    if np.issubdtype(x.dtype, np.signedinteger):
        return x.astype(np.float64) / float(-np.iinfo(x.dtype).min)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected signed integer or float samples, got dtype {x.dtype}")
    return x


class SpeechGate:
    """Per-frame speech/silence decisions: webrtcvad AND an energy floor, with onset and hangover.

    A frame (``frame_ms``, default 20 ms) is *voiced* when its RMS level is at least
    ``energy_floor_db`` dBFS and webrtcvad (``aggressiveness`` 0..3) calls it speech. Speech starts
    after ``onset_ms`` of consecutive voiced frames (so a click does not open the mouth) and lasts
    ``hangover_ms`` after the last voiced frame (so short pauses inside words do not close it);
    while speech is on, any voiced frame extends it. Decisions are causal: a frame's verdict never
    changes once returned. webrtcvad calls the first few frames it ever sees speech whatever they
    hold (its noise model starts from defaults), so its verdicts during the first ``warmup_ms``
    after construction are ignored (the model keeps adapting across :meth:`reset`). webrtcvad sees only
    frames over the energy floor, so by default that warm-up is spent on the first 100 ms of loud audio,
    the start of the first utterance (hidden by the transformer windows' look-ahead); with
    ``warm_up_on_quiet`` (for analyses with little look-ahead: the preview) webrtcvad also sees the
    quiet frames until it is warmed up, so the warm-up is spent on the session's first 100 ms whatever
    they hold.

    ``push(samples)`` returns the verdicts of the frames completed by the call (list[bool]);
    :meth:`is_speech_between` answers for a span of the session clock (any speech frame in it).
    The last ``history_s`` seconds of verdicts are kept.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        aggressiveness: int = 2,
        frame_ms: int = 20,
        hangover_ms: int = 200,
        energy_floor_db: float = -50.0,
        onset_ms: int = 60,
        warmup_ms: int = 100,
        history_s: float = 30.0,
        warm_up_on_quiet: bool = False,
    ) -> None:
        import webrtcvad

        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad supports 8/16/32/48 kHz, got {sample_rate}")
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtcvad supports 10, 20 or 30 ms frames, got {frame_ms}")
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_len = sample_rate * frame_ms // 1000
        self.hangover_frames = int(np.ceil(hangover_ms / frame_ms))
        self.onset_frames = max(1, int(np.ceil(onset_ms / frame_ms)))
        self.energy_floor_db = float(energy_floor_db)
        self._vad = webrtcvad.Vad(int(aggressiveness))
        self._warmup_left = int(np.ceil(warmup_ms / frame_ms))  # VAD frames still to ignore
        self.warm_up_on_quiet = bool(warm_up_on_quiet)
        self._history_len = max(1, int(history_s * 1000 / frame_ms))
        self.reset()

    def reset(self, start_sample: int = 0) -> None:
        """Forget all state; the next pushed sample is ``start_sample`` of the session clock
        (a multiple of the frame length keeps frames aligned to the clock)."""
        self._pending = np.zeros(0, np.float64)
        self._origin = int(start_sample)  # session sample of frame 0
        self.frames_total = 0
        self._run = 0  # consecutive voiced frames
        self._hang = 0  # frames of hangover left
        self._speaking = False
        self._verdicts: collections.deque[bool] = collections.deque(maxlen=self._history_len)
        # voiced and loud in each quarter of the frame (a sound that lasts all of it: not a click)
        self._held: collections.deque[bool] = collections.deque(maxlen=self._history_len)

    @property
    def speaking(self) -> bool:
        """The verdict of the latest frame."""
        return self._speaking

    def frame_level_db(self, frame: np.ndarray) -> float:
        return float(10.0 * np.log10(np.mean(np.square(frame)) + 1e-12))

    def _loud_throughout(self, frame: np.ndarray) -> bool:
        q = frame[: frame.size // 4 * 4].reshape(4, -1)
        return bool((10.0 * np.log10(np.mean(np.square(q), axis=1) + 1e-12) >= self.energy_floor_db).all())

    def _voiced(self, frame: np.ndarray) -> bool:
        loud = self.frame_level_db(frame) >= self.energy_floor_db
        if not loud and not (self.warm_up_on_quiet and self._warmup_left > 0):
            return False
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        voiced = bool(self._vad.is_speech(pcm, self.sample_rate))
        if self._warmup_left > 0:
            self._warmup_left -= 1
            return False
        return voiced and loud

    def push(self, samples: np.ndarray) -> list[bool]:
        """Append mono samples at ``sample_rate``; return the verdict of each completed frame."""
        x = as_float(samples)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
        buf = np.concatenate([self._pending, x.astype(np.float64, copy=False)])
        n = buf.size // self.frame_len
        out: list[bool] = []
        for i in range(n):
            voiced = self._voiced(buf[i * self.frame_len : (i + 1) * self.frame_len])
            self._run = self._run + 1 if voiced else 0
            if voiced and (self._run >= self.onset_frames or self._speaking):
                self._hang = self.hangover_frames
                speech = True
            elif self._hang > 0 and self._speaking:
                self._hang -= 1
                speech = True
            else:
                speech = False
            self._speaking = speech
            out.append(speech)
            self._held.append(
                voiced and self._loud_throughout(buf[i * self.frame_len : (i + 1) * self.frame_len])
            )
        self._verdicts.extend(out)
        self.frames_total += n
        self._pending = buf[n * self.frame_len :].copy()
        return out

    def is_speech_between(self, start_sample: int, end_sample: int) -> bool:
        """Whether any decided frame overlapping session samples ``[start, end)`` is speech.

        Frames not decided yet (the span's tail) are not counted; a span with no decided frame at
        all gets the latest verdict (:attr:`speaking`), one older than the history gets False.
        """
        first = (start_sample - self._origin) // self.frame_len
        last = -(-(end_sample - self._origin) // self.frame_len) - 1  # ceil - 1
        base = self.frames_total - len(self._verdicts)
        lo, hi = max(first, base), min(last, self.frames_total - 1)
        if first > self.frames_total - 1:
            return self._speaking
        if hi < lo:
            return False
        return any(self._verdicts[i - base] for i in range(lo, hi + 1))

    def speech_or_onset(self, start_sample: int, end_sample: int) -> bool:
        """For an analysis with little look-ahead: whether the frames that end inside session samples
        ``[start, end)`` hold speech, or the last of them is voiced and loud in each of its quarters (an
        onset the gate cannot confirm yet: that takes ``onset_ms`` of voice, more than such an analysis
        waits for; a click lasts a few ms, not a whole frame). Only frames that end by ``end`` count,
        so the answer depends on the audio up to ``end`` only, however much more was pushed (once the
        audio has ended, the frames it completed). False for a span with no such frame in the history."""
        first = (start_sample - self._origin) // self.frame_len
        stop = min((end_sample - self._origin) // self.frame_len, self.frames_total)  # end by end_sample
        base = self.frames_total - len(self._verdicts)
        lo = max(first, base)
        if stop <= lo:
            return False
        return self._held[stop - 1 - base] or any(self._verdicts[i - base] for i in range(lo, stop))
