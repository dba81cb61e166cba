"""The playout delay of a stream: chosen from what the session measures (``--delay-ms auto``), and kept
where it was chosen against a sender whose clock runs fast or slow. Both act on the stream's
:class:`streaming.tracks.Playout` only between utterances, so lips and the returned audio stay together
and no speech is cut or repeated.

:class:`AutoDelay` keeps the parts of the delay (:class:`DelayParts`): the synthesizer's look-ahead
rounded up to the input's packets, the p99 of the measured compute time (window ready -> frame made),
the p99 of the video's conversion and encode (an estimate until a sender is timed), a margin from the
measured arrival jitter (p99 of each packet's lateness behind the earliest one of a recent window) and a
fixed safety margin (plus one frame for a while after frames were late). Its ``target_ms`` is their sum,
bounded by ``[min_ms, max_ms]``; :meth:`AutoDelay.step` moves the delay in use to the target: up at
once (at the first silence), down slowly (a few ms per silence, once no frame was late for ``CALM_S``),
except the first time measurements are in (the initial value is a guess, not a measurement).

:class:`PlayoutControl` applies it: each packet's arrival ``t`` against the time its last sample ``n``
is played (``play(n) - t``, the delay that packet really gets; the largest over a recent window is the
delay of an undelayed packet) gives the drift of the sender's clock, corrected in silence in steps of a
few ms (``SKEW_TOLERANCE_MS``); a difference too large to be clock drift (a source pushing ahead of real
time, a source resuming after a pause) is not corrected. "Silence" is: the speech gate has not been
open for the audio still to be played, and that audio is quiet (its peak under a tenth of the recent
speech's). Growing the delay plays inserted silence, shrinking drops silence. Details: docs/live.md,
"The automatic delay".
"""

from __future__ import annotations

import argparse
import collections
import math
from dataclasses import asdict, dataclass

import numpy as np

from engine.core.clock import AUDIO_RATE, FPS, SAMPLES_PER_FRAME

__all__ = [
    "AUTO",
    "AutoDelay",
    "DelayParts",
    "PlayoutControl",
    "delay_arg",
    "describe_delay",
    "parse_delay",
]

AUTO = "auto"
MAX_DELAY_MS = 1000.0  # the automatic delay's upper bound
SAFETY_MS = 10.0  # the fixed part of the margin (a frame must be made this long before it is shown)
LATE_MARGIN_MS = 1000.0 / FPS  # added at once when frames were late, taken back slowly
ENCODE_ESTIMATE_MS = 6.0  # yuv conversion + VP8 encode of a 256 px frame on a laptop core, until measured
SHRINK_STEP_MS = 4.0  # the delay shrinks by at least this much (and a quarter of the excess) per silence
CALM_S = 5.0  # ... only once no frame was late for this long
SHRINK_INTERVAL_S = 1.0  # ... and at most once this often (once per silence between utterances)
MIN_COMPUTE = 10  # measured frames before the compute part counts as measured
MIN_ARRIVALS = 25  # packets before the jitter part counts as measured
WINDOW = 256  # recent values kept per part
JITTER_WINDOW_S = 10.0  # arrivals kept for the jitter margin and the queue measure
SKEW_TOLERANCE_MS = 5.0  # the sender's clock drift is corrected once it reaches this
SKEW_MAX_MS = 100.0  # a larger difference is not clock drift (a source ahead of time, or a pause)
SKEW_MIN_SPAN_S = 2.0  # arrivals must cover this long before the queue is measured
PLAYOUT_RATE = 48000
QUIET_FLOOR = 2e-3  # audio under this peak is quiet, whatever the speech level
QUIET_RATIO = 0.1  # ... and under this share of the recent speech's peak
GUARD_MS = 40.0  # the gate's last speech must be this far behind the audio being played


def parse_delay(value) -> float | str:
    """``"auto"`` or a delay in ms >= 0 (a number or its text); ValueError otherwise (one sentence)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"the delay must be 'auto' or a number of ms, got {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("the delay must be 'auto' or a number of ms")
    value = float(value)
    if not math.isfinite(value) or value < 0 or value > 60_000:
        raise ValueError("the delay must be 'auto' or a number of ms from 0 to 60000")
    return value


def delay_arg(text: str) -> float | str:
    """argparse type of ``--delay-ms``: ``auto`` or ms."""
    try:
        return parse_delay(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def describe_delay(value: float | str) -> str:
    return AUTO if value == AUTO else f"{value:g}"


@dataclass(frozen=True)
class DelayParts:
    """The parts of an automatic delay, in ms (their sum is :attr:`total_ms`)."""

    lookahead_ms: float
    compute_ms: float
    encode_ms: float
    jitter_ms: float
    margin_ms: float

    @property
    def total_ms(self) -> float:
        return self.lookahead_ms + self.compute_ms + self.encode_ms + self.jitter_ms + self.margin_ms

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def _p99(values) -> float:
    return float(np.percentile(np.fromiter(values, float), 99)) if values else 0.0


def rounded_lookahead_ms(lookahead_ms: float, packet: int) -> float:
    """``lookahead_ms`` as the input's packets of ``packet`` 16 kHz samples deliver it: the worst
    case, over the frames' phases against the packets, of the audio in before a frame can be made."""
    need = math.ceil(lookahead_ms * AUDIO_RATE / 1000.0 - 1e-9)
    if packet <= 1 or need <= 0:
        return max(0.0, lookahead_ms)
    period = packet // math.gcd(packet, SAMPLES_PER_FRAME)  # the phases repeat after this many frames
    worst = max(
        -(-(q * SAMPLES_PER_FRAME + need) // packet) * packet - q * SAMPLES_PER_FRAME
        for q in range(min(period, 400))
    )
    return 1000.0 * worst / AUDIO_RATE


class AutoDelay:
    """The automatic delay (module docstring). ``clock``: seconds (the session's clock; a fake one in
    tests). Feed it with :meth:`observe_packet`, :meth:`observe_arrival`, :meth:`observe_compute`,
    :meth:`observe_encode` and :meth:`late`; :meth:`step` says when the delay in use changes."""

    def __init__(self, lookahead_ms: float, clock, max_ms: float = MAX_DELAY_MS) -> None:
        self.lookahead_ms = float(lookahead_ms)
        self.clock = clock
        self.max_ms = float(max_ms)
        self._packets: collections.deque[int] = collections.deque(maxlen=64)
        self._arrivals: collections.deque[tuple[float, float]] = collections.deque(maxlen=4096)
        self._compute: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self._encode: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self._late_at: float | None = None  # the latest lateness
        self._changed_at = clock()
        self.late_events = 0
        self.settled = False  # the measurements are in (the initial guess has been replaced)
        self.current_ms = self.initial_ms()

    # ---- measurements --------------------------------------------------------------------------

    def observe_packet(self, samples: int) -> None:
        """A push of ``samples`` 16 kHz samples (the input's packetisation)."""
        if samples > 0:
            self._packets.append(int(samples))

    def observe_arrival(self, end_sample: int, t: float) -> None:
        """Session sample ``end_sample`` (the end of a push) arrived at clock time ``t``."""
        x = t - end_sample / AUDIO_RATE
        a = self._arrivals
        a.append((t, x))
        while a and a[0][0] < t - JITTER_WINDOW_S:
            a.popleft()

    def forget_arrivals(self) -> None:
        """The session clock jumped (a flush, a gap): earlier arrivals are no baseline for later ones."""
        self._arrivals.clear()

    def observe_compute(self, seconds: float) -> None:
        """A frame's compute time: its window ready (its audio in and analysed) -> the frame made."""
        self._compute.append(max(0.0, float(seconds)))

    def observe_encode(self, seconds: float) -> None:
        """A frame's hand-off -> on the wire (conversion, encode, send)."""
        self._encode.append(max(0.0, float(seconds)))

    def late(self, n: int = 1) -> None:
        """``n`` frames missed their deadline or were shed: the target grows now (the delay in use at
        the next silence)."""
        if n > 0:
            self._late_at = self.clock()
            self.late_events += n

    # ---- the parts -----------------------------------------------------------------------------

    @property
    def packet(self) -> int:
        """The input's packet size (16 kHz samples: the median of recent pushes; 20 ms until seen)."""
        return int(np.median(self._packets)) if self._packets else AUDIO_RATE // 50

    def jitter_ms(self) -> float:
        """p99 of the packets' lateness behind the earliest of the recent window (ms)."""
        if len(self._arrivals) < 2:
            return 0.0
        x = np.fromiter((v for _, v in self._arrivals), float)
        return 1000.0 * float(np.percentile(x - x.min(), 99))

    @property
    def measured(self) -> bool:
        return len(self._compute) >= MIN_COMPUTE and len(self._arrivals) >= MIN_ARRIVALS

    def initial_ms(self) -> float:
        """Before anything is measured: the look-ahead (as 20 ms packets bring it) + two frames."""
        return min(self.max_ms, rounded_lookahead_ms(self.lookahead_ms, self.packet) + 2000.0 / FPS)

    def parts(self) -> DelayParts:
        now = self.clock()
        recent_late = self._late_at is not None and now - self._late_at < CALM_S
        return DelayParts(
            lookahead_ms=rounded_lookahead_ms(self.lookahead_ms, self.packet),
            compute_ms=1000.0 * _p99(self._compute),
            encode_ms=1000.0 * _p99(self._encode) if self._encode else ENCODE_ESTIMATE_MS,
            jitter_ms=self.jitter_ms(),
            margin_ms=SAFETY_MS + (LATE_MARGIN_MS if recent_late else 0.0),
        )

    @property
    def min_ms(self) -> float:
        """The lower bound: the look-ahead as the packets bring it, and the safety margin."""
        return rounded_lookahead_ms(self.lookahead_ms, self.packet) + SAFETY_MS

    def target_ms(self) -> float:
        return min(self.max_ms, max(self.min_ms, self.parts().total_ms))

    def step(self, quiet: bool) -> float | None:
        """In silence (``quiet``): the new delay in use (ms) if it changes now, else None. Up to the
        target at once; down by at most ``max(SHRINK_STEP_MS, a quarter of the excess)`` once no frame
        was late for ``CALM_S``, at most once per ``SHRINK_INTERVAL_S`` (a silence); the first
        time the measurements are in, straight to the target (the initial value was a guess)."""
        if not quiet:
            return None
        now = self.clock()
        target = self.target_ms()
        cur = self.current_ms
        new = cur
        if not self.settled and self.measured:
            self.settled = True
            new = target
        elif target > cur + 0.5:
            new = target
        elif target < cur - 0.5:
            calm = self._late_at is None or now - self._late_at >= CALM_S
            if calm and now - self._changed_at >= SHRINK_INTERVAL_S:
                new = max(target, cur - max(SHRINK_STEP_MS, 0.25 * (cur - target)))
        if abs(new - cur) < 0.5:
            return None
        self.current_ms = new
        self._changed_at = now
        return new


class PlayoutControl:
    """Keeps the delay a packet really gets (its arrival -> the time its audio is played) at the
    delay in use: the automatic one (an :class:`AutoDelay`) or a fixed one; changes the playout only
    in silence (module docstring). ``playout``: a :class:`streaming.tracks.Playout`; ``audio``: its
    :class:`streaming.tracks.PlayoutAudio` (the quiet check reads what is still to be played)."""

    def __init__(self, playout, audio, auto: AutoDelay | None = None) -> None:
        self.playout = playout
        self.audio = audio
        self.auto = auto
        self._arrivals: collections.deque[tuple[float, float]] = collections.deque(maxlen=8192)
        self._speech_end: int | None = None  # session sample ending the latest push heard as speech
        self._speech_peak = 0.0  # the recent speech's peak (slowly forgotten)
        self.skew_corrections = 0
        self.skew_ms = 0.0  # the drift of the sender's clock corrected so far (+: it runs fast)
        self._corrected_at = -math.inf

    @property
    def delay_ms(self) -> float:
        """The delay in use (ms)."""
        return self.playout.delay_s * 1000.0

    def observe_push(self, end_sample: int, t: float, samples: np.ndarray | None, speaking: bool | None):
        """A push ended at session sample ``end_sample`` and arrived at ``t``; ``speaking``: the gate now."""
        x = t - end_sample / AUDIO_RATE
        a = self._arrivals
        a.append((t, x))
        while a and a[0][0] < t - JITTER_WINDOW_S:
            a.popleft()
        if speaking:
            self._speech_end = end_sample
            if samples is not None and samples.size:
                x = np.asarray(samples)
                peak = float(np.max(np.abs(x))) / (32768.0 if x.dtype.kind == "i" else 1.0)
                self._speech_peak = max(peak, 0.98 * self._speech_peak)

    def forget_arrivals(self) -> None:
        """The session clock jumped (a flush, a gap): earlier arrivals say nothing of the drift."""
        self._arrivals.clear()
        if self.auto is not None:
            self.auto.forget_arrivals()

    def queue_error_ms(self, now: float) -> float | None:
        """The delay an undelayed packet of the recent window gets, less the delay in use (ms); None
        while the window is too short or before the anchor."""
        pl = self.playout
        a = self._arrivals
        if pl.anchor is None or len(a) < 2 or a[-1][0] - a[0][0] < SKEW_MIN_SPAN_S:
            return None
        base = pl.start + pl.anchor / FPS + pl.offset / PLAYOUT_RATE  # play(n) = base + n / rate
        queue = base - min(x for _, x in a)
        return 1000.0 * (queue - pl.delay_s)

    def play_position(self, now: float) -> int | None:
        """The 48 kHz session position being played now."""
        pl = self.playout
        if pl.anchor is None:
            return None
        return int((now - pl.start) * PLAYOUT_RATE) - pl.anchor * (PLAYOUT_RATE // FPS) - pl.offset

    def quiet(self, now: float, speaking: bool | None) -> bool:
        """Whether the playout may change now: the gate closed, its last speech played out (with a
        guard), and the audio still to be played quiet."""
        pos = self.play_position(now)
        if pos is None:
            return True  # nothing is played yet: the delay may still be set
        if speaking:
            return False
        guard = int(GUARD_MS * AUDIO_RATE / 1000)
        if self._speech_end is not None and self._speech_end + guard > pos // (PLAYOUT_RATE // AUDIO_RATE):
            return False
        level = max(QUIET_FLOOR, QUIET_RATIO * self._speech_peak)
        return self.audio.peak(pos, self.audio.end) < level

    def tick(self, now: float, speaking: bool | None) -> float:
        """Change the playout if it should and may (in silence). Returns the delay change (ms)."""
        if not self.quiet(now, speaking):
            return 0.0
        pl = self.playout
        change = 0.0
        if self.auto is not None:
            new = self.auto.step(True)
            if new is not None:
                change += self._shift(now, new - self.delay_ms)
        err = self.queue_error_ms(now)
        if (
            err is not None
            and SKEW_TOLERANCE_MS <= abs(err) <= SKEW_MAX_MS
            and now - self._corrected_at >= 1.0
            and pl.anchor is not None
        ):
            # the sender's clock drifted: play its audio |err| earlier (+) or later (-), same delay in use
            moved = self._shift(now, -err, keep_delay=True)
            if moved:
                self.skew_corrections += 1
                self.skew_ms += -moved
                self._corrected_at = now
            change += moved
        return change

    def _shift(self, now: float, ms: float, keep_delay: bool = False) -> float:
        """Move the playout of what comes next by ``ms`` (+: later); shrinking drops at most the quiet
        audio buffered. Returns the ms moved."""
        pl = self.playout
        d = int(round(ms * PLAYOUT_RATE / 1000.0))
        if pl.anchor is None:
            if not keep_delay:
                pl.delay_s = max(0.0, pl.delay_s + d / PLAYOUT_RATE)
            return d * 1000.0 / PLAYOUT_RATE
        buffered = self.audio.end - self.play_position(now)
        if d < 0 and buffered > 0:  # drop no more than the (quiet) audio buffered
            d = max(d, -buffered)
        if d == 0:
            return 0.0
        pl.shift(d, keep_delay=keep_delay)
        return d * 1000.0 / PLAYOUT_RATE
