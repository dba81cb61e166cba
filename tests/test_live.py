"""The live session engine: offline equivalence, silence, flush/interrupt, latency bound, shutdown.

Real models with stand-in weights on the bundled portrait (N = 1). The renderer costs ~2 s per
window on a shared 2-core CPU, so only the offline-equivalence test renders with it; the tests of
scheduling behaviour (gate and fades, flush, latency bound, shutdown) keep the real transformer and
sketches but use :class:`InvertBackend`, a renderer stand-in that returns the inverted input face.
Producer and consumer run in one event loop and meet through asyncio events; every wait has a time
limit (``asyncio.wait_for``), nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from engine.core.audio import mel_chunks, melspectrogram
from engine.core.avatar import AvatarConfig, prepare_avatar
from engine.live.messages import Control, ControlKind
from engine.live.session import LiveConfig, LiveSession
from engine.offline.dub import dub_frames
from engine.synth.backends import make_renderer_backend
from engine.synth.preview.synthesizer import PreviewSynthesizer
from tests.helpers import PORTRAIT, InvertBackend, private_neural, speechlike

SR = 16000
CHUNK = SR // 50  # 20 ms
LIMIT = 60.0  # seconds: a bound on every wait, never a synchronisation sleep


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    return prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path_factory.mktemp("live-avatar"))


@pytest.fixture(scope="module")
def backend(renderer_model):
    return make_renderer_backend("fast", renderer_model)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, LIMIT))


async def collect(session: LiveSession, out: list) -> None:
    async for frame in session.frames():
        out.append(frame)


async def feed_and_end(session: LiveSession, audio: np.ndarray, rate: int = SR) -> list:
    """Push ``audio`` in 20 ms chunks, then END; return every frame."""
    frames: list = []
    consumer = asyncio.create_task(collect(session, frames))
    step = rate // 50
    for i in range(0, len(audio), step):
        session.push_audio(audio[i : i + step], rate)
    session.control(Control(ControlKind.END))
    await asyncio.wait_for(consumer, LIMIT)
    return frames


def template(avatar, p: int) -> np.ndarray:
    return np.asarray(avatar.frames[0 if avatar.n_frames == 1 else p])


def test_live_speech_equals_offline_dub(avatar, landmark_model, backend):
    x = speechlike(0.32, seed=4)  # 4 mel chunks: 2 windows, 4 frames (the first face shown 3 times)
    cfg = LiveConfig(batch=2, latency_budget_ms=None, crossfade=1, speech_gate=False)

    async def main():
        async with LiveSession(avatar, private_neural(landmark_model, backend), cfg) as session:
            return await feed_and_end(session, x), session.stats

    frames, stats = run(main())
    chunks = mel_chunks(melspectrogram(x))
    n = len(chunks)
    assert len(frames) == n == stats.frames == stats.speech_frames
    assert [f.index for f in frames] == list(range(n)) and [f.index for f in frames] == list(range(n))
    assert stats.model_calls == -(-(n - 2) // 2) and stats.dropped == 0

    offline = list(dub_frames(private_neural(landmark_model, backend), avatar, chunks, batch=1))
    y1, y2, x1, x2 = (int(v) for v in avatar.boxes[0])
    mask = avatar.mask(0)
    outside = np.ones(avatar.frame_size, bool)
    outside[y1:y2, x1:x2] = mask == 0
    tmpl = template(avatar, 0)
    for f, ref in zip(frames, offline, strict=True):
        assert f.is_speech and f.box == (x1, y1, x2, y2)
        tm = f.timing
        assert None not in (tm.ready, tm.model_start, tm.model_end, tm.emitted)
        assert tm.ready <= tm.model_start <= tm.model_end <= tm.emitted
        img = f.image.astype(np.int16)
        assert np.array_equal(img[outside], tmpl[outside].astype(np.int16))  # untouched outside the mask
        assert np.abs(img[y1:y2, x1:x2] - tmpl[y1:y2, x1:x2]).max() > 0  # a face was pasted
        if f.index >= cfg.crossfade:  # past the fade-in: the offline frame within one grey level
            assert np.abs(img - ref.image.astype(np.int16)).max() <= 1
    # fade-in: the first frames lie between the template and the full frame
    d = [np.abs(frames[p].image.astype(int) - tmpl.astype(int)).sum() for p in range(cfg.crossfade + 1)]
    assert 0 < d[0] < d[1]


def test_live_silence_makes_no_model_call(avatar, landmark_model):
    x = np.zeros(int(0.8 * SR), np.float32)
    stub = InvertBackend()

    async def main():
        async with LiveSession(avatar, private_neural(landmark_model, stub), LiveConfig()) as session:
            return await feed_and_end(session, x, rate=SR), session.stats

    frames, stats = run(main())
    n = len(mel_chunks(melspectrogram(x)))
    assert len(frames) == n == stats.rest_frames and stats.model_calls == 0 == stub.calls
    assert [f.index for f in frames] == list(range(n))
    for f in frames:
        assert not f.is_speech and f.box is None and not f.image.flags.writeable
        assert np.array_equal(f.image, template(avatar, f.index))


def test_live_gated_speech_fades_between_rest_and_speech(avatar, landmark_model):
    z = np.zeros(int(0.6 * SR), np.float32)
    x = np.concatenate([z, speechlike(0.5, seed=2), z])
    # 48 kHz stereo int16 input: resampled and mixed down by the session
    pcm = np.repeat(np.interp(np.arange(3 * x.size) / 3, np.arange(x.size), x)[:, None], 2, 1) * 32767
    cfg = LiveConfig(batch=3, latency_budget_ms=None, crossfade=2)

    async def main():
        async with LiveSession(avatar, private_neural(landmark_model, InvertBackend()), cfg) as session:
            return await feed_and_end(session, pcm.astype(np.int16), rate=48000), session.stats

    frames, stats = run(main())
    speech = [f.index for f in frames if f.is_speech]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert stats.speech_frames == len(speech) > 10 and stats.rest_frames == len(frames) - len(speech)
    assert 15 <= speech[0] <= 25 and speech == list(range(speech[0], speech[-1] + 1))  # one utterance
    assert stats.model_calls == -(-len(speech) // cfg.batch)
    tmpl = template(avatar, 0)
    diff = [int(np.abs(f.image.astype(int) - tmpl).sum()) for f in frames]
    assert all(d == 0 for d in diff[: speech[0]]) and all(d == 0 for d in diff[speech[-1] + 3 :])
    assert 0 < diff[speech[-1] + 2] < diff[speech[-1] + 1]  # fading out over 2 frames
    assert 0 < diff[speech[0]]


@pytest.mark.parametrize("kind", ["flush", "interrupt"])  # interrupt: the wire alias of flush
def test_live_flush_drops_pending_work_and_idles(avatar, landmark_model, kind):
    x = speechlike(1.5, seed=5)

    async def main():
        synth = private_neural(landmark_model, InvertBackend())
        session = LiveSession(avatar, synth, LiveConfig(batch=1, latency_budget_ms=None))
        frames: list = []
        got_speech, flushed = asyncio.Event(), asyncio.Event()

        async def consume():
            async for f in session.frames():
                frames.append(f)
                if f.is_speech and not got_speech.is_set():
                    got_speech.set()
                    await flushed.wait()

        consumer = asyncio.create_task(consume())
        for i in range(0, len(x), CHUNK):
            session.push_audio(x[i : i + CHUNK], SR)
        await asyncio.wait_for(got_speech.wait(), LIMIT)
        calls, cut = session.stats.model_calls, len(frames)
        assert session.pending_windows > 0  # work was pending when the flush came
        session.control(Control(ControlKind.from_wire(kind)))
        # idle at once: no windows left, and the next frames are already queued (no model wait)
        assert session.pending_windows == 0 and session.queued_frames > 0
        flushed.set()
        session.control(Control(ControlKind.END))
        await asyncio.wait_for(consumer, LIMIT)
        await session.aclose()
        return frames, cut, calls, session.stats

    frames, cut, calls, stats = run(main())
    assert [f.index for f in frames] == list(range(len(frames)))
    after = frames[cut:]
    assert after and all(not f.is_speech for f in after)
    assert all(np.array_equal(f.image, template(avatar, f.index)) for f in after)
    assert stats.model_calls == calls and stats.flushes == 1
    assert len(frames) * 640 >= int(len(x) * 0.9)  # rest frames cover the audio received


class SlowBackend:
    """A renderer backend that takes at least ``delay`` seconds per call (a stand-in for slow hardware)."""

    def __init__(self, inner, delay: float = 0.03):
        self.inner, self.delay = inner, delay
        self.name, self.device = "slow", inner.device
        self.calls = 0

    def set_references(self, *refs):
        self.inner.set_references(*refs)

    def render(self, *args):
        self.calls += 1
        threading.Event().wait(self.delay)  # simulated compute time
        return self.inner.render(*args)


def test_live_latency_budget_drops_instead_of_queueing(avatar, landmark_model):
    x = speechlike(1.0, seed=6)
    slow = SlowBackend(InvertBackend())
    cfg = LiveConfig(batch=2, latency_budget_ms=1.0, speech_gate=False)

    async def main():
        async with LiveSession(avatar, private_neural(landmark_model, slow), cfg) as session:
            return await feed_and_end(session, x), session.stats

    frames, stats = run(main())
    n = len(mel_chunks(melspectrogram(x)))
    assert len(frames) == n and [f.index for f in frames] == list(range(n))
    assert stats.dropped > 0 and stats.frames == stats.speech_frames + stats.rest_frames + stats.dropped
    assert slow.calls <= 2 < n - 2  # once late, windows are shed without a model call
    assert all(not f.is_speech for f in frames)


def test_live_aclose_leaves_no_tasks_or_threads(avatar, landmark_model):
    backend = InvertBackend()

    async def main():
        before = asyncio.all_tasks()
        session = LiveSession(avatar, private_neural(landmark_model, backend), LiveConfig(speech_gate=False))
        first = asyncio.Event()

        async def consume():
            async for _ in session.frames():
                first.set()

        consumer = asyncio.create_task(consume())
        x = speechlike(1.0, seed=7)
        for i in range(0, len(x), CHUNK):
            session.push_audio(x[i : i + CHUNK], SR)
        await asyncio.wait_for(first.wait(), LIMIT)
        await session.aclose()  # mid-stream: windows still pending
        await asyncio.wait_for(consumer, LIMIT)  # frames() ends on close
        assert asyncio.all_tasks() == before
        assert not [t for t in threading.enumerate() if t.name.startswith("mouthpiece-live")]
        with pytest.raises(RuntimeError):
            session.push_audio(x[:CHUNK], SR)

    run(main())


@pytest.mark.parametrize("with_transformer", [False, True], ids=["audio-openness", "transformer"])
def test_live_preview_renderer_opens_the_mouth_in_speech_only(avatar, landmark_model, with_transformer):
    """The preview renderer in a live session: the offline frame count with the transformer (its
    windows), every frame of the audio without it (one window per frame), the template exactly in
    silence, a changed lower face in speech; with the transformer loaded, its predicted landmarks
    drive the mouth."""
    z = np.zeros(int(0.6 * SR), np.float32)
    x = np.concatenate([z, speechlike(1.2, seed=2), z])

    async def main():
        lm = landmark_model if with_transformer else None
        synth = PreviewSynthesizer(landmark_model=lm)
        async with LiveSession(avatar, synth, LiveConfig(latency_budget_ms=None)) as session:
            assert session.synth.computes
            return await feed_and_end(session, x, rate=SR), session.stats

    frames, stats = run(main())
    n = len(mel_chunks(melspectrogram(x))) if with_transformer else -(-len(x) // 640)
    assert [f.index for f in frames] == list(range(n))
    assert stats.dropped == 0 and stats.speech_frames > 10 and stats.rest_frames > 10
    quiet = [f for f in frames if f.index < 8]  # the leading silence
    assert all(np.array_equal(f.image, template(avatar, f.index)) for f in quiet)
    assert all(np.shares_memory(f.image, avatar.frames) for f in quiet)  # silence costs no frame copy
    diffs = [np.abs(f.image.astype(int) - template(avatar, f.index)).max() for f in frames if f.is_speech]
    assert sum(d > 20 for d in diffs) > len(diffs) // 2  # the mouth opens in most speech frames
    for f in frames:  # only the lower face changes
        y0 = f.box[1] if f.box is not None else 0
        assert np.array_equal(f.image[:y0], template(avatar, f.index)[:y0])


def test_live_gap_is_rest_frames_without_a_model_call(avatar, landmark_model):
    """close_segment (the transport's watchdog after an input stall): the gap is filled with rest frames,
    never sent to the synthesizer, and the clock moves on to the next frame boundary."""
    x = speechlike(0.6, seed=8)
    stub = InvertBackend()
    cfg = LiveConfig(batch=2, latency_budget_ms=None, speech_gate=False, crossfade=0)

    async def main():
        async with LiveSession(avatar, private_neural(landmark_model, stub), cfg) as session:
            frames: list = []
            consumer = asyncio.create_task(collect(session, frames))
            for i in range(0, len(x), CHUNK):
                session.push_audio(x[i : i + CHUNK], SR)
            p0 = session.close_segment(to_sample=len(x) + SR)  # one second of nothing
            calls = stub.calls
            session.control(Control(ControlKind.END))
            await asyncio.wait_for(consumer, LIMIT)
            return frames, p0, calls, session.stats

    frames, p0, calls, stats = run(main())
    n = len(mel_chunks(melspectrogram(x)))
    assert p0 == -(-(len(x) + SR) // 640) and [f.index for f in frames] == list(range(p0))
    assert stats.gaps == 1 and stats.dropped == 0 and stats.speech_frames == n
    gap = frames[n:]
    assert len(gap) == p0 - n and all(not f.is_speech for f in gap)
    assert all(np.array_equal(f.image, template(avatar, f.index)) for f in gap)
    assert stats.model_calls == -(-(n - 2) // cfg.batch)
