"""Third-party WHIP / WHEP clients from npm, unmodified, against the real server in headless Chromium.

The clients are vendored under tests/thirdparty/ (README.md there: versions, licences, how they were
built): ``@eyevinn/whip-web-client`` publishes Chromium's fake microphone (a speech-like WAV) over
WHIP; ``whip-whep``'s ``WHEPClient`` (Medooze's reference client) and ``@eyevinn/webrtc-player``
(video only: a one-sided offer) play the session. The page (tests/thirdparty/page.html) is served
by a second aiohttp server on another port, so every request the clients make is cross-origin:
with ``--allow-origin`` for the page's origin they work (the test checks the video element plays
and shows the avatar's size, and that each client's DELETE ends its resource); without it Chromium
refuses them and no session is created. Debian's Chromium (never a downloaded browser), driven by
Playwright; loopback ICE only (see tests/test_web_client.py); every wait has a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import wave
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from tests.conftest import ROOT
from tests.helpers import launch_chromium, playwright_or_skip, speechlike, until

THIRDPARTY = ROOT / "tests" / "thirdparty"
VENDORED = (
    "page.html",
    "eyevinn-whip-web-client-1.1.7.js",
    "eyevinn-webrtc-player-0.13.0.js",
    "whip-whep-1.2.0/whep.js",
)
playwright_api = playwright_or_skip()
missing = [name for name in VENDORED if not (THIRDPARTY / name).is_file()]
if missing:
    pytest.skip(
        f"vendored clients missing in tests/thirdparty: {missing} (bash tests/thirdparty/build.sh)",
        allow_module_level=True,
    )
from streaming.server import SERVER, AvatarLibrary, ModelEngine, ServerConfig, create_app, serve_app  # noqa: E402

LIMIT = 30.0  # seconds: a bound on every wait
MS = LIMIT * 1000
PLAYED_S = 2.0  # seconds of video each player must have played


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("thirdparty")
    mic = d / "mic.wav"
    x16 = speechlike(3.0, seed=9)
    x = np.interp(np.arange(3 * x16.size) / 3, np.arange(x16.size), x16)
    with wave.open(str(mic), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    empty = d / "no-checkpoints"
    empty.mkdir()
    return {"mic": mic, "cache": d / "avatars", "empty": empty}


def page_app() -> web.Application:
    app = web.Application()
    app.router.add_static("/", THIRDPARTY)
    return app


@contextlib.asynccontextmanager
async def running(media, allow: bool):
    """The page's server, the WHIP / WHEP server (passthrough renderer, loopback ICE; CORS for the
    page's origin when ``allow``) and a Chromium page on the first: (server, base URL, page, errors)."""
    async with serve_app(page_app()) as page_origin:
        cfg = ServerConfig(
            loopback=True,
            refs=1,
            renderer="none",
            cache_dir=str(media["cache"]),
            checkpoint_dir=str(media["empty"]),
            allow_origins=(page_origin,) if allow else (),
        )
        app = create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))
        async with serve_app(app) as base, playwright_api.async_playwright() as pw:
            assert base != page_origin
            browser = await launch_chromium(pw, media["mic"], autoplay=True)
            try:
                page = await browser.new_page()
                page.set_default_timeout(MS)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                async with page.expect_event("load"):
                    await page.goto(f"{page_origin}/page.html")
                await page.wait_for_function("() => window.WhipWhepWHEPClient !== undefined")
                yield app[SERVER], base, page, errors
            finally:
                await browser.close()


async def plays(page, element: str, width: int, height: int) -> dict:
    """Wait until ``element`` has played PLAYED_S seconds at the avatar's size; its state."""
    await page.wait_for_function(
        f"() => {{ const s = videoState('{element}'); "
        f"return s.time >= {PLAYED_S} && s.width === {width} && s.height === {height}; }}"
    )
    return await page.evaluate(f"videoState('{element}')")


def test_npm_whip_client_and_whep_players_from_another_origin(media):
    async def main():
        out = {}
        async with running(media, allow=True) as (server, base, page, errors):
            location = await page.evaluate("endpoint => publishEyevinn(endpoint)", f"{base}/whip")
            hosted = await until(lambda: next(iter(server.sessions.values()), None), "the WHIP session")
            sid = hosted.stream.id
            out["whip"] = (location, hosted.kind)
            await until(lambda: hosted.stream.live.stats.audio_seconds > 1.0, "the microphone's audio")
            height, width = hosted.stream.avatar.frame_size
            # whip-whep's WHEPClient on /whep (the newest session): video and audio
            resource = await page.evaluate("endpoint => watchWhipWhep(endpoint)", f"{base}/whep")
            assert len(hosted.viewers) == 1
            out["whipwhep"] = (resource, await plays(page, "medooze", width, height))
            await page.evaluate("stopWhipWhep()")
            await until(lambda: not hosted.viewers, "whip-whep's DELETE to end its viewer")
            # the Eyevinn WebRTC player on /whep/{session}, video only (a one-sided offer)
            await page.evaluate(
                "endpoint => watchEyevinn(endpoint, { videoOnly: true })", f"{base}/whep/{sid}"
            )
            await until(lambda: len(hosted.viewers) == 1, "the Eyevinn player's viewer")
            viewer = next(iter(hosted.viewers.values()))
            out["eyevinn_kinds"] = sorted(t.kind for t in viewer.getTransceivers())
            out["eyevinn"] = await plays(page, "eyevinn", width, height)
            out["eyevinn_events"] = await page.evaluate("window.eyevinnEvents")
            await page.evaluate("stopEyevinn()")
            await until(lambda: not hosted.viewers, "the Eyevinn player's DELETE to end its viewer")
            await page.evaluate("stopEyevinnWhip()")
            await until(lambda: not server.sessions, "the Eyevinn WHIP client's DELETE to end the session")
            out["errors"] = errors
            out["size"] = (width, height)
        return out

    out = asyncio.run(asyncio.wait_for(main(), 6 * LIMIT))
    print(f"whip-whep WHEPClient: {out['whipwhep'][1]}; Eyevinn player (video only): {out['eyevinn']}")
    location, kind = out["whip"]
    assert kind == "whip" and location.startswith("http") and "/whip/" in location
    resource, state = out["whipwhep"]
    assert (
        "/whep/" in resource
        and state["time"] >= PLAYED_S
        and (state["width"], state["height"]) == out["size"]
    )
    assert out["eyevinn_kinds"] == ["video"]  # the player's video-only offer, answered as such
    state = out["eyevinn"]
    assert state["time"] >= PLAYED_S and (state["width"], state["height"]) == out["size"]
    assert out["eyevinn_events"] == [] and out["errors"] == []


def test_without_allow_origin_the_browser_is_refused(media):
    async def main():
        async with running(media, allow=False) as (server, base, page, _):
            refused = {}
            for name, call, path in (
                ("whip", "publishEyevinn", "/whip"),
                ("whep", "watchWhipWhep", "/whep"),
            ):
                refused[name] = await page.evaluate(
                    f"endpoint => {call}(endpoint).then(() => 'accepted', (e) => e.name + ': ' + e.message)",
                    base + path,
                )
            created = len(server.sessions)
        return refused, created

    refused, created = asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))
    print(f"without --allow-origin: {refused}")
    for name, message in refused.items():
        assert message.startswith("TypeError") and "fetch" in message, (name, message)  # blocked by CORS
    assert created == 0
