"""The test signal and the microphone that speaks it (48 kHz mono).

:func:`make_signal`: silence, then ``events`` events, one every ``period_s`` (half of them one
20 ms packet later, so that onsets fall at both phases of a 40 ms video frame). Event ``k`` is a
*click* (a 4 ms chirp, 1.5-6 kHz, in silence) followed ``click_lead_s`` later by a *speech onset*: a
voiced, formant-shaped burst of ``speech_s`` with a 5 ms attack (so the onset is one sample
position, not a fade). Onsets and clicks lie on 20 ms packet boundaries. A click is too short for
the server's speech gate (it needs 60 ms of voice), so it never opens the mouth; it is what is
found again in the returned audio. :class:`SignalTrack` is the client's microphone: *input time* of
signal sample ``s`` is the instant it was "spoken", ``t0 + s / 48000``; each 20 ms packet is handed
over when its last sample has been spoken, as a real microphone does (so every input figure
includes one packet of capture).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streaming.bench.config import SignalConfig

__all__ = ["AUDIO_TIME_BASE", "PACKET", "RATE", "SignalTrack", "TestSignal", "make_signal"]

RATE = 48000  # the signal's and the returned audio's sample rate
PACKET = 960  # 20 ms: one microphone packet
AUDIO_TIME_BASE = fractions.Fraction(1, RATE)


@dataclass
class TestSignal:
    """The microphone signal and where its events are (48 kHz sample positions)."""

    __test__ = False  # not a pytest class

    audio: np.ndarray  # float32 (n,)
    onsets: np.ndarray  # int64 (events,): first sample of each speech burst
    clicks: np.ndarray  # int64 (events,): first sample of each click
    click: np.ndarray  # float32: the click waveform (what is searched for in the returned audio)
    config: SignalConfig

    @property
    def seconds(self) -> float:
        return self.audio.size / RATE


def _chirp(level: float) -> np.ndarray:
    n = int(0.004 * RATE)
    t = np.arange(n) / RATE
    f0, f1 = 1500.0, 6000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
    return (level * np.hanning(n) * np.sin(phase)).astype(np.float32)


def _speech(seconds: float, f0: float, level: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced, formant-shaped harmonic burst with 4 Hz syllables, at full level from its start."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f) / RATE
    x = np.zeros(n)
    for h in range(1, 40):
        fh = h * f
        amp = (
            np.exp(-(((fh - 600) / 300) ** 2))
            + 0.6 * np.exp(-(((fh - 1400) / 400) ** 2))
            + 0.3 * np.exp(-(((fh - 2500) / 500) ** 2))
        )
        x += amp * np.sin(h * phase) * (fh < 7000)
    x /= np.abs(x).max()
    env = 0.35 + 0.65 * 0.5 * (1 + np.cos(2 * np.pi * 4.0 * t))  # 1 at the onset, syllables after
    attack, release = int(0.005 * RATE), int(0.03 * RATE)
    env[:attack] *= np.linspace(0.0, 1.0, attack)
    env[-release:] *= np.linspace(1.0, 0.0, release)
    return level * x * env


def make_signal(config: SignalConfig | None = None) -> TestSignal:
    """The test signal of ``config`` (module docstring): clicks and speech onsets on 20 ms packet
    boundaries, at known sample positions."""
    c = config or SignalConfig()
    rng = np.random.default_rng(c.seed)

    def packet(seconds: float) -> int:
        return int(round(seconds * RATE / PACKET)) * PACKET

    k = np.arange(c.events)
    # each event half the time one packet later: onsets fall at both phases of the 40 ms video frame
    shift = rng.integers(0, 2, c.events) * PACKET
    clicks = np.array([packet(c.lead_s + i * c.period_s) for i in k], np.int64) + shift
    onsets = clicks + packet(c.click_lead_s)
    n = max(packet(c.seconds), int(onsets[-1]) + packet(c.speech_s + c.tail_s))
    x = rng.standard_normal(n) * 1e-4  # a quiet room (-80 dBFS)
    click = _chirp(c.click_level)
    for cs, os_ in zip(clicks, onsets, strict=True):
        x[cs : cs + click.size] += click
        burst = _speech(c.speech_s, rng.uniform(110.0, 180.0), c.level, rng)
        x[os_ : os_ + burst.size] += burst
    return TestSignal(np.clip(x, -1, 1).astype(np.float32), onsets, clicks, click, c)


class SignalTrack(MediaStreamTrack):
    """A microphone that speaks ``signal`` in real time, then silence: the 20 ms packet ``j`` is
    handed over at ``t0 + (j + 1) * 0.02`` (when its last sample has been spoken); a packet that
    comes late (a busy loop) is handed over at once, as a real microphone's buffered audio would.
    ``t0`` is set by the first :meth:`recv`."""

    kind = "audio"

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__()
        self._pcm = np.clip(np.rint(np.asarray(signal, np.float32) * 32767), -32768, 32767).astype(np.int16)
        self.t0: float | None = None
        self.sent = 0  # samples handed over

    def spoken_time(self, sample) -> float | np.ndarray:
        """The Unix time at which signal sample ``sample`` was spoken."""
        if self.t0 is None:
            raise RuntimeError("the microphone has not started")
        return self.t0 + np.asarray(sample, np.float64) / RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.time() - PACKET / RATE
        j = self.sent // PACKET
        wait = self.t0 + (j + 1) * PACKET / RATE - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = np.zeros(PACKET, np.int16)
        part = self._pcm[j * PACKET : (j + 1) * PACKET]
        chunk[: part.size] = part
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = j * PACKET
        frame.time_base = AUDIO_TIME_BASE
        self.sent += PACKET
        return frame
