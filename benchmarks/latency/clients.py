"""The WebRTC clients of a ``benchmarks/live_latency.py`` run, in a child process (as a browser
would be another process), and the records they send back.

:func:`client_process` (the child's entry point, started with the ``spawn`` method) runs ``n``
:class:`streaming.client.RtcClient` s that play a WAV file as their microphone; after "started" it
waits for "stop", closes them and sends their records (:func:`client_record`: received frames with
their pts and arrival times, the RTCP sender reports and RTP origin of each stream, the client's
own microphone frames) and its CPU share; an exception is sent as ("error", traceback).
:class:`Record` turns a record back into timing: ``send_time`` is the server's send time of a
received frame through :class:`streaming.rtp_clock.RtpClock` (the one RTP -> send time mapping).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import traceback

import numpy as np

from streaming.rtp_clock import CLOCK_RATE, RtpClock


def client_record(client) -> dict:
    """What a closed :class:`streaming.client.RtcClient` recorded, as plain data."""
    return {
        "session": client.session,
        "video": [(int(f.pts), f.arrival) for f in client.video],
        "audio": [(int(a.pts), a.arrival, a.data) for a in client.audio],
        "sent_audio": list(client.sent_audio),
        "reports": {k: list(c.reports) for k, c in client.clocks.items()},
        # aiortc's receivers give pts = RTP timestamp - the first one received (the "origin")
        "origin": {k: stream_origin(client, k) for k in client.clocks},
    }


def stream_origin(client, kind: str) -> int | None:
    """The RTP timestamp of pts 0 of the client's received ``kind`` stream (None: no frame came)."""
    try:
        return client.stream_clock(kind).origin
    except ValueError:
        return None


def client_process(conn, url: str, wav: str, n: int) -> None:
    """Child process: ``n`` clients play ``wav``; they close on "stop" and send their records."""
    from streaming.ice import loopback_ice

    with loopback_ice():  # 127.0.0.1 candidates only, as the server (ServerConfig.loopback)
        asyncio.run(_clients(conn, url, wav, n))


async def _clients(conn, url: str, wav: str, n: int) -> None:
    from streaming.client import RtcClient

    clients = []
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        starts = [RtcClient(url, audio_path=wav, keep_video=False).start() for _ in range(n)]
        clients = list(await asyncio.gather(*starts))
        conn.send(("started", [c.session for c in clients]))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        for c in clients:
            await c.close()
        cpu = (time.process_time() - cpu0) / (time.perf_counter() - t0)
        conn.send(("records", [client_record(c) for c in clients], cpu))
    except BaseException:  # noqa: BLE001 - reported to the parent, which would otherwise wait
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        conn.send(("error", traceback.format_exc()))


async def receive(conn, timeout: float):
    """The next message from the clients' process (its error raised here)."""
    ready = await asyncio.get_running_loop().run_in_executor(None, conn.poll, timeout)
    if not ready:
        raise TimeoutError(f"no message from the clients' process in {timeout:.0f} s")
    msg = conn.recv()
    if msg[0] == "error":
        raise RuntimeError(f"the clients failed:\n{msg[1]}")
    return msg


class Record:
    """A client's record (:func:`client_record`) with :class:`RtcClient`'s timing methods."""

    def __init__(self, d: dict) -> None:
        self.session = d["session"]
        self.video = [argparse.Namespace(pts=p, arrival=t) for p, t in d["video"]]
        self.audio = [argparse.Namespace(pts=p, arrival=t, data=x) for p, t, x in d["audio"]]
        self.sent_audio = d["sent_audio"]
        self.origin = d["origin"]
        self.reports = d["reports"]
        self.clocks = {  # on aiortc's pts, as RtcClient.stream_clock
            kind: RtpClock(rate, [tuple(r) for r in d["reports"][kind]], d["origin"][kind])
            for kind, rate in CLOCK_RATE.items()
        }

    def send_time(self, kind: str, pts: int) -> float:
        """When the server sent the received frame with ``pts`` (as ``RtcClient.send_time``)."""
        return self.clocks[kind].time_of(int(pts))

    def received_audio(self) -> tuple[np.ndarray, float]:
        """The received audio (48 kHz, placed by RTP timestamps) and the send time of its first sample."""
        if not self.audio:
            return np.zeros(0, np.float32), float("nan")
        base = self.audio[0].pts
        out = np.zeros(max((a.pts - base) % (1 << 32) + a.data.size for a in self.audio), np.float32)
        for a in self.audio:
            s = (a.pts - base) % (1 << 32)
            out[s : s + a.data.size] = a.data
        return out, self.send_time("audio", base)
