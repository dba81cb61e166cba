"""``mouthpiece dub``: an avatar (video or photo) and any audio become a lip-synced H.264 MP4."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.core.audio import load_audio, mel_chunks, melspectrogram
from engine.core.avatar import AvatarConfig, prepare_avatar
from engine.synth.neural import DubConfig, DubError, load_models, make_dubber

OUTPUT_AUDIO_RATE = 48000


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
    """``renderer``: ``neural`` (IP_LAP) or ``retrieval`` (the CPU preview renderer, driven by the
    audio's openness curve; no weights needed)."""
    from engine.core.video import Mp4Writer

    if renderer not in ("neural", "retrieval"):
        raise ValueError(f"unknown renderer {renderer!r}; choose neural or retrieval")
    if renderer == "retrieval" and save_faces is not None:
        raise ValueError("--save-faces needs the neural renderer (the retrieval renderer makes no faces)")
    config = config or DubConfig()
    avatar_config = avatar_config or AvatarConfig()
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise DubError(f"{out_path}: the output must be an .mp4 file")
    if not Path(audio_path).is_file():
        raise FileNotFoundError(f"audio file not found: {audio_path}")
    seconds: dict[str, float] = {}

    if renderer == "neural":
        t0 = time.perf_counter()
        lm, net = load_models(landmark_checkpoint, renderer_checkpoint, config.device, random_weights)
        seconds["load models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    avatar = prepare_avatar(avatar_path, avatar_config, cache_dir)
    seconds["prepare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    wav = load_audio(audio_path)
    chunks = mel_chunks(melspectrogram(wav), fps=avatar_config.fps)
    out_audio = load_audio(audio_path, OUTPUT_AUDIO_RATE)
    seconds["audio"] = time.perf_counter() - t0

    if renderer == "neural":
        dubber = make_dubber(lm, net, config)
    else:
        dubber = RetrievalDubber(wav, avatar_config.fps)
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
                last_window = -1
                for result in dubber.run(avatar, chunks):
                    if save_faces is not None and result.window != last_window:
                        faces.append(result.face)
                        last_window = result.window
                    encoder.write(result.frame)
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
    seconds.update({k: v for k, v in dubber.times.seconds.items()})
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


class RetrievalDubber:
    """The retrieval (preview) renderer as a dubber: the mouth follows the audio's openness curve
    (:func:`engine.synth.preview.openness_curve`), one frame per mel chunk on template ``pingpong(i)``."""

    def __init__(self, wav16k: np.ndarray, fps: float = 25.0):
        from engine.synth.neural import StageTimes

        self.wav, self.fps = wav16k, fps
        self.times = StageTimes()

    def run(self, avatar, chunks: np.ndarray):
        from engine.core.schedule import pingpong
        from engine.synth.neural import FrameResult
        from engine.synth.preview import RetrievalRenderer, openness_curve

        t0 = time.perf_counter()
        curve = openness_curve(self.wav, fps=self.fps)
        n = min(len(curve), len(chunks))
        t0 = self.times.add("openness", t0)
        r = RetrievalRenderer(avatar)
        for i in range(n):
            t = int(pingpong(i, avatar.n_frames))
            t0 = time.perf_counter()
            frame = r.render(t, float(curve[i]))
            self.times.add("retrieval", t0)
            y1, y2, x1, x2 = r.last.box
            yield FrameResult(i, t, i, None, (y1, y2, x1, x2), frame)


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
