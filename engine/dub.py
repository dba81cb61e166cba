"""``mouthpiece dub``: an avatar (video or photo) and any audio become a lip-synced H.264 MP4."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.audio import load_audio, mel_chunks, melspectrogram
from engine.avatar import AvatarConfig, prepare_avatar
from engine.pipeline import DubConfig, DubError, load_models, make_dubber

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

    @property
    def frames_per_second(self) -> float:
        work = sum(v for k, v in self.seconds.items() if k not in ("prepare", "load models"))
        return self.frames / work if work else float("nan")

    def text(self) -> str:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items())
        return (
            f"wrote {self.out}: {self.frames} frames at {self.fps:g} fps "
            f"({self.audio_seconds:.2f} s of audio); "
            f"{self.frames_per_second:.2f} frames/s after preparation\n  time per stage: {stages}"
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
) -> DubSummary:
    from engine.video import Mp4Writer

    config = config or DubConfig()
    avatar_config = avatar_config or AvatarConfig()
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise DubError(f"{out_path}: the output must be an .mp4 file")
    if not Path(audio_path).is_file():
        raise FileNotFoundError(f"audio file not found: {audio_path}")
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    lm, renderer = load_models(landmark_checkpoint, renderer_checkpoint, config.device, random_weights)
    seconds["load models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    avatar = prepare_avatar(avatar_path, avatar_config, cache_dir)
    seconds["prepare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    wav = load_audio(audio_path)
    chunks = mel_chunks(melspectrogram(wav), fps=avatar_config.fps)
    out_audio = load_audio(audio_path, OUTPUT_AUDIO_RATE)
    seconds["audio"] = time.perf_counter() - t0

    dubber = make_dubber(lm, renderer, config)
    h, w = avatar.frame_size
    faces: list[np.ndarray] = []
    n_written = 0
    encode = 0.0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.stem + ".partial.mp4")
    bar = _progress(len(chunks), progress)
    try:
        with Mp4Writer(
            tmp, w, h, fps=avatar_config.fps, audio=out_audio, audio_rate=OUTPUT_AUDIO_RATE
        ) as writer:
            last_window = -1
            for result in dubber.run(avatar, chunks):
                if save_faces is not None and result.window != last_window:
                    faces.append(result.face)
                    last_window = result.window
                t1 = time.perf_counter()
                writer.write(result.frame)
                encode += time.perf_counter() - t1
                n_written += 1
                bar.update(1)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    tmp.replace(out_path)
    seconds.update({k: v for k, v in dubber.times.seconds.items()})
    seconds["encode"] = encode
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
    )


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
