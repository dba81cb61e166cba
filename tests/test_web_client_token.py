"""The page on a server started with a token (docs/security.md), in headless Chromium (Debian's
``/usr/bin/chromium`` driven by Playwright, as in tests/test_web_client.py): the page asks for the
token in its own form (no ``window.prompt``), says so plainly when the token is wrong and asks again,
keeps the right one for the tab (a reload does not ask), and with it shows the avatars and their
poster, runs a microphone session (``POST /offer``) and ends it. Renderer ``none`` (no model work),
loopback ICE; every wait is on a page condition or on server state, with a time limit.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np

from tests.helpers import launch_chromium, playwright_or_skip, speechlike, until

playwright_api = playwright_or_skip()

from streaming.server import SERVER, AvatarLibrary, ModelEngine, ServerConfig, create_app, serve_app  # noqa: E402

LIMIT = 30.0
MS = LIMIT * 1000
TOKEN = "page-Token_0123456789abcdefXYZ"


def write_mic(path: Path) -> Path:
    x16 = speechlike(3.0, seed=11)
    x = np.interp(np.arange(3 * x16.size) / 3, np.arange(x16.size), x16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


def status_starts(text: str) -> str:
    return f"() => document.getElementById('status').textContent.startsWith({text!r})"


def test_the_page_asks_for_the_token_once_per_tab(tmp_path):
    mic = write_mic(tmp_path / "mic.wav")
    empty = tmp_path / "no-checkpoints"
    empty.mkdir()
    cfg = ServerConfig(
        loopback=True,
        refs=1,
        renderer="none",
        cache_dir=str(tmp_path / "avatars"),
        checkpoint_dir=str(empty),
        token=TOKEN,
    )
    app = create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))
    server = app[SERVER]

    async def main():
        async with serve_app(app) as base, playwright_api.async_playwright() as pw:
            browser = await launch_chromium(pw, mic)
            try:
                page = await browser.new_page()
                page.set_default_timeout(MS)
                errors: list = []
                dialogs: list = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("dialog", lambda d: dialogs.append(d.type))
                await page.goto(base + "/")
                form = page.locator("#auth")
                await form.wait_for(state="visible")
                message = page.locator("#auth-message")
                assert "needs an access token" in await message.inner_text()
                assert await page.locator("#mode").inner_text() == "locked"
                assert await page.locator("#start").is_disabled()
                # an empty entry is not sent
                await page.click("#auth-submit")
                assert "Enter the access token" in await message.inner_text()
                # a wrong token: said plainly, forgotten, asked again
                await page.fill("#token", "wrong-token-0123456789")
                await page.click("#auth-submit")
                await page.wait_for_function(
                    "() => document.getElementById('auth-message').textContent.includes('did not accept')"
                )
                assert await form.is_visible()
                assert await page.evaluate("sessionStorage.getItem('mouthpiece.token')") is None
                assert await page.input_value("#token") == ""
                # the right one: the page loads, keeps it for the tab
                await page.fill("#token", TOKEN)
                await page.press("#token", "Enter")
                await page.wait_for_function(status_starts("Ready"))
                assert await form.is_hidden()
                assert await page.evaluate("sessionStorage.getItem('mouthpiece.token')") == TOKEN
                assert await page.locator("#avatar").input_value() == "portrait"
                await page.locator("#poster").wait_for(state="visible")  # fetched with the token
                # a session with it: the microphone up, the avatar's video down, then Stop
                await page.click("#start")
                await page.wait_for_function("() => window.mouthpiece.framesShown >= 10")
                assert len(server.sessions) == 1
                await page.click("#stop")
                await until(lambda: not server.sessions, "the session to end after Stop")
                # a reload in the same tab does not ask again
                await page.reload()
                await page.wait_for_function(status_starts("Ready"))
                assert await form.is_hidden()
                assert not errors, errors
                assert not dialogs, dialogs  # no window.prompt / alert
            finally:
                await browser.close()

    asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))
