"""One session, many viewers (streaming/broadcast.py; issue 14, "Broadcast").

Unit tests of the fan-out with a source the test feeds item by item (a stalled viewer drops only its
own oldest items while the others get every one; joining and leaving; no object or buffer shared
between two viewers' frames; a late joiner's encoder starts with a keyframe), a real
:class:`StreamSession` with three viewers (the tracks, the stats, everything gone after ``aclose``),
``--max-viewers`` on the command line, and the real thing: ``mouthpiece serve`` in a child process, four
viewers of one session for 60 s: the server's own page in headless Debian Chromium (Playwright), which
starts the session with a WAV as its fake microphone and whose shown frames are counted in the page
(``requestVideoFrameCallback``), and three WHEP viewers (aiortc peers: one video-only, one joining
late); where Chromium or Playwright is missing, an aiortc presenter on ``/offer`` takes the page's
place. No viewer frozen (3 s without a frame), the server's memory flat, a fourth WHEP viewer refused
with 503, every viewer's tasks and threads gone at the end; and each viewer >= 24 fps with no gap over
0.5 s and, where it has audio, its 50 audio frames a second. A real-time shortfall fails the test
unless the machine did not give the event loops the CPU they asked for (the server's or this
process's loop thread waited for a CPU over 10 % of the minute, from /proc schedstat: cores busy
with other work); then it is a skip that states the figures. Every wait has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from benchmarks.viewers_pieces import ServerProcess, WhepViewer, speech_wav
from streaming.broadcast import AUDIO_QUEUE, VIDEO_QUEUE, Broadcast, SharedAudio, SharedVideo, yuv420p_planes
from tests.helpers import PORTRAIT, chromium_missing, launch_chromium, until

LIMIT = 20.0
TB = fractions.Fraction(1, 25)
ATB = fractions.Fraction(1, 48000)


def image(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A BGR test image that differs from frame to frame."""
    rng = np.random.default_rng(i)
    img = np.full((h, w, 3), 40 + (i * 7) % 160, np.uint8)
    img[h // 4 : h // 2, w // 4 : w // 2] = rng.integers(
        0, 255, (h // 2 - h // 4, w // 2 - w // 4, 3), np.uint8
    )
    return img


def video_item(i: int, h: int = 48, w: int = 64) -> SharedVideo:
    return SharedVideo.from_bgr(image(i, h, w), i, TB)


class FedSource:
    """A source whose items the test hands in one by one (``None`` ends it)."""

    kind = "video"

    def __init__(self) -> None:
        self.items: asyncio.Queue = asyncio.Queue()
        self.produced = 0

    async def produce(self):
        item = await self.items.get()
        if item is None:
            raise MediaStreamError
        self.produced += 1
        return item


async def recv_pts(viewer) -> int:
    return int((await asyncio.wait_for(viewer.recv(), LIMIT)).pts)


def test_a_stalled_viewer_drops_only_its_own_oldest_frames():
    async def main():
        src = FedSource()
        b = Broadcast(src, queue=VIDEO_QUEUE)
        stalled, a, c = b.subscribe(), b.subscribe(), b.subscribe()
        got_a, got_c = [], []
        for i in range(40):
            src.items.put_nowait(video_item(i))
            got_a.append(await recv_pts(a))
            got_c.append(await recv_pts(c))
        assert got_a == got_c == list(range(40))  # every frame, in order
        assert a.dropped == c.dropped == 0
        assert stalled.pending == VIDEO_QUEUE and stalled.dropped == 40 - VIDEO_QUEUE
        assert b.dropped == 40 - VIDEO_QUEUE and b.produced == 40
        # when it reads at last it gets its newest frames, in order, then waits like the others
        assert [await recv_pts(stalled) for _ in range(VIDEO_QUEUE)] == list(range(40 - VIDEO_QUEUE, 40))
        assert stalled.pending == 0

        # a source much faster than a viewer never waits for it: 500 items go by a stalled queue
        src2 = FedSource()
        b2 = Broadcast(src2, queue=3)
        slow = b2.subscribe()
        item = video_item(0)
        for _ in range(500):
            src2.items.put_nowait(item)
        await until(lambda: src2.produced == 500, "the source to be read through")
        assert slow.pending == 3 and slow.dropped == 497
        await b.aclose()
        await b2.aclose()

    asyncio.run(asyncio.wait_for(main(), 3 * LIMIT))


def test_viewers_join_and_leave_at_any_time():
    async def main():
        src = FedSource()
        b = Broadcast(src, queue=VIDEO_QUEUE, name="join-leave")
        v1 = b.subscribe()
        for i in range(5):
            src.items.put_nowait(video_item(i))
            assert await recv_pts(v1) == i
        v2 = b.subscribe()  # joins: gets what is made from now on
        for i in range(5, 10):
            src.items.put_nowait(video_item(i))
        assert [await recv_pts(v2) for _ in range(5)] == list(range(5, 10))
        assert [await recv_pts(v1) for _ in range(5)] == list(range(5, 10))

        waiting = asyncio.ensure_future(v1.recv())  # v1 leaves while it waits for a frame
        await asyncio.sleep(0)
        v1.stop()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(waiting, LIMIT)
        assert v1.readyState == "ended" and b.viewers == (v2,)
        src.items.put_nowait(video_item(10))
        assert await recv_pts(v2) == 10

        v2.stop()  # the last viewer: the source is read once more at most, then not at all
        assert b.viewers == ()
        src.items.put_nowait(video_item(11))
        await until(lambda: b._task.done(), "the broadcast to stop reading without viewers")
        assert src.produced == 12
        src.items.put_nowait(video_item(12))
        assert src.items.qsize() == 1  # nobody reads it
        v3 = b.subscribe()  # reading starts again with a new viewer
        assert await recv_pts(v3) == 12
        assert b.joined == 3 and b.stats()["viewers"] == 1

        src.items.put_nowait(None)  # the source ends: so does every viewer
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(v3.recv(), LIMIT)
        assert v3.readyState == "ended" and b.viewers == ()
        await b.aclose()
        with pytest.raises(RuntimeError):
            b.subscribe()
        assert b._task.done()

    asyncio.run(asyncio.wait_for(main(), 3 * LIMIT))


@pytest.mark.parametrize("size", [(48, 64), (37, 51)])  # odd sizes have ceil-sized chroma planes
def test_no_object_or_buffer_is_shared_between_two_viewers_frames(size):
    async def main():
        src = FedSource()
        b = Broadcast(src, queue=2)
        x, y = b.subscribe(), b.subscribe()
        img = image(3, *size)
        item = SharedVideo.from_bgr(img, 7, TB)
        src.items.put_nowait(item)
        fx, fy = await asyncio.wait_for(x.recv(), LIMIT), await asyncio.wait_for(y.recv(), LIMIT)
        await b.aclose()
        return img, item, fx, fy

    img, item, fx, fy = asyncio.run(main())
    assert fx is not fy
    assert (fx.width, fx.height) == (size[1], size[0]) and fx.format.name == "yuv420p"
    assert fx.pts == fy.pts == 7 and fx.time_base == fy.time_base == TB
    assert all(not p.flags.writeable for p in item.planes)  # the shared arrays are read-only
    px = [np.frombuffer(p, np.uint8) for p in fx.planes]
    py = [np.frombuffer(p, np.uint8) for p in fy.planes]
    for a, c, s in zip(px, py, item.planes, strict=True):
        assert not np.shares_memory(a, c) and not np.shares_memory(a, s) and not np.shares_memory(c, s)
    # the same picture, close to the source image (yuv420p round trip)
    assert np.array_equal(fx.to_ndarray(format="bgr24"), fy.to_ndarray(format="bgr24"))
    assert np.abs(fx.to_ndarray(format="bgr24").astype(int) - img).mean() < 6.0
    # what an encoder does to its frame (a keyframe request, a reformat) stays in that frame
    before = item.planes[0].copy()
    fx.pict_type = av.video.frame.PictureType.I
    fx.reformat(format="rgb24")
    px[0][:] = 0
    assert fy.pict_type != av.video.frame.PictureType.I
    assert np.array_equal(item.planes[0], before) and py[0].any()
    for plane, src in zip(fy.planes, item.planes, strict=True):
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        assert np.array_equal(rows, src)


def test_yuv_planes_match_pyav_and_audio_frames_are_copies():
    img = image(5, 64, 80)
    ref = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p").to_ndarray()
    y, u, v = yuv420p_planes(img)
    assert np.array_equal(np.concatenate([y, u.reshape(-1, 80), v.reshape(-1, 80)]), ref)

    pcm = (1000 * np.sin(np.arange(960) / 10)).astype(np.int16)
    shared = SharedAudio.from_pcm(pcm, 960 * 4, 48000, ATB)
    assert not shared.samples.flags.writeable
    a, c = shared.frame(), shared.frame()
    assert a is not c and a.pts == c.pts == 3840 and a.sample_rate == 48000 and a.samples == 960
    xa, xc = a.to_ndarray(), c.to_ndarray()
    assert np.array_equal(xa.ravel(), pcm) and np.array_equal(xc.ravel(), pcm)
    assert not np.shares_memory(xa, shared.samples) and not np.shares_memory(xa, xc)


def _vp8_keyframe(payloads: list[bytes]) -> bool:
    desc, data = VpxPayloadDescriptor.parse(payloads[0])
    return bool(desc.partition_start) and (data[0] & 1) == 0  # VP8 frame tag: bit 0 clear = key frame


def test_a_late_joiner_starts_with_a_keyframe():
    """aiortc makes an encoder per sender when its first frame comes; a new viewer's first frame is
    therefore a keyframe while the viewers already there go on with inter frames."""
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)

    async def main():
        src = FedSource()
        b = Broadcast(src, queue=VIDEO_QUEUE)
        early, enc_early = b.subscribe(), get_encoder(vp8)
        kinds_early = []
        for i in range(10):
            src.items.put_nowait(video_item(i, 96, 128))
            payloads, _ = enc_early.encode(await asyncio.wait_for(early.recv(), LIMIT))
            kinds_early.append(_vp8_keyframe(payloads))
        late, enc_late = b.subscribe(), get_encoder(vp8)
        src.items.put_nowait(video_item(10, 96, 128))
        first_late, _ = enc_late.encode(await asyncio.wait_for(late.recv(), LIMIT))
        next_early, _ = enc_early.encode(await asyncio.wait_for(early.recv(), LIMIT))
        dec = av.CodecContext.create("libvpx", "r")  # the late joiner's first frame decodes on its own
        desc, data = VpxPayloadDescriptor.parse(first_late[0])
        body = data + b"".join(VpxPayloadDescriptor.parse(p)[1] for p in first_late[1:])
        pictures = dec.decode(av.Packet(body))
        await b.aclose()
        return kinds_early, _vp8_keyframe(first_late), _vp8_keyframe(next_early), pictures

    kinds_early, late_key, early_key, pictures = asyncio.run(main())
    assert kinds_early[0] and not any(kinds_early[1:])
    assert late_key and not early_key
    assert len(pictures) == 1 and (pictures[0].width, pictures[0].height) == (128, 96)


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    from engine.core.avatar import AvatarConfig, prepare_avatar

    return prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path_factory.mktemp("broadcast-avatar"))


def test_a_session_feeds_three_viewers_from_one_source(avatar):
    N = 50  # video frames read (2 s)
    from engine.synth import make_synthesizer
    from streaming.session import StreamConfig, StreamSession

    async def main():
        before = asyncio.all_tasks()
        session = await StreamSession(avatar, make_synthesizer("none"), StreamConfig()).start()
        (v1, a1), (v2, a2), (v3, a3) = session.subscribe(), session.subscribe(), session.subscribe()
        assert session.viewers == 3 and v1 is not v2 and a1 is not a2
        got = {1: [], 2: []}

        async def read(track, key, n):
            for _ in range(n):
                f = await asyncio.wait_for(track.recv(), LIMIT)
                got[key].append((f.pts, f.width, f.height))

        audio_pts = []

        async def read_audio(track, n):
            for _ in range(n):
                audio_pts.append((await asyncio.wait_for(track.recv(), LIMIT)).pts)

        # v3 and a3 are never read (a stalled viewer); a2 is never read either
        await asyncio.gather(read(v1, 1, N), read(v2, 2, N), read_audio(a1, 40))
        stats = session.stats()
        sent = session.video.sent
        yuv_threads = [t for t in threading.enumerate() if t.name.startswith("mouthpiece-yuv")]
        await session.aclose()
        ended = []
        for t in (v1, v2, v3, a1, a2, a3):
            try:
                while True:  # what was queued is dropped on close: recv ends at once
                    await asyncio.wait_for(t.recv(), LIMIT)
            except MediaStreamError:
                ended.append(t.readyState)
        leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
        return got, audio_pts, stats, sent, yuv_threads, ended, leftover, session, (v1, v2, a1)

    got, audio_pts, stats, sent, yuv_threads, ended, leftover, session, (v1, v2, a1) = asyncio.run(
        asyncio.wait_for(main(), 3 * LIMIT)
    )
    h, w = avatar.frame_size
    assert got[1] == got[2] and len(got[1]) == N  # the same frames, each in a frame of its own
    assert all((fw, fh) == (w, h) for _, fw, fh in got[1])
    assert np.all(np.diff([p for p, _, _ in got[1]]) >= 1)  # wall-clock positions, in order
    assert np.all(np.diff(audio_pts) == 960)
    # one source: each frame made once, whatever the number of viewers
    assert sent <= got[1][-1][0] - got[1][0][0] + 1 + VIDEO_QUEUE + 2
    v = stats["broadcast"]
    assert v["viewers"] == 3 and v["joined"] == 3
    # the stalled ones: v3 (video); a2 and a3 (audio: 2 s is 100 frames, their queues hold 50)
    assert v["dropped_video"] >= N - VIDEO_QUEUE - 2 and v["dropped_audio"] >= 2 * (2 * N - AUDIO_QUEUE - 20)
    assert v1.dropped == v2.dropped == 0
    assert len(yuv_threads) == 1  # one converter per session
    assert ended == ["ended"] * 6 and session.viewers == 0
    assert not leftover, leftover
    assert not [t for t in threading.enumerate() if t.name.startswith(("mouthpiece-yuv", "mouthpiece-live"))]


def test_max_viewers_option():
    from streaming.config import ServerConfig, add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert config_from_args(p.parse_args([])).max_viewers == ServerConfig().max_viewers
    assert config_from_args(p.parse_args(["--max-viewers", "40"])).max_viewers == 40
    for bad in ("0", "-2", "many"):
        with pytest.raises(SystemExit):
            p.parse_args(["--max-viewers", bad])


# ---- the real thing ------------------------------------------------------------------------------

WATCH_S = 60.0
MIN_FPS = 24.0
FROZEN_S = 3.0  # no frame for this long, on any machine: frozen
MAX_CPU_WAIT = 0.10  # an event loop that waited for a CPU longer than this share of the minute: too busy
MAX_GAP_S = 0.5  # a viewer frozen: no frame for longer than this while the others go on
RSS_GROWTH_MB = 40.0  # the last 20 s vs the first 20 s (the bug this replaces: ~20 MB/s)


def thread_cpu_wait_s() -> float:
    """Seconds this thread has waited for a CPU (runnable, not running: /proc schedstat)."""
    path = f"/proc/self/task/{threading.get_native_id()}/schedstat"
    return int(open(path).read().split()[1]) / 1e9


def gaps_over(arrivals: np.ndarray, bound: float) -> list[tuple[float, float]]:
    """(previous, next) arrival times around each gap longer than ``bound``."""
    d = np.diff(arrivals)
    return [(float(arrivals[i]), float(arrivals[i + 1])) for i in np.flatnonzero(d > bound)]


class PagePresenter:
    """The server's own page in headless Debian Chromium (Playwright, never a downloaded browser),
    its fake microphone playing a WAV: the session is started from the page (``#start``), and each
    video frame the page shows is recorded (``requestVideoFrameCallback``), mapped to this process's
    ``time.monotonic()``."""

    def __init__(self, url: str, wav: Path) -> None:
        self.url, self.wav = url, wav
        self.session: str | None = None
        self.errors: list[str] = []
        self._pw = self._browser = self.page = None

    async def start(self) -> PagePresenter:
        from playwright.async_api import async_playwright

        self._pw = await async_playwright().start()
        self._browser = await launch_chromium(self._pw, self.wav, background=True)
        page = self.page = await self._browser.new_page(viewport={"width": 1024, "height": 768})
        page.set_default_timeout(2 * LIMIT * 1000)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        await page.goto(self.url + "/")
        await page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('Ready')"
        )
        await page.click("#start")
        await page.wait_for_function("() => window.mouthpiece.framesShown >= 25")
        self.session = await page.evaluate("() => window.mouthpiece.state.session")
        await page.evaluate(
            """() => {
                const v = document.getElementById('video');
                window.viewerTest = [];
                const on = () => {
                    window.viewerTest.push(performance.now());
                    v.requestVideoFrameCallback(on);
                };
                v.requestVideoFrameCallback(on);
            }"""
        )
        return self

    async def clock_offset(self) -> float:
        """``time.monotonic()`` minus the page's ``performance.now()`` (seconds), from a round trip."""
        m0 = time.monotonic()
        now_ms = await self.page.evaluate("() => performance.now()")
        m1 = time.monotonic()
        return (m0 + m1) / 2 - now_ms / 1000.0

    async def arrivals(self) -> np.ndarray:
        """The monotonic times of the frames the page has shown since :meth:`start`."""
        offset = await self.clock_offset()
        return np.asarray(await self.page.evaluate("() => window.viewerTest"), float) / 1000.0 + offset

    async def frames_decoded(self) -> int:
        """The page's peer's ``framesDecoded`` (getStats, inbound video)."""
        return int(
            await self.page.evaluate(
                """async () => {
                    const st = await window.mouthpiece.state.pc.getStats();
                    for (const r of st.values())
                        if (r.type === 'inbound-rtp' && r.kind === 'video') return r.framesDecoded;
                    return 0;
                }"""
            )
        )

    async def close(self) -> None:
        if self.page is not None and self.session is not None:
            with contextlib.suppress(Exception):  # the session may have ended already
                await self.page.click("#stop", timeout=LIMIT * 1000)
        if self._browser is not None:
            await self._browser.close()
        if self._pw is not None:
            await self._pw.stop()


class AiortcPresenter:
    """The same role played by an aiortc peer on ``/offer`` (:class:`streaming.client.RtcClient`)."""

    def __init__(self, url: str, wav: Path) -> None:
        from streaming.client import RtcClient

        self.client = RtcClient(url, audio_path=str(wav), keep_video=False)
        self.session: str | None = None
        self.errors: list[str] = []

    async def start(self) -> AiortcPresenter:
        await self.client.start()
        await self.client.wait_video(25, 2 * LIMIT)
        self.session = self.client.session
        return self

    async def arrivals(self) -> np.ndarray:
        offset = time.time() - time.monotonic()  # the client's arrivals are time.time()
        return np.array([f.arrival - offset for f in self.client.video])

    async def frames_decoded(self) -> int:
        return len(self.client.video)

    async def close(self) -> None:
        await self.client.close()


@pytest.mark.parametrize("presenter", ["page", "aiortc"])
def test_one_session_four_viewers_for_a_minute(tmp_path, presenter):
    """Four viewers of one session for 60 s: the presenter (the server's page in Chromium, whose own
    video counts as a viewer; an aiortc peer on /offer where Chromium or Playwright is missing) and
    three WHEP viewers, one of them video-only and one joining late. Only one of the two variants
    runs on a machine, so the file has one 60 s run."""
    missing = chromium_missing()
    if presenter == "page" and missing:
        pytest.skip(f"the page variant needs Chromium and Playwright: {missing}; the aiortc variant runs")
    if presenter == "aiortc" and not missing:
        pytest.skip("Chromium and Playwright are here: the page variant is the one 60 s run")
    from streaming.ice import loopback_ice

    threads_before = set(threading.enumerate())
    make = PagePresenter if presenter == "page" else AiortcPresenter

    async def main():
        wav = speech_wav(
            tmp_path / "speech.wav", 20.0 if presenter == "page" else WATCH_S + 60.0
        )  # Chromium loops it
        out: dict = {}
        with loopback_ice():
            async with ServerProcess(tmp_path, "preview", 3) as srv:
                pres = make(srv.url, wav)
                viewers: list[WhepViewer] = []
                try:
                    await asyncio.wait_for(pres.start(), 4 * LIMIT)
                    out["threads_presenter"] = srv.threads()
                    sid = pres.session
                    viewers.append(await WhepViewer(srv.url, sid).start())
                    viewers.append(await WhepViewer(srv.url, sid, audio=False).start())  # video only
                    for v in viewers:
                        await asyncio.wait_for(v.first_frame.wait(), LIMIT)
                    await until(lambda: len(viewers[0].video_arrivals) >= 50, "the first viewers to run")
                    viewers.append(await WhepViewer(srv.url, sid).start())  # a late joiner
                    await asyncio.wait_for(viewers[-1].first_frame.wait(), LIMIT)
                    fourth = WhepViewer(srv.url, sid)
                    with pytest.raises(RuntimeError, match=r"\(503\)"):
                        await fourth.start()
                    await fourth.close()

                    s0 = await srv.session_stats(sid)
                    w0, c0 = srv.loop_cpu_wait_s(), thread_cpu_wait_s()
                    d0 = await pres.frames_decoded()
                    t0 = time.monotonic()
                    rss = []
                    while time.monotonic() - t0 < WATCH_S:  # the measuring window: one RSS sample a second
                        rss.append((time.monotonic() - t0, srv.rss_mb()))
                        await asyncio.sleep(1.0)
                    t1 = time.monotonic()
                    d1 = await pres.frames_decoded()
                    s1 = await srv.session_stats(sid)
                    out["wait_server"] = (srv.loop_cpu_wait_s() - w0) / (t1 - t0)
                    out["window"] = (t0, t1)
                    out["wait_client"] = (thread_cpu_wait_s() - c0) / (t1 - t0)
                    out["source_fps"] = (s1["video"]["sent"] - s0["video"]["sent"]) / (t1 - t0)
                    out["dropped"] = s1["broadcast"]["dropped_video"] - s0["broadcast"]["dropped_video"]
                    out["fps"] = [v.fps(t0, t1) for v in viewers]
                    own = await pres.arrivals()
                    own = own[(own >= t0) & (own <= t1)]
                    out["streams"] = [
                        np.array([a for a in v.video_arrivals if t0 <= a <= t1]) for v in viewers
                    ]
                    out["streams"].append(own)
                    out["presenter_fps"] = own.size / (t1 - t0)
                    out["presenter_decoded_fps"] = (d1 - d0) / (t1 - t0)
                    out["audio"] = [v.audio_frames for v in viewers]
                    out["video_only_audio"] = viewers[1].audio_frames
                    out["rss"] = rss
                    out["threads_peak"] = srv.threads()
                    out["page_errors"] = pres.errors
                finally:
                    for v in viewers:
                        await v.close()
                    await pres.close()
                # the server closes the session once the presenter has gone, the viewers with it
                deadline = time.monotonic() + LIMIT
                while await srv.sessions() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                out["sessions_end"] = await srv.sessions()
                await until(
                    lambda: srv.threads() <= out["threads_presenter"],
                    "the server's threads to return to the presenter-only count",
                )
                out["threads_end"] = srv.threads()
                await until(  # asyncio's default executor (asyncio_N) goes with the loop, checked below
                    lambda: (
                        {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}
                        <= threads_before
                    ),
                    "this process's viewer threads (decoders, the browser driver's watcher) to end",
                )
                out["client_tasks"] = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return out

    out = asyncio.run(asyncio.wait_for(main(), WATCH_S + 10 * LIMIT))
    # at any load: no viewer froze (the bug this replaces: a viewer stopped for good after a few frames;
    # the window's ends count, so a viewer that stops early shows), memory flat, the fourth viewer
    # refused (above), every viewer's tasks and threads gone
    t0, t1 = out["window"]
    for k, a in enumerate(out["streams"]):
        assert not gaps_over(np.concatenate([[t0], a, [t1]]), FROZEN_S), (k, gaps_over(a, MAX_GAP_S))
    assert out["presenter_decoded_fps"] > 0 and out["video_only_audio"] == 0
    assert not out["page_errors"], out["page_errors"]
    first = max(mb for t, mb in out["rss"] if t < 20.0)
    last = max(mb for t, mb in out["rss"] if t >= WATCH_S - 20.0)
    assert last - first <= RSS_GROWTH_MB, (first, last)
    assert out["sessions_end"] == 0
    assert out["threads_end"] <= out["threads_presenter"] < out["threads_peak"]
    assert not [t for t in out["client_tasks"] if not t.done()]
    assert set(threading.enumerate()) <= threads_before  # the viewers' decoder threads are gone
    # real time: every viewer >= 24 fps, no gap over 0.5 s, 50 audio frames a second for the viewers
    # with audio. Judged unless the machine did not give the server's and the viewers' event loops the
    # CPU they asked for (on cores shared with other work they may wait for one most of the time: then
    # a frame rate says nothing about this code, and a shortfall is reported as a skip, with the figures)
    gaps = [g for st in out["streams"] for g in gaps_over(np.concatenate([[t0], st, [t1]]), MAX_GAP_S)]
    with_audio = [n for v, n in enumerate(out["audio"]) if v != 1]
    shortfall = [
        f"viewer fps {[round(f, 1) for f in out['fps']]}" * (min(out["fps"]) < MIN_FPS),
        f"{presenter} fps {out['presenter_fps']:.1f} (decoded {out['presenter_decoded_fps']:.1f})"
        * (out["presenter_fps"] < MIN_FPS),
        f"gaps {[round(b - a, 2) for a, b in gaps]} s" * bool(gaps),
        f"audio frames {with_audio}" * (min(with_audio) < 45 * WATCH_S),
    ]
    shortfall = "; ".join(x for x in shortfall if x)
    waited = max(out["wait_server"], out["wait_client"])
    if shortfall and waited > MAX_CPU_WAIT:
        pytest.skip(
            f"real time not judged: an event loop waited for a CPU {waited:.0%} of the minute (other work "
            f"on these cores; the session made {out['source_fps']:.1f} fps): {shortfall}; every other "
            "check passed"
        )
    assert not shortfall, (shortfall, f"waited for a CPU {waited:.0%}", f"source {out['source_fps']:.1f} fps")
