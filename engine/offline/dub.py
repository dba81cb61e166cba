"""``mouthpiece dub``: an avatar (video or photo) and any audio become a lip-synced H.264 MP4."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.core.audio import load_audio, mel_chunks, melspectrogram
from engine.core.avatar import Avatar, AvatarConfig, prepare_avatar
from engine.core.frames import Frame, FrameKind
from engine.core.schedule import make_window, num_windows
from engine.synth import canonical_renderer
from engine.synth.base import Planned, Synthesizer
from engine.synth.neural import DubConfig, NeuralSynthesizer
from engine.synth.preview.synthesizer import PreviewSynthesizer
from engine.synth.weights import DubError, load_models

OUTPUT_AUDIO_RATE = 48000
MIN_CHUNKS = 3


@dataclass
class DubSummary:
    out: str
    frames: int
    fps: float
    audio_seconds: float
    seconds: dict[str, float] = field(default_factory=dict)
    faces_path: str | None = None
    random_weights: bool = False
    dubbing_seconds: float = 0.0  # wall time from the first model call to the last frame written

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.dubbing_seconds if self.dubbing_seconds else float("nan")

    def text(self) -> str:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items())
        return (
            f"wrote {self.out}: {self.frames} frames at {self.fps:g} fps "
            f"({self.audio_seconds:.2f} s of audio); "
            f"{self.frames_per_second:.2f} frames/s after preparation\n"
            f"  time per stage (overlapped stages run beside the models): {stages}"
        )


def dub_frames(
    synth: Synthesizer, avatar: Avatar, chunks: np.ndarray, batch: int = 4, audio: np.ndarray | None = None
) -> Iterator[Frame]:
    """Frames for mel ``chunks`` (n, 80, 16): ``n`` frames, output indices 0..n-1 in order (the authors'
    schedule, IPLAP_FACTS.md section 8), ``batch`` windows per synthesizer call. ``audio``: the whole
    16 kHz audio, for synthesizers that analyse it ahead (the preview renderer's openness curve).

    The synthesizer's model work runs on the calling thread; composing a batch's frames runs on a worker
    thread while the next batch goes through the models (one batch of look-ahead)."""
    n = len(chunks)
    if n < MIN_CHUNKS:
        raise DubError(
            f"the audio is too short: {n} mel chunk(s), at least {MIN_CHUNKS} are needed (about 0.27 s)"
        )
    if batch < 1:
        raise ValueError("batch must be >= 1")
    stream = synth.open(avatar, crossfade=0, audio=audio)
    total = num_windows(n)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mouthpiece-composite") as pool:
        pending = None
        for s in range(0, total, batch):
            now = time.perf_counter()
            group = [
                Planned(make_window(b, n, avatar.n_frames, chunks), now, FrameKind.SPEECH)
                for b in range(s, min(s + batch, total))
            ]
            job = pool.submit(stream.compose, avatar, stream.compute(avatar, group))
            if pending is not None:
                yield from pending.result()
            pending = job
        if pending is not None:
            yield from pending.result()


def make_synthesizer_for_dub(
    renderer: str,
    config: DubConfig,
    landmark_checkpoint: str | Path | None = None,
    renderer_checkpoint: str | Path | None = None,
    random_weights: bool = False,
) -> Synthesizer:
    """The synthesizer ``mouthpiece dub --renderer`` names: ``neural`` (the checkpoints' networks, or
    stand-in weights) or ``preview`` (the CPU preview renderer; ``retrieval`` is its old name)."""
    renderer = canonical_renderer(renderer)
    if renderer == "preview":
        return PreviewSynthesizer()
    if renderer != "neural":
        raise ValueError(f"unknown renderer {renderer!r}; choose neural or preview")
    lm, net = load_models(landmark_checkpoint, renderer_checkpoint, config.device, random_weights)
    return NeuralSynthesizer.from_models(lm, net, config)


def dub_file(
    avatar_path: str | Path,
    audio_path: str | Path,
    out_path: str | Path,
    config: DubConfig | None = None,
    avatar_config: AvatarConfig | None = None,
    landmark_checkpoint: str | Path | None = None,
    renderer_checkpoint: str | Path | None = None,
    random_weights: bool = False,
    save_faces: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    renderer: str = "neural",
) -> DubSummary:
    """``renderer``: ``neural`` (IP_LAP) or ``preview`` (the CPU preview renderer, driven by the
    audio's openness curve; no weights needed)."""
    from engine.core.video import Mp4Writer

    renderer = canonical_renderer(renderer)
    if renderer not in ("neural", "preview"):
        raise ValueError(f"unknown renderer {renderer!r}; choose neural or preview")
    if renderer != "neural" and save_faces is not None:
        raise ValueError("--save-faces needs the neural renderer (the preview renderer makes no faces)")
    config = config or DubConfig()
    avatar_config = avatar_config or AvatarConfig()
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise DubError(f"{out_path}: the output must be an .mp4 file")
    if not Path(audio_path).is_file():
        raise FileNotFoundError(f"audio file not found: {audio_path}")
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    synth = make_synthesizer_for_dub(
        renderer, config, landmark_checkpoint, renderer_checkpoint, random_weights
    )
    if renderer == "neural":
        seconds["load models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    avatar = prepare_avatar(avatar_path, avatar_config, cache_dir)
    seconds["prepare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    wav = load_audio(audio_path)
    chunks = mel_chunks(melspectrogram(wav), fps=avatar_config.fps)
    out_audio = load_audio(audio_path, OUTPUT_AUDIO_RATE)
    seconds["audio"] = time.perf_counter() - t0

    h, w = avatar.frame_size
    faces: list[np.ndarray] = []
    n_written = 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.stem + ".partial.mp4")
    bar = _progress(len(chunks), progress)
    t_dub = time.perf_counter()
    try:
        with Mp4Writer(
            tmp, w, h, fps=avatar_config.fps, audio=out_audio, audio_rate=OUTPUT_AUDIO_RATE
        ) as writer:
            encoder = BackgroundWriter(writer)
            try:
                last_face = None
                for frame in dub_frames(synth, avatar, chunks, config.batch, wav):
                    if save_faces is not None and frame.face is not None and frame.face is not last_face:
                        faces.append(frame.face)
                        last_face = frame.face
                    encoder.write(frame.image)
                    n_written += 1
                    bar.update(1)
            finally:
                encoder.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    dubbing_seconds = time.perf_counter() - t_dub
    tmp.replace(out_path)
    seconds.update({k: v for k, v in synth.times.seconds.items()})
    seconds["encode (overlapped)"] = encoder.seconds
    faces_file = None
    if save_faces is not None:
        faces_file = str(save_faces)
        np.savez(faces_file, faces=np.stack(faces))
    return DubSummary(
        out=str(out_path),
        frames=n_written,
        fps=avatar_config.fps,
        audio_seconds=len(wav) / 16000,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        faces_path=faces_file,
        random_weights=random_weights,
        dubbing_seconds=round(dubbing_seconds, 3),
    )


class BackgroundWriter:
    """Feeds a writer (anything with ``write(frame)``) from a thread behind a bounded queue, so that
    encoding overlaps the models. ``write`` blocks while the queue is full; errors in the thread
    are raised on the next ``write`` or at ``close``."""

    def __init__(self, writer, maxsize: int = 16):
        self.writer, self.seconds = writer, 0.0
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mouthpiece-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (frame := self._q.get()) is not None:
            if self._error is None:
                t0 = time.perf_counter()
                try:
                    self.writer.write(frame)
                except BaseException as e:  # reported to the producer
                    self._error = e
                self.seconds += time.perf_counter() - t0

    def write(self, frame: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(frame)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="dubbing", unit="frame")
