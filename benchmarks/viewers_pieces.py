"""The pieces of the viewers benchmark that tests/test_broadcast.py uses too: a server in a child process
(:class:`ServerProcess`: its CPU, RSS and threads from /proc), a WHEP viewer (:class:`WhepViewer`: an aiortc
peer that watches a session), a free port and a speech-like WAV."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from streaming.ice import loopback_configuration
from streaming.tracks import wait_cancelled

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")

__all__ = ["ServerProcess", "WhepViewer", "free_port", "speech_wav"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def speech_wav(path: Path, seconds: float, rate: int = 48000) -> Path:
    """A voiced, syllable-modulated harmonic signal (f0 ~140 Hz) as a 16-bit mono WAV."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140.0 + 20.0 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = np.zeros_like(t)
    for h in range(1, 25):
        f = h * f0
        amp = np.exp(-(((f - 500) / 300) ** 2)) + 0.6 * np.exp(-(((f - 1500) / 400) ** 2))
        x += amp * np.sin(h * phase)
    x *= 0.15 + 0.85 * 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))
    x = 0.3 * x / np.abs(x).max()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


class ServerProcess:
    """``mouthpiece serve`` in a child process on a free port (loopback ICE); its CPU seconds, RSS
    and thread count read from /proc. Use as ``async with ServerProcess(...) as srv:``."""

    def __init__(self, workdir: Path, renderer: str = "preview", max_viewers: int = 16, *extra: str) -> None:
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        empty = self.workdir / "no-checkpoints"
        empty.mkdir(parents=True, exist_ok=True)
        self.command = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.command += ["--loopback", "--renderer", renderer, "--checkpoint-dir", str(empty), "--refs", "1"]
        self.command += ["--cache", str(self.workdir / "cache"), "--max-viewers", str(max_viewers), *extra]
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 3000) -> str:
        self._log.flush()
        return Path(self._log.name).read_bytes()[-n:].decode("utf-8", "replace")

    async def __aenter__(self) -> ServerProcess:
        self._log = tempfile.NamedTemporaryFile(
            "w+b", prefix="mouthpiece-viewers-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180.0
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the server exited with status {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer in 180 s:\n{self.log_tail()}")
                await asyncio.sleep(0.25)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def loop_cpu_wait_s(self) -> float:
        """Seconds the server's main thread (its event loop) has waited for a CPU (/proc schedstat)."""
        return int(Path(f"/proc/{self.pid}/task/{self.pid}/schedstat").read_text().split()[1]) / 1e9

    def rss_mb(self) -> float:
        return self._status("VmRSS") / 1024.0

    def threads(self) -> int:
        return self._status("Threads")

    async def session_stats(self, sid: str) -> dict:
        """One session's stats (``/api/sessions/{sid}``)."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/api/sessions/{sid}") as r:
            return await r.json()

    async def sessions(self) -> int:
        """The server's session count (``/healthz``)."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/healthz") as r:
            return int((await r.json())["sessions"])


class WhepViewer:
    """An aiortc peer that watches a session over WHEP (recvonly video and audio, or video only):
    ``POST /whep/{session}`` with its offer, ``DELETE`` its resource on :meth:`close`. Records the
    arrival time (``time.monotonic()``) and pts of each decoded video frame and counts audio frames."""

    def __init__(self, base_url: str, session: str, audio: bool = True) -> None:
        self.base_url = base_url
        self.session = session
        self.audio = audio
        self.pc = RTCPeerConnection(loopback_configuration())
        self.location: str | None = None
        self.video_arrivals: list[float] = []
        self.video_pts: list[int] = []
        self.audio_frames = 0
        self.first_frame = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> WhepViewer:
        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")
        if self.audio:
            pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def _track(track) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.base_url}/whep/{self.session}", data=pc.localDescription.sdp, headers=headers
            ) as r,
        ):
            text = await r.text()
            if r.status != 201:
                raise RuntimeError(f"WHEP offer refused ({r.status}): {text[:200]}")
            self.location = r.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
        return self

    async def _consume(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                self.video_arrivals.append(time.monotonic())
                self.video_pts.append(int(frame.pts))
                self.first_frame.set()
            else:
                self.audio_frames += 1

    def fps(self, t0: float, t1: float) -> float:
        """Frames that arrived in ``[t0, t1)`` per second."""
        a = np.asarray(self.video_arrivals)
        return float(((a >= t0) & (a < t1)).sum() / (t1 - t0)) if t1 > t0 else 0.0

    def max_gap(self, t0: float | None = None, t1: float | None = None) -> float:
        """The longest time between two consecutive frames' arrivals (after the first frame, within
        ``[t0, t1]`` where given)."""
        a = np.asarray(self.video_arrivals)
        if t0 is not None:
            a = a[a >= t0]
        if t1 is not None:
            a = a[a <= t1]
        return float(np.diff(a).max()) if a.size > 1 else float("inf")

    async def close(self) -> None:
        if self.location is not None:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as http, http.delete(self.base_url + self.location) as r:
                    await r.read()
            self.location = None
        await self.pc.close()
        for t in self._tasks:
            if not t.done():
                t.cancel()
            await wait_cancelled(t)


# ---- part 2: the encoders one viewer adds ------------------------------------------------------
