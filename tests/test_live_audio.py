"""The live audio front end equals the offline functions on the same audio (engine/live/audio.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from engine.core.audio import load_audio, mel_chunks, melspectrogram, to_mono_16k
from engine.core.schedule import CENTER, Window, make_window, pingpong, windows
from engine.live.audio import IncrementalMel, LiveWindowScheduler, SpeechGate, StreamingResampler
from engine.live.messages import Box, Control, ControlKind, Frame, FrameKind, FrameTiming
from tests.helpers import SR, speechlike

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def noise(n: int, seed: int = 0, level: float = 0.3) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def split(x: np.ndarray, size: int | str, seed: int = 0) -> list[np.ndarray]:
    """Cut x into chunks of ``size`` samples, or of random sizes (1..2000) for ``"random"``."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 2000)) if size == "random" else int(size)
        out.append(x[i : i + n])
        i += n
    return out


# --------------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------------


def test_messages_are_frozen_slotted_and_typed():
    frame = Frame(index=50, kind=FrameKind.REST, timing=FrameTiming(ready=1.0))
    assert frame.image is None and frame.time_s == 2.0 and frame.timing.ready == 1.0 and not frame.is_speech
    assert not hasattr(frame, "__dict__") and not hasattr(frame.timing, "__dict__")
    ctl = Control(ControlKind.SWITCH_AVATAR, payload="alice")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctl.payload = None  # type: ignore[misc]
    assert {k.name for k in ControlKind} == {"FLUSH", "SWITCH_AVATAR", "SEGMENT_END", "END"}
    assert ControlKind.from_wire("interrupt") is ControlKind.FLUSH is ControlKind.from_wire("flush")
    assert ControlKind.from_wire("segment_end") is ControlKind.SEGMENT_END
    assert Control(ControlKind.END).payload is None
    box = Box.from_yyxx((10, 20, 30, 40))
    assert box == (30, 10, 40, 20) and box.yyxx == (10, 20, 30, 40)


# --------------------------------------------------------------------------------------------
# StreamingResampler
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate,channels", [(44100, 1), (48000, 2), (22050, 2), (8000, 1)])
@pytest.mark.parametrize("size", [1, 441, 960, "random"])
def test_streaming_resampler_matches_one_shot(rate, channels, size):
    n = rate // 8 if size == 1 else rate * 2  # 1-sample pushes: a shorter clip
    t = np.arange(n) / rate
    sig = np.stack([0.5 * np.sin(2 * np.pi * (300 + 200 * c) * t) for c in range(channels)], axis=1)
    sig = (sig + noise(n * channels, seed=channels, level=0.05).reshape(n, channels)).astype(np.float32)
    x = sig[:, 0] if channels == 1 else sig
    ref = to_mono_16k(x, rate)
    rs = StreamingResampler(rate, channels)
    out = np.concatenate([rs.push(c) for c in split(x, size)] + [rs.flush()])
    assert abs(out.size - ref.size) <= 2
    m = min(out.size, ref.size)
    assert np.abs(out[:m] - ref[:m]).max() < 1e-3  # measured: 0.0 (the same swresample state)
    assert rs.samples_in == n and rs.samples_out == out.size


def test_streaming_resampler_int16_stereo_and_passthrough():
    x = (noise(48000 * 2, seed=3) * 32767).astype(np.int16).reshape(-1, 2)
    rs = StreamingResampler(48000, 2)
    out = np.concatenate([rs.push(c) for c in split(x, 480)] + [rs.flush()])
    ref = to_mono_16k(x, 48000)
    assert out.size == ref.size and np.abs(out - ref).max() < 1e-3
    # 16 kHz: exact pass-through, nothing held back
    y = noise(5000, seed=4)
    rs = StreamingResampler(16000, 1)
    parts = [rs.push(c) for c in split(y, 333)]
    assert [p.size for p in parts] == [c.size for c in split(y, 333)]
    assert np.array_equal(np.concatenate(parts), y) and rs.flush().size == 0


def test_streaming_resampler_rejects_nonsense():
    for rate in (0, -16000):
        with pytest.raises(ValueError):
            StreamingResampler(rate, 1)
    with pytest.raises(ValueError):
        StreamingResampler(16000, 0)
    rs = StreamingResampler(44100, 2)
    with pytest.raises(ValueError):
        rs.push(np.zeros((10, 2, 1), np.float32))  # 3-D
    with pytest.raises(ValueError):
        rs.push(np.zeros((10, 3), np.float32))  # wrong channel count
    with pytest.raises(ValueError):
        rs.push(np.zeros(10, np.float32))  # mono into a stereo stream
    with pytest.raises(ValueError):
        rs.push(np.zeros((10, 2), np.uint8))
    rs.flush()
    with pytest.raises(RuntimeError):
        rs.push(np.zeros((10, 2), np.float32))


# --------------------------------------------------------------------------------------------
# IncrementalMel
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 160, 320, 333, "random"])
def test_incremental_mel_equals_offline(size):
    n = SR // 2 + 77 if size == 1 else 3 * SR + 77  # 1-sample pushes: a shorter clip
    x = speechlike(n / SR) + noise(n, seed=1, level=0.01)
    ref = melspectrogram(x)  # (80, 1 + n // 200)
    mel = IncrementalMel()
    parts, fed = [], 0
    for c in split(x, size, seed=2):
        out = mel.push(c)
        fed += c.size
        assert out.shape[0] == 80 and out.dtype == np.float32
        parts.append(out)
        # exactly the frames whose right half-window has arrived: 200 j + 400 <= fed
        assert mel.frames_total == (fed - 400) // 200 + 1 if fed >= 400 else mel.frames_total == 0
        assert mel.buffered_samples <= 800 + c.size
    live = np.concatenate(parts, axis=1)
    assert live.shape[1] == (x.size - 400) // 200 + 1
    assert np.abs(live - ref[:, : live.shape[1]]).max() <= 1e-5  # measured: 0.0
    tail = mel.finish()
    full = np.concatenate([live, tail], axis=1)
    assert full.shape == ref.shape and np.abs(full - ref).max() <= 1e-5
    assert mel.frames_total == ref.shape[1] and mel.finish().shape == (80, 0)
    with pytest.raises(RuntimeError):
        mel.push(x[:10])


def test_incremental_mel_bounded_and_reset():
    mel = IncrementalMel()
    x = noise(SR * 60, seed=5, level=0.1)
    for c in split(x, 1600):
        mel.push(c)
        assert mel.buffered_samples <= 800 + 1600
    assert mel.frames_total == (x.size - 400) // 200 + 1  # numbered globally: 4799 frames of 60 s
    mel.reset()  # a new stream starts with the left zero padding again
    y = speechlike(1.0)
    got = np.concatenate([mel.push(y), mel.finish()], axis=1)
    assert np.abs(got - melspectrogram(y)).max() <= 1e-5 and mel.frames_total == got.shape[1]
    assert IncrementalMel().finish().shape == melspectrogram(np.zeros(0)).shape == (80, 1)


# --------------------------------------------------------------------------------------------
# LiveWindowScheduler
# --------------------------------------------------------------------------------------------


def run_live(x: np.ndarray, size, n_templates: int, finish: bool):
    mel, sched = IncrementalMel(), LiveWindowScheduler(n_templates)
    got: list[Window] = []
    for c in split(x, size, seed=3):
        got += sched.push(mel.push(c))
        assert sched.buffered_mel_frames <= 16 + 4 * 4 + 16
    if finish:
        got += sched.push(mel.finish())
    return got, sched


def assert_window_equal(w: Window, ref, chunks: np.ndarray):
    assert w.start == ref.start and w.templates == ref.templates and w.mel_indices == ref.mel_indices
    assert w.render_template == ref.render_template and w.output_indices == ref.output_indices
    assert w.index == ref.output_indices[0]
    assert w.mel.shape == (5, 80, 16) and w.mel.dtype == np.float32 and w.render_mel.shape == (80, 16)
    assert np.abs(w.mel - chunks[list(ref.mel_indices)]).max() <= 1e-5
    assert np.abs(w.render_mel - chunks[ref.mel_indices[CENTER]]).max() <= 1e-5


@pytest.mark.parametrize("size", [160, 333, "random"])
@pytest.mark.parametrize("n_templates", [1, 7, 40])
def test_scheduler_equals_offline_windows(size, n_templates):
    x = speechlike(2.5, seed=1)
    chunks = mel_chunks(melspectrogram(x))
    plan = windows(len(chunks), n_templates)
    live, sched = run_live(x, size, n_templates, finish=False)
    # before the end: every window whose chunks are complete in the offline mel (no right edge)
    complete = (x.size - 400) // 200 + 1
    expect = [w for w in plan if int((w.start + 2) * 3.2) + 16 <= complete]
    assert len(live) == len(expect) >= len(plan) - 2
    for w, ref in zip(live, expect, strict=True):
        assert_window_equal(w, ref, chunks)
    assert live[0].output_indices == (0, 1, 2) and [w.index for w in live[1:4]] == [3, 4, 5]
    # after finish: the whole offline plan, output frames 0..n_chunks-1 exactly once
    live, sched = run_live(x, size, n_templates, finish=True)
    assert len(live) == len(plan)
    for w, ref in zip(live, plan, strict=True):
        assert_window_equal(w, ref, chunks)
    assert [p for w in live for p in w.output_indices] == list(range(len(chunks)))
    assert sched.next_index == len(chunks)


def test_scheduler_lookahead_matches_offline_plan():
    sched = LiveWindowScheduler(10)
    assert sched.lookahead_ms == 212.5 and sched.startup_ms == 287.5
    ms = [sched.lookahead_samples(p) / 16 for p in range(2, 12)]
    assert ms == [207.5, 205.0, 202.5, 212.5, 210.0, 207.5, 205.0, 202.5, 212.5, 210.0]
    x = noise(SR * 3, seed=7)
    for p in list(range(0, 12)) + [37, 50]:
        b = max(0, p - 2)
        ref = make_window(b, 1000, 10)  # the offline window that makes frame p
        last_mel = max(int(k * 3.2) + 15 for k in ref.mel_indices)
        need = sched.required_samples(p)
        assert need == last_mel * 200 + 400
        for n, made in ((need - 1, False), (need, True)):
            live, _ = run_live(x[:n], 4000, 10, finish=False)
            assert (any(p in w.output_indices for w in live)) is made, (p, n)


def test_scheduler_reset_continues_numbering_and_pingpong():
    x, y = speechlike(1.2, seed=2), speechlike(1.0, seed=3)
    mel, sched = IncrementalMel(), LiveWindowScheduler(6)
    first = sched.push(mel.push(x)) + sched.push(mel.finish())
    p0 = sched.next_index
    assert p0 == len(mel_chunks(melspectrogram(x)))
    mel.reset()
    sched.reset(sample_offset=x.size)  # continue numbering after the last frame
    second = sched.push(mel.push(y)) + sched.push(mel.finish())
    chunks = mel_chunks(melspectrogram(y))
    assert second[0].output_indices == (p0, p0 + 1, p0 + 2)
    assert [w.index for w in second[1:3]] == [p0 + 3, p0 + 4]
    for w in second:  # same chunks as offline on y alone; templates keyed by the global frame
        assert w.mel_indices == make_window(w.start, len(chunks), 6).mel_indices
        assert np.abs(w.mel - chunks[list(w.mel_indices)]).max() <= 1e-5
        assert w.templates == tuple(int(pingpong(p0 + w.start + i, 6)) for i in range(5))
        assert w.render_template == int(pingpong(p0 + w.start + 2, 6))
    out = [p for w in first + second for p in w.output_indices]
    assert out == list(range(len(out)))
    assert second[0].span[0] == x.size and second[3].render_span == (
        x.size + 9 * 200 - 400,
        x.size + 24 * 200 + 400,
    )
    mel.reset()
    sched.reset(next_index=1000)
    again = sched.push(mel.push(y))
    assert again[0].output_indices == (1000, 1001, 1002) and again[0].templates == tuple(
        int(pingpong(1000 + i, 6)) for i in range(5)
    )


# --------------------------------------------------------------------------------------------
# SpeechGate
# --------------------------------------------------------------------------------------------


def gate_run(x: np.ndarray, size=320, **kw) -> np.ndarray:
    gate = SpeechGate(**kw)
    out = [v for c in split(x, size) for v in gate.push(c)]
    assert len(out) == x.size // 320 == gate.frames_total
    return np.array(out)


def test_speech_gate_silence_noise_and_speechlike():
    assert not gate_run(np.zeros(SR * 2, np.float32)).any()
    for db in (-60, -45, -35):  # low noise: below the floor, or not speech to webrtcvad
        assert not gate_run(noise(SR * 2, seed=-db, level=10 ** (db / 20))).any(), db
    v = gate_run(speechlike(3.0), size=333)
    assert v.mean() > 0.9  # measured 0.953: all but the warm-up + onset at the start
    assert v[10:].all()


def test_speech_gate_onset_and_hangover():
    x = np.zeros(SR * 2, np.float32)
    x[SR // 2 : SR // 2 + 160] = 0.8 * np.sign(np.sin(np.arange(160)))  # a 10 ms click
    assert not gate_run(x).any()
    y = np.concatenate([np.zeros(SR // 2, np.float32), speechlike(1.0), np.zeros(SR, np.float32)])
    v = gate_run(y)
    on = np.flatnonzero(v)
    # the signal starts at frame 25 (0.5 s) in a syllable trough; speech needs 3 voiced frames
    assert 25 + 2 <= on[0] <= 25 + 8
    assert np.all(v[on[0] : on[-1] + 1])  # no gap inside (syllable dips bridged by the hangover)
    # the signal ends at 1.5 s = frame 75; speech lasts 200 ms (10 frames) after the last voiced one
    gate = SpeechGate()
    voiced = [gate._voiced(y[i : i + 320]) for i in range(0, y.size - 319, 320)]
    assert on[-1] == np.flatnonzero(voiced)[-1] + 10 and 70 <= on[-1] - 10 <= 75
    gate = SpeechGate()
    gate.push(y)
    assert gate.is_speech_between(SR // 2 + 3200, SR // 2 + 6400)
    assert not gate.is_speech_between(0, 6400)
    assert not gate.is_speech_between(SR * 2 + 3200, SR * 2 + 6400)  # well after the hangover


def test_speech_gate_windows_and_validation():
    y = np.concatenate([np.zeros(SR, np.float32), speechlike(1.0), np.zeros(SR, np.float32)])
    gate, mel = SpeechGate(), IncrementalMel()
    sched = LiveWindowScheduler(5, speech_gate=gate)
    wins: list[Window] = []
    for c in split(y, 320):
        gate.push(c)  # the gate sees the audio before the mel
        wins += sched.push(mel.push(c))
    flags = {w.index: w.is_speech for w in wins}
    assert not any(flags[p] for p in range(3, 15))  # silence (frame p ~ audio of (p-2)*40 ms)
    assert all(flags[p] for p in range(35, 45))  # inside speech (1.0 .. 2.0 s)
    assert not any(flags[p] for p in range(65, len(flags)))  # after speech + hangover
    for bad in ({"sample_rate": 44100}, {"frame_ms": 25}, {"aggressiveness": 4}):
        with pytest.raises(ValueError):
            SpeechGate(**bad)


@pytest.mark.skipif(not MEDIA.is_dir(), reason=f"shared media not present at {MEDIA}")
def test_speech_gate_on_real_speech():
    x = load_audio(MEDIA / "speech_c_16k_60s.wav")
    v = gate_run(x)
    frac = float(v.mean())
    print(f"speech_c speech fraction: {frac:.3f}")
    assert 0.8 < frac < 0.97  # measured 0.916 (3.1 s of leading silence, short pauses)
    assert not v[:140].any()  # the file opens with ~3 s of silence (-54 dBFS)
    edges = np.flatnonzero(np.diff(v.astype(int)) == -1)  # speech -> silence transitions
    assert len(edges) >= 5  # pauses between phrases are detected


def test_the_schedule_lookahead_constant_is_the_schedulers():
    from engine.core.schedule import LOOKAHEAD_MS

    assert LiveWindowScheduler(10).lookahead_ms == LOOKAHEAD_MS


def test_one_summary_of_measurements():
    from engine.core.stats import summary

    v = [0.004, 0.001, 0.003, 0.002, None, float("nan")]
    assert summary(v, 1e3, ("mean", "p50", "max", "n")) == pytest.approx(
        {"mean": 2.5, "p50": 2.5, "max": 4.0, "n": 4}
    )
    assert summary([1.0, 2.0, 3.0, 4.0, 5.0], keys=("p95",), digits=1) == {"p95": 4.8}
    assert summary([None]) is None
