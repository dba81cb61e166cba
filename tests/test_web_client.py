"""The browser page (web_client/) against the real server, in headless Chromium.

Debian's Chromium (``/usr/bin/chromium``; never a downloaded browser), driven by Playwright, opens
the page of a server running in the test's own event loop (:func:`streaming.server.serve_app` on 127.0.0.1, a
free port) in passthrough mode (no weights: the avatar stays at rest, the audio passes through).
Chromium's fake microphone plays a speech-like WAV; the page sends it up over WebRTC and shows the
avatar's video.

**Loopback only.** The server gathers only 127.0.0.1 candidates (``ServerConfig(loopback=True)``).
Chromium offers 127.0.0.1 only with ``--allow-loopback-in-peer-connection``, and it also offers its
interface addresses and sends connectivity checks from them (which aioice would answer and learn as
peer-reflexive candidates). The server's loopback mode (:func:`streaming.ice.loopback_ice`) makes
aioice ignore remote candidates and datagrams that are not 127.0.0.1 and record any attempt to send
elsewhere (:func:`streaming.ice.stray_sends`), so the only pair that can work is
127.0.0.1 <-> 127.0.0.1; the tests assert it.

Every wait has a time limit (``LIMIT``); waits are on page conditions (``wait_for_function``,
selectors) or on server state polled until it holds, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import launch_chromium, playwright_or_skip, speechlike, until

playwright_api = playwright_or_skip()


from streaming.ice import LOOPBACK, selected_pairs, stray_sends  # noqa: E402
from streaming.server import SERVER, AvatarLibrary, ModelEngine, ServerConfig, create_app, serve_app  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

LIMIT = 30.0  # seconds: a bound on every wait
MS = LIMIT * 1000  # Playwright takes milliseconds
WANT_FRAMES = 25  # video frames the page must have shown
PAGE_SHOT = Path(tempfile.gettempdir()) / "mouthpiece_page.png"
SHOT_SEQUENCE = Path(tempfile.gettempdir()) / "mouthpiece_speaking.png"  # _0.png, _1.png, ...
SHOTS = 8  # screenshots of the speaking avatar, 4 frames apart
VIEWPORT = {"width": 1280, "height": 960}


def write_wav(path: Path, seconds: float, seed: int = 3, rate: int = 48000) -> Path:
    """16-bit mono 48 kHz speech-like audio (the 16 kHz test signal, upsampled)."""
    x16 = speechlike(seconds, seed=seed)
    x = np.interp(np.arange(3 * x16.size) / 3, np.arange(x16.size), x16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("web-client")
    return {
        "mic": write_wav(d / "mic.wav", 3.0, seed=3),  # Chromium loops it
        "file": write_wav(d / "file.wav", 3.0, seed=5),
        "cache": d / "avatars",  # prepared once, read back by the later tests
        "mirror": mirror_portrait(d / "mirror.png"),  # a second avatar to switch to
    }


def mirror_portrait(path: Path) -> Path:
    image = cv2.imread(str(ROOT / "assets" / "portrait.png"), cv2.IMREAD_COLOR)
    cv2.imwrite(str(path), cv2.flip(image, 1))
    return path


@dataclass
class Env:
    server: object  # streaming.server.Server
    url: str
    browser: object  # playwright Browser
    page: object  # playwright Page
    page_errors: list


@contextlib.asynccontextmanager
async def running(media: dict[str, Path], grant_microphone: bool = True, **config):
    """The server as on a fresh machine (no weights: ``--renderer auto`` picks the retrieval preview on
    this CPU; loopback ICE, a temporary avatar cache) and a Chromium page on it."""
    empty = media["cache"].parent / "no-checkpoints"
    empty.mkdir(parents=True, exist_ok=True)
    cache = str(media["cache"])
    cfg = ServerConfig(loopback=True, cache_dir=cache, refs=1, checkpoint_dir=str(empty), **config)
    app = create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))
    async with serve_app(app) as base, playwright_api.async_playwright() as pw:
        url = base + "/"
        browser = await launch_chromium(pw, media["mic"], grant_microphone=grant_microphone)
        try:
            page = await browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(MS)
            errors: list = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(url)
            await page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('Ready')"
            )
            yield Env(app[SERVER], url, browser, page, errors)
        finally:
            await browser.close()


def only_session(server):
    return next(iter(server.sessions.values()), None)


def assert_loopback(hosted) -> None:
    pairs = selected_pairs(hosted.pc)
    assert pairs, "no ICE pair was selected"
    assert all(la[0] == LOOPBACK and ra[0] == LOOPBACK for la, ra in pairs), pairs
    assert not stray_sends(), f"aioice tried to send to non-loopback addresses: {stray_sends()}"


async def stop_and_check_closed(env: Env, hosted) -> None:
    pc = hosted.pc  # the server drops its reference when the session closes
    await env.page.click("#stop")
    await until(lambda: not env.server.sessions, "the server to close the session after Stop")
    await env.page.wait_for_function(
        "() => document.getElementById('status').textContent.startsWith('Stopped')"
    )
    assert hosted.stream.closed and pc.connectionState == "closed" and hosted.pc is None
    assert all(t.done() for t in hosted.tasks)
    await until(lambda: not env.server._background, "the server's background tasks to finish")
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("mouthpiece-")]


def run(main):
    """Run ``main()`` in a fresh loop; returns its result and the tasks it left behind."""

    async def wrapper():
        before = asyncio.all_tasks()
        result = await asyncio.wait_for(main(), 4 * LIMIT)
        return result, asyncio.all_tasks() - before - {asyncio.current_task()}

    result, leftover = asyncio.run(wrapper())
    assert not leftover, leftover
    assert not [t for t in threading.enumerate() if t.name.startswith("mouthpiece-live")]
    return result


def content_box(width: int, height: int, video_w: int, video_h: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the picture in a ``width`` x ``height`` element with object-fit: contain."""
    scale = min(width / video_w, height / video_h)
    w, h = round(video_w * scale), round(video_h * scale)
    return (width - w) // 2, (height - h) // 2, w, h


# ---------------------------------------------------------------------------------------------


def test_microphone_session_shows_the_avatar_and_stops_cleanly(media):
    async def main():
        async with running(media) as env:
            page, server = env.page, env.server
            banner = page.locator("#banner")
            await banner.wait_for(state="visible")
            text = await banner.inner_text()
            assert "Preview renderer (no IP_LAP renderer weights)" in text and "checkpoints/" in text, text
            assert await page.inner_text("#mode") == "preview renderer"
            options = await page.locator("#avatar option").all_inner_texts()
            assert any(o.startswith("portrait") for o in options), options
            assert await page.locator("#poster").is_visible()

            await page.click("#start")
            await page.wait_for_function(
                "n => window.mouthpiece.framesShown >= n && document.getElementById('video').currentTime > 0",
                arg=WANT_FRAMES,
            )
            hosted = await until(lambda: only_session(server), "a session on the server")
            assert hosted.kind == "webrtc"
            await until(lambda: hosted.stream.live.stats.audio_seconds > 0, "microphone audio at the server")
            assert_loopback(hosted)
            assert await page.locator("#status").inner_text() == (
                "Live: the avatar portrait follows your microphone."
            )

            # the overlay: the server's fps (a number), the browser's, latency and drops
            await page.wait_for_function(
                "() => { const t = document.getElementById('stat-fps').textContent;"
                " return /^\\d+(\\.\\d+)?$/.test(t) && parseFloat(t) > 0; }"
            )
            await page.wait_for_function(
                "() => /^\\d+(\\.\\d+)?$/.test(document.getElementById('stat-shown').textContent)"
            )
            assert await page.locator("#overlay").is_visible()
            assert (await page.inner_text("#stat-dropped")).isdigit()
            # the per-stage table of the session's stats (the figures of /metrics, for this session)
            await page.click("#stages-panel summary")
            await page.wait_for_function(
                "() => { const r = document.querySelector('#stages tr[data-stage=\"total\"]');"
                " return r && /^\\d+$/.test(r.children[1].textContent); }"
            )
            stages = await page.eval_on_selector_all("#stages tbody tr", "rs => rs.map(r => r.dataset.stage)")
            assert {"ingest", "mel", "window_wait", "hold", "encode", "send", "total"} <= set(stages), stages
            # the delay in use and, automatic (the default), its parts
            delay = await page.inner_text('#stages tr[data-stage="delay"] td')
            assert re.fullmatch(
                r"\d+ \(auto\) = look-ahead \d+ \+ compute \d+ \+ encode \d+ \+ jitter \d+"
                r" \+ margin \d+",
                delay,
            ), delay
            # the browser's side: network, jitter buffers, decoding, and their sum with the server's
            await page.wait_for_function(
                "() => { const r = document.querySelector('#path tr[data-figure=\"voice_to_lips\"]');"
                " return r && /^\\d+ ms$/.test(r.children[1].textContent); }"
            )
            path = await page.eval_on_selector_all(
                "#path tbody tr",
                "rs => Object.fromEntries(rs.map(r => [r.dataset.figure, r.children[1].textContent]))",
            )
            ms = {k: float(v.split()[0]) for k, v in path.items() if v.endswith(" ms")}
            server_total = hosted.stream.stats()["latency_ms"]["total"]["p50"]
            # voice to lips = uplink + server total + downlink + video buffer + decode
            assert server_total - 100 < ms["voice_to_lips"] < server_total + 500, (path, server_total)
            assert ms["uplink"] < 20 and ms["video_buffer"] >= 0, path  # loopback: a short round trip
            # one 20 ms packet + the packets the server's receiver holds (--mic-prefetch; default none)
            assert ms["capture"] == 20.0 * (1 + ServerConfig().mic_prefetch) == 20.0, path
            assert "interval_jitter" in ms and ms["interval_jitter"] < 40, path
            assert path["frames_dropped"].isdigit() and path["packets_lost"].isdigit(), path
            await page.screenshot(path=str(PAGE_SHOT), full_page=True)

            # the video element shows the avatar, and it speaks: a sequence of screenshots while the
            # fake microphone talks; the lower face changes between them, the upper face does not
            await page.evaluate("() => { document.getElementById('overlay').style.visibility = 'hidden'; }")
            video_size = await page.evaluate(
                "() => { const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight]; }"
            )
            frame = np.asarray(server.library.get("portrait").frames[0])
            assert tuple(video_size) == (frame.shape[1], frame.shape[0])
            shots = []
            for k in range(SHOTS):
                await page.wait_for_function(
                    "n => window.mouthpiece.framesShown >= n", arg=WANT_FRAMES + 4 * k
                )
                png = await page.locator("#video").screenshot()
                shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
                x, y, w, h = content_box(shot.shape[1], shot.shape[0], *video_size)
                shots.append(shot[y : y + h, x : x + w])
                cv2.imwrite(str(SHOT_SEQUENCE.with_name(f"{SHOT_SEQUENCE.stem}_{k}.png")), shots[-1])
            await page.evaluate("() => { document.getElementById('overlay').style.visibility = ''; }")
            h, w = shots[0].shape[:2]
            assert w > 100 and h > 100, (w, h)
            want = cv2.cvtColor(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
            corrs = []
            for shot in shots:
                seen = cv2.cvtColor(shot, cv2.COLOR_BGR2GRAY).astype(np.float64)
                corrs.append(float(np.corrcoef(seen.ravel(), want.astype(np.float64).ravel())[0, 1]))
            assert min(corrs) > 0.9, corrs  # the portrait
            # where the mouth is (the avatar's lower face box) vs the forehead band above the eyes
            y1, y2, x1, x2 = (int(v) for v in server.library.get("portrait").boxes[0])
            sy, sx = h / frame.shape[0], w / frame.shape[1]
            cols = slice(int(x1 * sx), int(x2 * sx))
            mouth = [s[int((y1 + 0.65 * (y2 - y1)) * sy) : int(y2 * sy), cols] for s in shots]
            top = [s[int(y1 * sy) : int((y1 + 0.3 * (y2 - y1)) * sy), cols] for s in shots]

            def spread(regions) -> float:
                return max(float(np.abs(a.astype(int) - b).mean()) for a in regions for b in regions)

            assert spread(mouth) > 4.0 and spread(mouth) > 4 * spread(top), (spread(mouth), spread(top))

            await stop_and_check_closed(env, hosted)
            assert await page.inner_text("#start") == "Start microphone"
            assert await page.locator("#start").is_enabled()
            assert not env.page_errors, env.page_errors
            return corrs

    run(main)


def test_audio_file_streams_to_the_server(media):
    async def main():
        async with running(media) as env:
            page, server = env.page, env.server
            await page.set_input_files("#file", str(media["file"]))
            await page.click("#play-file")  # no session yet: it starts one with the file only
            await page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('file.wav')"
            )
            hosted = await until(lambda: only_session(server), "a session on the server")
            stats = hosted.stream.live.stats
            await until(lambda: stats.audio_seconds > 0.5, "the file's audio at the server")
            assert await page.evaluate(
                "() => { const s = window.mouthpiece.state;"
                " return s.source === 'file' && s.mic === null && s.sender.track === s.file.track; }"
            )
            # the file is heard as speech (not silence from a stalled audio graph)
            await until(lambda: hosted.stream.stats()["speaking"], "the server's speech gate to open")
            assert_loopback(hosted)

            # back to the microphone, then the file again within the session (replaceTrack)
            await page.click("#use-mic")
            await page.wait_for_function(
                "() => { const s = window.mouthpiece.state; return s.source === 'microphone'"
                " && s.sender.track === s.mic.getAudioTracks()[0] && s.file === null; }"
            )
            await page.click("#play-file")
            await page.wait_for_function(
                "() => { const s = window.mouthpiece.state;"
                " return s.source === 'file' && s.file && s.sender.track === s.file.track; }"
            )
            seconds = stats.audio_seconds
            await until(lambda: stats.audio_seconds > seconds + 1.0, "more audio at the server")
            # when the file ends the page goes back to the microphone by itself
            await page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('back to the microphone')"
            )
            assert await page.evaluate("() => window.mouthpiece.state.source") == "microphone"
            assert only_session(server) is hosted  # the same session all along

            await stop_and_check_closed(env, hosted)
            assert not env.page_errors, env.page_errors

    run(main)


def test_flush_switch_avatar_and_busy_server(media):
    async def main():
        config = dict(max_sessions=1, avatars=(str(media["mirror"]),), default_avatar="portrait")
        async with running(media, **config) as env:
            page, server = env.page, env.server
            assert await page.locator("#avatar option").all_inner_texts() == ["mirror", "portrait (default)"]
            assert await page.input_value("#avatar") == "portrait"
            await page.click("#start")
            await page.wait_for_selector("#flush:not([disabled])")
            hosted = await until(lambda: only_session(server), "a session on the server")
            stats = hosted.stream.live.stats
            await until(lambda: stats.audio_seconds > 0, "microphone audio at the server")
            await page.click("#flush")
            await until(lambda: stats.flushes >= 1, "the server to flush")
            await page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('Flushed')"
            )

            # choosing another avatar during the session switches the live avatar
            await page.select_option("#avatar", "mirror")
            await page.wait_for_function(
                "n => document.getElementById('status').textContent.includes('switched to the avatar ' + n)",
                arg="mirror",
            )
            assert hosted.stream.avatar_name == "mirror" and stats.avatar_switches >= 1
            assert hosted.stream.avatar is server.library.get("mirror")
            assert (await page.get_attribute("#poster", "src")).endswith("/api/avatars/mirror/poster.jpg")
            await page.wait_for_function(
                "() => document.getElementById('session-info').textContent.includes('avatar mirror')"
            )

            # a second page while the only slot is taken: the server's busy message is shown
            other = await env.browser.new_page(viewport=VIEWPORT)
            await other.goto(env.url)
            await other.wait_for_selector("#start:not([disabled])", timeout=MS)
            await other.click("#start")
            error = other.locator("#error")
            await error.wait_for(state="visible", timeout=MS)
            assert "The server is busy" in await error.inner_text()
            assert await other.locator("#start").is_enabled(timeout=MS)
            assert server.rejected_total == 1 and list(server.sessions.values()) == [hosted]
            await other.close()

            await stop_and_check_closed(env, hosted)
            assert not env.page_errors, env.page_errors

    run(main)


def test_denied_microphone_is_explained(media):
    async def main():
        async with running(media, grant_microphone=False) as env:
            page = env.page
            await page.click("#start")
            error = page.locator("#error")
            await error.wait_for(state="visible")
            assert "Microphone permission was denied" in await error.inner_text()
            assert await page.locator("#start").is_enabled()
            assert not env.server.sessions and env.server.started_total == 0
            assert not env.page_errors, env.page_errors

    run(main)
