"""The automatic delay (``--delay-ms auto``) and the sender-clock drift correction (streaming/delay.py).

- Unit behaviour of :class:`AutoDelay` on a fake clock: the initial guess, settling on the measured
  parts, growing at once on lateness, shrinking slowly, changing only in silence, its bounds.
- :class:`PlayoutControl` with a real :class:`Playout` and :class:`PlayoutAudio` on a fake clock: hours of
  a sender whose clock is off by +-200 ppm (and 0), speech and silence alternating, simulated in
  seconds: the delay every speech onset gets stays within 20 ms of the delay in use, and every speech
  sample is played exactly once (counted); a 30-minute session with the automatic delay does not grow.
- A real StreamSession with the preview synthesizer: the delay settles between the look-ahead and
  250 ms, and no frame is late once it has (event-gated on the frames made).
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from engine.core.clock import AUDIO_RATE
from streaming.delay import (
    CALM_S,
    ENCODE_ESTIMATE_MS,
    MAX_DELAY_MS,
    SAFETY_MS,
    SHRINK_INTERVAL_S,
    AutoDelay,
    PlayoutControl,
    parse_delay,
    rounded_lookahead_ms,
)
from streaming.session import StreamConfig
from streaming.tracks import AUDIO_FRAME, PLAYOUT_RATE, Playout, PlayoutAudio


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def measured(auto: AutoDelay, clock: FakeClock, compute_s: float = 0.005, packets: int = 50) -> None:
    """Feed ``packets`` regular 20 ms packets and 20 frames of ``compute_s``."""
    for k in range(1, packets + 1):
        auto.observe_packet(320)
        auto.observe_arrival(320 * k, clock.t + 0.02 * k)
    for _ in range(20):
        auto.observe_compute(compute_s)


# ---- parsing, rounding -----------------------------------------------------------------------------


def test_parse_delay_accepts_auto_and_numbers_and_says_what_is_wrong():
    assert parse_delay("auto") == "auto" and parse_delay(" AUTO ") == "auto"
    assert parse_delay("400") == 400.0 and parse_delay(150) == 150.0 and parse_delay(0) == 0.0
    for bad in ("fast", "-1", "nan", "inf", -5, True, None, 1e9):
        with pytest.raises(ValueError) as e:
            parse_delay(bad)
        assert str(e.value).startswith("the delay must be 'auto' or a number of ms")
    assert StreamConfig().delay_ms == "auto" and StreamConfig().auto_delay
    assert StreamConfig(delay_ms=400).delay_ms == 400.0 and not StreamConfig(delay_ms="400").auto_delay
    with pytest.raises(ValueError):
        StreamConfig(delay_ms="soon")


def test_lookahead_is_rounded_up_to_the_packets_the_session_sees():
    assert rounded_lookahead_ms(50.0, 320) == 60.0  # 20 ms packets
    assert rounded_lookahead_ms(212.5, 320) == 220.0
    assert rounded_lookahead_ms(50.0, 1600) == 140.0  # 100 ms packets: the worst frame phase (5th frame)
    assert rounded_lookahead_ms(0.0, 320) == 0.0 and rounded_lookahead_ms(50.0, 1) == 50.0


# ---- AutoDelay on a fake clock ------------------------------------------------------------------------


def test_starts_at_lookahead_plus_two_frames_then_settles_on_the_measured_parts():
    clock = FakeClock()
    auto = AutoDelay(50.0, clock)
    assert auto.current_ms == 60.0 + 80.0 and not auto.settled
    assert auto.step(quiet=True) is None  # nothing measured: the guess stays
    measured(auto, clock)
    parts = auto.parts()
    assert parts.lookahead_ms == 60.0 and parts.compute_ms == pytest.approx(5.0)
    assert parts.encode_ms == ENCODE_ESTIMATE_MS and parts.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert parts.margin_ms == SAFETY_MS
    assert parts.total_ms == pytest.approx(60 + 5 + ENCODE_ESTIMATE_MS + SAFETY_MS)
    assert auto.step(quiet=False) is None  # never while speaking
    assert auto.step(quiet=True) == pytest.approx(parts.total_ms) and auto.settled
    assert set(parts.as_dict()) == {"lookahead_ms", "compute_ms", "encode_ms", "jitter_ms", "margin_ms"}


def test_jitter_and_encode_are_measured():
    clock = FakeClock()
    auto = AutoDelay(50.0, clock)
    rng = np.random.default_rng(1)
    for k in range(1, 400):  # 0-8 ms late packets
        auto.observe_packet(320)
        auto.observe_arrival(320 * k, clock.t + 0.02 * k + rng.uniform(0, 0.008))
    for _ in range(50):
        auto.observe_encode(0.003)
    assert 6.0 < auto.jitter_ms() <= 8.0
    assert auto.parts().encode_ms == pytest.approx(3.0)


def test_grows_at_once_on_lateness_in_the_next_silence_and_shrinks_slowly():
    clock = FakeClock()
    auto = AutoDelay(50.0, clock)
    measured(auto, clock)
    settled = auto.step(True)
    auto.late()  # a frame missed its deadline
    assert auto.target_ms() == pytest.approx(settled + 40.0)
    assert auto.step(False) is None  # mid-utterance: unchanged
    assert auto.step(True) == pytest.approx(settled + 40.0)  # the first silence: at once
    grown = auto.current_ms
    clock.t += 1.0
    assert auto.step(True) is None  # late a second ago: no shrinking
    clock.t += CALM_S
    first = auto.step(True)
    assert first is not None and grown - 10.0 - 1e-9 <= first < grown  # a quarter of the excess at most
    clock.t += 0.5
    assert auto.step(True) is None  # one change per silence (SHRINK_INTERVAL_S)
    values = [first]
    for _ in range(40):
        clock.t += SHRINK_INTERVAL_S
        v = auto.step(True)
        if v is not None:
            values.append(v)
    assert values == sorted(values, reverse=True) and values[-1] == pytest.approx(settled)
    assert all(a - b <= 10.0 + 1e-9 for a, b in zip(values, values[1:], strict=False))


def test_bounds():
    clock = FakeClock()
    auto = AutoDelay(50.0, clock)
    measured(auto, clock, compute_s=5.0)  # a hopeless synthesizer: capped
    assert auto.target_ms() == MAX_DELAY_MS
    assert auto.step(True) == MAX_DELAY_MS
    fast = AutoDelay(0.0, clock)  # no look-ahead, nothing measured yet: at least the safety margin
    assert fast.min_ms == SAFETY_MS and fast.target_ms() >= SAFETY_MS


# ---- the drift of the sender's clock, simulated on a fake clock -----------------------------------------

PACKET = 960  # 20 ms at 48 kHz, the sender's packets
SPEECH_S, SILENCE_S = 2.0, 3.0  # the sender's utterances and pauses (its own clock)
LEVEL = 0.25  # every speech sample has this value (so the output's count of it is exact)


def simulate(ppm: float, hours: float, delay_ms: float | None = None, jitter_ms: float = 3.0, seed: int = 0):
    """A sender whose clock runs ``ppm`` fast sends 20 ms packets (speech and silence alternating) with
    0..``jitter_ms`` of network jitter; the playout reads 20 ms frames on the server's clock; the
    control ticks every 100 ms. ``delay_ms`` None: the automatic delay (compute 5 ms). Returns the
    onsets' (delay got - delay in use) in ms, the speech samples sent and played, and the control."""
    clock = FakeClock(0.0)
    auto = None
    if delay_ms is None:
        auto = AutoDelay(50.0, clock)
        for _ in range(20):
            auto.observe_compute(0.005)
    playout = Playout((auto.current_ms if auto else delay_ms) / 1e3, clock)
    audio = PlayoutAudio(30.0)
    audio.start(PLAYOUT_RATE, 1, 0)
    control = PlayoutControl(playout, audio, auto)
    rng = np.random.default_rng(seed)
    rate = 1.0 + ppm * 1e-6
    n_packets = int(hours * 3600 / 0.02)
    period = int((SPEECH_S + SILENCE_S) / 0.02)
    speech_packets = int(SPEECH_S / 0.02)
    silence = np.zeros(PACKET, np.float32)
    speech = np.full(PACKET, LEVEL, np.float32)
    m = 0  # next output audio frame
    next_tick = 0.1
    sent = played = 0
    onsets: dict[int, float] = {}  # 48 kHz session position of an onset -> its packet's arrival
    errors: list[float] = []
    delays: list[float] = []
    hang = 0
    prev = None
    for k in range(n_packets):
        t_arrive = (k + 1) * 0.02 / rate + rng.uniform(0, jitter_ms / 1e3)
        t_arrive = max(t_arrive, prev or 0.0)  # in order (a jitter buffer's output)
        prev = t_arrive
        # the playout and the control up to this arrival
        while True:
            due_read = playout.due(m, PLAYOUT_RATE / AUDIO_FRAME) if playout.anchor is not None else math.inf
            due = min(due_read, next_tick, t_arrive)
            if due == t_arrive:
                break
            clock.t = due
            if due == due_read:
                pos = playout.audio_position(m)
                x = audio.read(pos, AUDIO_FRAME)
                hit = np.flatnonzero(x)
                played += int(np.count_nonzero(x == LEVEL))
                if hit.size:
                    onset = pos + int(hit[0])
                    if onset in onsets:  # the first sample of an utterance is played now
                        got = clock.t + hit[0] / PLAYOUT_RATE - onsets.pop(onset) + 0.02
                        errors.append(1000.0 * got - control.delay_ms)
                m += 1
            else:
                control.tick(clock.t, hang > 0)
                delays.append(control.delay_ms)
                next_tick += 0.1
        clock.t = t_arrive
        is_speech = k % period < speech_packets
        x = speech if is_speech else silence
        if is_speech and k % period == 0:
            onsets[audio.end] = t_arrive
        sent += PACKET if is_speech else 0
        hang = 10 if is_speech else max(0, hang - 1)  # the gate: 200 ms of hangover
        audio.push(x)
        n = audio.end // 3
        if playout.anchor is None:
            playout.set_anchor(t_arrive)
        else:
            playout.refine_anchor(t_arrive - n / AUDIO_RATE)
        if auto is not None:
            auto.observe_packet(PACKET // 3)
            auto.observe_arrival(n, t_arrive)
        control.observe_push(n, t_arrive, x, hang > 0)
    return np.array(errors), sent, played, control, np.array(delays), audio


@pytest.mark.parametrize(("ppm", "hours"), [(200.0, 2.0), (-200.0, 2.0), (0.0, 1.0)])
def test_a_sender_clock_off_by_200_ppm_adds_no_latency_over_hours(ppm, hours):
    errors, sent, played, control, _, audio = simulate(ppm, hours=hours, delay_ms=100.0)
    n = len(errors)
    assert n == pytest.approx(hours * 3600 / (SPEECH_S + SILENCE_S), abs=2)  # every utterance was heard
    assert np.all(np.abs(errors[1:]) <= 20.0), (errors.min(), errors.max())  # within 20 ms, for hours
    assert played == sent  # every speech sample, once
    assert audio.late == 0
    assert control.delay_ms == pytest.approx(100.0)  # the delay in use is unchanged
    drift_ms = ppm * 1e-6 * hours * 3600 * 1000  # what the playout would have drifted by (1440 ms in 2 h)
    assert control.skew_ms == pytest.approx(drift_ms, abs=15.0)
    if ppm == 0:
        assert control.skew_corrections == 0


def test_a_30_minute_session_with_the_automatic_delay_does_not_grow():
    errors, sent, played, control, delays, audio = simulate(0.0, hours=0.5, delay_ms=None, seed=3)
    assert played == sent and audio.late == 0
    settled = delays[len(delays) // 10 :]  # after the first 3 minutes
    assert settled.max() - settled.min() <= 1.0 and settled[-1] <= delays[0]
    assert np.all(np.abs(errors[1:]) <= 20.0)
    parts = control.auto.parts()
    assert settled[-1] == pytest.approx(parts.total_ms, abs=1.0) and 60.0 < settled[-1] < 100.0


# ---- a real StreamSession with the preview synthesizer ---------------------------------------------------


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    from engine.core.avatar import AvatarConfig, prepare_avatar
    from tests.helpers import PORTRAIT

    return prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path_factory.mktemp("auto-delay-avatar"))


def test_a_preview_session_settles_between_the_lookahead_and_250_ms(avatar):
    from engine.synth.preview.synthesizer import PreviewSynthesizer
    from streaming.session import StreamSession
    from tests.helpers import speechlike, until

    async def main():
        s = await StreamSession(avatar, PreviewSynthesizer(), StreamConfig()).start()
        sent = {"utterances": 0}
        try:
            assert s.stats()["delay_mode"] == "auto" and s.delay_ms == 60.0 + 80.0  # the initial guess

            async def sender():  # 20 ms packets on the loop's clock: 1.5 s of speech, 1.5 s of silence
                loop = asyncio.get_running_loop()
                t0, k = loop.time(), 0
                while True:
                    speech = speechlike(1.5, seed=sent["utterances"])
                    x = np.concatenate([speech, np.zeros(24000, np.float32)])
                    for i in range(0, x.size, 320):
                        await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
                        s.push_audio(x[i : i + 320], AUDIO_RATE)
                        k += 1
                    sent["utterances"] += 1

            task = asyncio.get_running_loop().create_task(sender())
            try:
                await until(lambda: s.auto_delay.settled, "the automatic delay settled", timeout=60.0)
                settled, at_settling = s.delay_ms, s.auto_delay.parts()
                late0, first = s.auto_delay.late_events, sent["utterances"]
                await until(lambda: sent["utterances"] >= first + 2, "two more utterances", timeout=60.0)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            stats = s.stats()
            parts = stats["delay_parts"]
            assert set(parts) == {"lookahead_ms", "compute_ms", "encode_ms", "jitter_ms", "margin_ms"}
            assert parts["lookahead_ms"] == 60.0 and parts["compute_ms"] > 0.0
            assert stats["delay_ms"] == s.delay_ms and s.live.stats.speech_frames > 50
            # settled: no frame late since, or the delay grew at once in answer
            late = s.auto_delay.late_events
            assert late == late0 or s.delay_ms > settled, (late, late0)
            # where it settled: the look-ahead and the measured parts (they move a little meanwhile)
            assert s.lookahead_ms < settled <= 1000.0
            assert settled == pytest.approx(at_settling.total_ms, abs=25.0), (settled, at_settling)
            if at_settling.jitter_ms + at_settling.compute_ms + at_settling.encode_ms >= 150.0:
                pytest.skip(
                    f"the 250 ms bound is not judged: this machine's load made the parts {at_settling}"
                )
            assert settled < 250.0, (settled, at_settling)
        finally:
            await s.aclose()

    asyncio.run(asyncio.wait_for(main(), 180.0))


def test_a_fixed_delay_is_kept_and_reports_no_parts(avatar):
    from engine.synth.preview.synthesizer import PreviewSynthesizer
    from streaming.session import StreamSession

    async def main():
        s = await StreamSession(avatar, PreviewSynthesizer(), StreamConfig(delay_ms=400)).start()
        try:
            st = s.stats()
            assert st["delay_ms"] == 400.0 and st["delay_mode"] == "fixed" and st["delay_parts"] is None
            assert s.auto_delay is None and s.playout.delay_s == 0.4
        finally:
            await s.aclose()

    asyncio.run(asyncio.wait_for(main(), 60.0))


# ---- shown: stats, /metrics, /api/info, the CLI ----------------------------------------------------------


def test_the_server_shows_the_delay_and_its_parts(tmp_path):
    import aiohttp

    from streaming.config import ServerConfig
    from streaming.server import create_app
    from tests.helpers import LIMIT, ThreadServer, speechlike

    empty = tmp_path / "no-checkpoints"
    empty.mkdir()
    cfg = ServerConfig(loopback=True, cache_dir=str(tmp_path / "cache"), refs=1, checkpoint_dir=str(empty))
    parts = {"lookahead_ms", "compute_ms", "encode_ms", "jitter_ms", "margin_ms"}

    async def main(url: str):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/info") as r:
                info = await r.json()
            assert r.status == 200 and info["delay_ms"] == "auto" and info["mode"] == "preview"
            pcm = (speechlike(1.0, seed=2) * 32767).astype("<i2").tobytes()
            async with http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
                assert (await ws.receive_json(timeout=LIMIT))["type"] == "session"
                await ws.send_bytes(pcm)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + LIMIT
                while True:  # the session's stats, until frames are made
                    await ws.send_json({"type": "stats"})
                    msg = await ws.receive_json(timeout=LIMIT)
                    if msg.get("type") == "stats" and msg["session_frames"]["frames"] > 0:
                        break
                    assert loop.time() < deadline
                    await asyncio.sleep(0.05)
                assert msg["delay_mode"] == "auto" and set(msg["delay_parts"]) == parts
                assert 50.0 < msg["delay_ms"] <= 1000.0 and msg["delay_parts"]["lookahead_ms"] >= 50.0
                async with http.get(f"{url}/metrics") as r:
                    text = await r.text()
                assert r.status == 200
                for part in ("lookahead", "compute", "encode", "jitter", "margin", "total"):
                    assert f'mouthpiece_delay_seconds{{part="{part}"}}' in text, part
                total = next(
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith('mouthpiece_delay_seconds{part="total"}')
                )
                assert 0.05 < total <= 1.0
                assert f'mouthpiece_session_delay_seconds{{session="{msg["session"]}"}}' in text
            deadline = asyncio.get_running_loop().time() + LIMIT
            while True:  # the session leaves with its websocket
                async with http.get(f"{url}/api/sessions") as r:
                    if (await r.json())["sessions"] == []:
                        break
                assert asyncio.get_running_loop().time() < deadline, "the session did not leave"
                await asyncio.sleep(0.05)
            async with http.get(f"{url}/metrics") as r:  # the session left: its gauges too
                text = await r.text()
            assert "mouthpiece_delay_seconds{" not in text and "mouthpiece_session_delay_seconds{" not in text

    with ThreadServer(create_app(cfg)) as srv:
        asyncio.run(asyncio.wait_for(main(srv.url), 3 * LIMIT))
        assert srv.errors == []


def test_the_cli_takes_auto_or_ms_and_says_what_is_wrong():
    import subprocess
    import sys

    from engine.cli import build_parser
    from streaming.config import config_from_args

    def cfg(*args):
        return config_from_args(build_parser().parse_args(["serve", *args])).stream

    assert cfg().delay_ms == "auto" and cfg("--delay-ms", "auto").auto_delay
    assert cfg("--delay-ms", "400").delay_ms == 400.0 and not cfg("--delay-ms", "400").auto_delay
    for bad in ("fast", "-3", "nan"):
        r = subprocess.run(
            [sys.executable, "-m", "engine", "serve", "--delay-ms", bad],
            capture_output=True,
            text=True,
            timeout=120,
        )
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "the delay must be 'auto' or a number of ms" in err[-1] and len(err[-1]) < 200


def test_a_jump_of_the_session_clock_is_not_taken_for_jitter():
    clock = FakeClock()
    auto = AutoDelay(50.0, clock)
    control = PlayoutControl(Playout(0.1, clock), PlayoutAudio(), auto)
    for k in range(1, 100):
        auto.observe_arrival(320 * k, clock.t + 0.02 * k)
    auto.observe_arrival(320 * 100 + 16000, clock.t + 2.0)  # a gap moved the clock on by 1 s
    assert auto.jitter_ms() > 900.0
    control.forget_arrivals()  # what the session does on a gap or a flush
    auto.observe_arrival(320 * 101 + 16000, clock.t + 2.02)
    assert auto.jitter_ms() == pytest.approx(0.0, abs=1e-6)
