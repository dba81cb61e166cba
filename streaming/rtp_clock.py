"""A received stream's RTP timestamps -> the time its sender sent them (Unix), from RTCP sender reports.

The one mapping used by every client-side measurement (:class:`streaming.client.RtcClient`, the
latency tool in :mod:`streaming.bench`, ``benchmarks/latency/``). aiortc's sender puts the
NTP time and RTP timestamp of the latest packet it sent in each sender report, so every report is
an exact (send time, RTP timestamp) pair, but each carries that one packet's send jitter. A
timestamp's send time is therefore the *median of the predictions of the (up to) 5 reports
nearest to it in RTP time*, each ``t_report + (rtp - rtp_report) / rate`` (32-bit wrap handled:
differences are signed modulo 2**32). With a single report that is the report's own prediction.
``origin`` is the RTP timestamp of pts 0 when the clock is used on aiortc's pts (a receiver's
pts is the RTP timestamp minus the stream's first one); 0: the values are RTP timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CLOCK_RATE", "NEAREST_REPORTS", "RtpClock", "ntp_to_unix"]

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
CLOCK_RATE = {"audio": 48000, "video": 90000}  # RTP ticks per second of this server's streams
NEAREST_REPORTS = 5  # a send time is the median of the predictions of this many nearest reports
WRAP = 1 << 32


def ntp_to_unix(ntp: int) -> float:
    """A 64-bit NTP timestamp (RTCP) -> Unix seconds."""
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / 2**32


@dataclass
class RtpClock:
    """One stream's RTP timestamps (or pts, from ``origin``) -> the sender's send time (module docstring)."""

    rate: int  # RTP ticks per second
    reports: list[tuple[float, int]] = field(default_factory=list)  # (Unix time, RTP timestamp)
    origin: int = 0  # RTP timestamp of value 0 (aiortc's pts = RTP timestamp - origin)

    def add(self, ntp: int, rtp: int) -> None:
        """Record one sender report (its NTP timestamp and RTP timestamp)."""
        self.reports.append((ntp_to_unix(ntp), int(rtp)))

    def __bool__(self) -> bool:
        return bool(self.reports)

    def time_of(self, pts):
        """Send time of ``pts`` (a number: a float; array-like: an array of the same shape)."""
        if not self.reports:
            raise ValueError("no RTCP sender report received yet")
        rtp = (np.asarray(pts, np.int64) + int(self.origin)) % WRAP
        t = np.array([r[0] for r in self.reports])
        r = np.array([r[1] for r in self.reports], np.int64)
        d = (rtp[..., None] - r) % WRAP
        d = np.where(d >= WRAP >> 1, d - WRAP, d)
        pred = t + d / self.rate
        k = min(NEAREST_REPORTS, len(self.reports))
        near = np.argsort(np.abs(d), axis=-1, kind="stable")[..., :k]
        out = np.median(np.take_along_axis(pred, near, axis=-1), axis=-1)
        return float(out) if np.ndim(pts) == 0 else out
