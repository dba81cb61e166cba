"""What the test modules share, so that no test module imports another.

A speech-like test signal (:func:`speechlike`), the bundled portrait (:data:`PORTRAIT`), a cheap
renderer stand-in (:class:`InvertBackend`: the input face inverted), the live server's test settings
(:data:`DELAY_MS`, :data:`BATCH`, :func:`server_config`, :func:`invert_engine`, :func:`write_wav`) and
the one way a test waits for state that has no event to wait on: :func:`until` (async) and
:func:`eventually` (in a thread), both polling with a time limit, never a synchronisation sleep.
Fixtures and the repository paths (ROOT, GOLDEN, ...) stay in conftest.py. The server pieces import
``streaming`` only when called, so engine-level tests that use this module do not load the transports.
"""

from __future__ import annotations

import asyncio
import threading
import wave
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tests.conftest import ROOT

if TYPE_CHECKING:
    from engine.synth.choice import ModelEngine
    from streaming.server import ServerConfig

SR = 16000
PORTRAIT = ROOT / "assets" / "portrait.png"

LIMIT = 30.0  # seconds: the default bound on a wait for server state
# CPU-sized: the real transformer (stand-in weights) costs 57 ms for one window and 25 ms a window
# in calls of 8 on 2 idle cores, about twice that here where the same cores run both peers' VP8 and
# Opus; at 600 ms / 4 windows a call, a slower afternoon of this machine made every speech frame
# of a session late in 2 of 5 runs
DELAY_MS = 1000.0
BATCH = 8


def speechlike(dur: float = 3.0, seed: int = 0) -> np.ndarray:
    """A voiced, formant-shaped harmonic signal (f0 ~140 Hz) with 4 Hz syllable modulation."""
    t = np.arange(int(dur * SR)) / SR
    f0 = 140.0 + 20.0 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = np.zeros_like(t)
    for h in range(1, 25):
        f = h * f0
        amp = np.exp(-(((f - 500) / 300) ** 2)) + 0.6 * np.exp(-(((f - 1500) / 400) ** 2))
        x += (amp + 0.3 * np.exp(-(((f - 2500) / 500) ** 2))) * np.sin(h * phase)
    x *= 0.15 + 0.85 * 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))
    x = 0.3 * x / np.abs(x).max()
    return (x + 0.001 * np.random.default_rng(seed).standard_normal(t.size)).astype(np.float32)


class InvertBackend:
    """A cheap renderer backend: the input face inverted (clearly different from the template)."""

    name = "invert"

    def __init__(self, device="cpu"):
        self.device = device
        self.calls = 0

    def set_references(self, *refs):
        pass

    def render(self, faces, sketches, mels):
        self.calls += 1
        return 1.0 - faces


def write_wav(path, x16: np.ndarray, rate: int = 48000) -> None:
    """16 kHz mono float audio written as a 16-bit mono WAV at ``rate`` (linear upsampling)."""
    up = rate // 16000
    x = np.interp(np.arange(up * x16.size) / up, np.arange(x16.size), x16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def invert_engine(landmark_model) -> ModelEngine:
    from engine.synth.choice import ModelEngine

    return ModelEngine(landmark_model, renderer=object(), backend_factory=InvertBackend)


def server_config(**kw) -> ServerConfig:
    from engine.live.session import LiveConfig
    from streaming.server import ServerConfig
    from streaming.session import StreamConfig

    stream = kw.pop("stream", StreamConfig(delay_ms=DELAY_MS, live=LiveConfig(batch=BATCH)))
    return ServerConfig(loopback=True, refs=1, stream=stream, **kw)


async def until(predicate, what: str = "the condition", timeout: float = LIMIT, step: float = 0.02):
    """Poll ``predicate`` (state that has no event to wait on) until it is truthy and return its value;
    after ``timeout`` seconds raise :class:`TimeoutError` saying what was awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)


def eventually(predicate, timeout: float = 60.0, step: float = 0.01) -> bool:
    """Poll ``predicate`` (state another thread changes, with no event to wait on) for up to
    ``timeout`` seconds; whether it held."""
    for _ in range(round(timeout / step)):
        if predicate():
            return True
        threading.Event().wait(step)
    return predicate()


def private_neural(landmark_model, backend):
    """A neural synthesizer whose streams use ``backend`` itself (no shared worker)."""
    from engine.synth.neural import NeuralSynthesizer

    return NeuralSynthesizer(landmark_model, lambda: backend, shared=False)


# ---- a server in a thread, and what a hostile-input test checks in every answer -------------------

LEAKS = ("/work", "/home", "/tmp", "/root", "Traceback", "Error(", 'File "')


def assert_clean(text: str, *private: str) -> str:
    """``text`` (an answer to a client) names no absolute path, traceback or exception, nor any of
    ``private`` (e.g. the server's tmp folders); returns it."""
    for bad in (*LEAKS, *(str(p) for p in private)):
        assert bad not in text, f"{bad!r} leaks in {text[:300]!r}"
    return text


class ThreadServer:
    """An application served on a loop of its own thread (so that a test's client loop and
    blocking calls never stall it): :attr:`url`, :attr:`server` (the registry) and :attr:`errors`
    (log records with a traceback: a handler that crashed). Use as a context manager."""

    def __init__(self, app) -> None:
        import logging

        from streaming.server import SERVER

        self.app, self.server = app, app[SERVER]
        self.url = ""
        self.errors: list = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)
        outer = self

        class _Catch(logging.Handler):
            def emit(self, record) -> None:
                if record.exc_info or "Traceback" in record.getMessage():
                    outer.errors.append(f"{record.name}: {record.getMessage()}")

        self._handler = _Catch(logging.WARNING)

    def _run(self) -> None:
        from streaming.server import serve_app

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            async with serve_app(self.app) as url:
                self.url = url
                self._ready.set()
                await self._stop.wait()

        asyncio.run(main())

    def __enter__(self) -> ThreadServer:
        import logging

        logging.getLogger().addHandler(self._handler)
        self._thread.start()
        if not self._ready.wait(120):
            raise TimeoutError("the test server did not start within 120 s")
        return self

    def __exit__(self, *exc) -> None:
        import logging

        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        logging.getLogger().removeHandler(self._handler)

    def assert_no_sessions(self) -> None:
        """Every session has gone (waits up to LIMIT for the last ones to close)."""
        assert eventually(lambda: not self.server.sessions, LIMIT), list(self.server.sessions)

    def assert_serves(self) -> dict:
        """A normal session works now: :func:`websocket_session_works`; its last stats."""
        return asyncio.run(asyncio.wait_for(websocket_session_works(self.url), 2 * LIMIT))

    def call(self, coro, timeout: float = LIMIT):
        """Run ``coro`` on the server's loop (to read or change its state there)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)


async def websocket_session_works(url: str) -> dict:
    """A websocket PCM session (0.6 s of speech) until the server has made its first frames; its
    stats then."""
    import aiohttp

    pcm = (speechlike(0.6, seed=7) * 32767).astype("<i2").tobytes()
    async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
        hello = await ws.receive_json(timeout=LIMIT)
        assert hello["type"] == "session", hello
        await ws.send_bytes(pcm)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LIMIT
        while True:
            await ws.send_json({"type": "stats"})
            stats = await ws.receive_json(timeout=LIMIT)
            if stats.get("type") == "stats" and stats["session_frames"]["frames"] > 0:
                return stats
            assert loop.time() < deadline, "no frame was made within the limit"
            await asyncio.sleep(0.05)


def speech_bursts(
    bursts: int = 6, speech_s: float = 0.7, silence_s: float = 0.9, seed: int = 0
) -> tuple[np.ndarray, list[float]]:
    """16 kHz speech-like bursts (:func:`speechlike`, ``speech_s`` each) separated by silences of
    ``silence_s`` on average (each from half to one and a half of it, so that no two gaps are alike
    and a delay measured by correlation is not ambiguous) of near silence (a -60 dB noise floor),
    starting with silence; the signal and the onset times of the bursts (seconds). Sharp onsets and
    real rests, for measuring when lips move."""
    rng = np.random.default_rng(seed)
    gaps = silence_s * (0.5 + rng.permutation(bursts) / max(1, bursts - 1))
    x = 0.001 * rng.standard_normal(int((bursts * speech_s + gaps.sum()) * SR)).astype(np.float32)
    onsets = []
    t = 0.0
    for k in range(bursts):
        t += gaps[k]
        start = int(t * SR)
        t += speech_s
        piece = speechlike(speech_s, seed=seed + k)
        ramp = np.minimum(1.0, np.arange(piece.size) / (0.01 * SR))  # 10 ms fade-in: no click
        fade = ramp * ramp[::-1]
        x[start : start + piece.size] = piece * fade
        onsets.append(start / SR)
    return x, onsets


# ---- Debian's Chromium, driven by Playwright (never a downloaded browser) ----------------------------

CHROMIUM = Path("/usr/bin/chromium")
_CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
)
# a page in the background (headless) must go on decoding and showing frames at full rate
_BACKGROUND_FLAGS = (
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)


def chromium_flags(
    mic_wav: Path | str | None = None,
    *,
    loopback: bool = True,
    grant_microphone: bool = True,
    autoplay: bool = False,
    background: bool = False,
) -> list[str]:
    """Chromium's command line for a test: fake media devices, the microphone playing ``mic_wav``;
    ``loopback``: gather 127.0.0.1 candidates (Chromium skips them otherwise; off to force a relay);
    ``grant_microphone``: accept the permission prompt (else deny it); ``autoplay``: media plays
    without a user gesture; ``background``: no throttling of a headless page's timers and frames."""
    flags = list(_CHROMIUM_FLAGS)
    if loopback:
        flags.append("--allow-loopback-in-peer-connection")
    flags.append("--use-fake-ui-for-media-stream" if grant_microphone else "--deny-permission-prompts")
    if autoplay:
        flags.append("--autoplay-policy=no-user-gesture-required")
    if background:
        flags += _BACKGROUND_FLAGS
    if mic_wav is not None:
        flags.append(f"--use-file-for-fake-audio-capture={mic_wav}")
    return flags


def chromium_missing() -> str | None:
    """Why browser tests cannot run here (None: they can)."""
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed (pip install playwright)"
    return None


def playwright_or_skip():
    """``playwright.async_api`` for a module of browser tests, or the whole module skipped with the reason."""
    import pytest

    why = chromium_missing()
    if why is not None:
        pytest.skip(why, allow_module_level=True)
    import playwright.async_api

    return playwright.async_api


async def launch_chromium(pw, mic_wav: Path | str | None = None, **flags):
    """Headless Debian Chromium from the Playwright instance ``pw`` (flags: :func:`chromium_flags`)."""
    return await pw.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=chromium_flags(mic_wav, **flags)
    )
