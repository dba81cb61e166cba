"""``mouthpiece dub``: an avatar (video or photo) and any audio become a lip-synced H.264 MP4.

The dub is a bounded pipeline, so its memory does not grow with the audio's length:

- :class:`DubAudio` decodes the audio file once, piece by piece (PyAV), and turns each piece into
  16 kHz samples, mel frames and mel chunks (the live front end's :class:`StreamingResampler` and
  :class:`IncrementalMel`, which give exactly the offline mel) and into the output's 48 kHz samples;
- :func:`stream_windows` makes the authors' windows as soon as their chunks exist (the same windows
  as :func:`engine.core.schedule.windows`), :func:`dub_frames` renders them ``batch`` at a time;
- :class:`BackgroundWriter` encodes the frames on a thread behind a bounded queue, and the output
  audio reaches the :class:`engine.core.video.Mp4Writer` through the same queue, in pieces, ahead of
  the frames it goes with.

What stays in memory is the avatar, a few batches of frames, the encoder's queue and a few seconds
of audio (plus 4 bytes per output frame for the preview renderer's openness values).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.core.avatar import Avatar, AvatarConfig, prepare_avatar
from engine.core.frames import Frame, FrameKind
from engine.core.schedule import CENTER, Window, make_window
from engine.offline.dub_stream import (
    DECODE_BLOCK,
    OUTPUT_AUDIO_RATE,
    DubAudio,
    FaceFile,
)
from engine.synth import canonical_renderer
from engine.synth.base import Planned, Synthesizer
from engine.synth.neural import DubConfig, NeuralSynthesizer
from engine.synth.preview.synthesizer import PreviewSynthesizer
from engine.synth.weights import DubError, load_models

__all__ = [
    "DECODE_BLOCK",
    "MIN_CHUNKS",
    "OUTPUT_AUDIO_RATE",
    "BackgroundWriter",
    "DubAudio",
    "DubSummary",
    "check_output",
    "dub_file",
    "dub_frames",
    "make_synthesizer_for_dub",
    "stream_windows",
]

MIN_CHUNKS = 3
#: Frames waiting for the encoder: at most this many bytes (and 2 to 16 frames).
ENCODE_QUEUE_BYTES = 128 << 20


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


def _too_short(n: int) -> DubError:
    return DubError(
        f"the audio is too short: {n} mel chunk(s), at least {MIN_CHUNKS} are needed (about 0.27 s)"
    )


class _ChunkWindow:
    """The last chunks of a stream, indexable by a list of chunk numbers (for ``make_window``)."""

    def __init__(self) -> None:
        self.chunks: dict[int, np.ndarray] = {}

    def __getitem__(self, idx: list[int]) -> np.ndarray:
        return np.stack([self.chunks[i] for i in idx])


def stream_windows(
    chunks: Iterable[np.ndarray],
    n_frames: int,
    on_window: Callable[[Window], None] | None = None,
) -> Iterator[Window]:
    """The authors' windows (:func:`engine.core.schedule.make_window`) for a stream of mel chunks.

    ``chunks``: blocks of chunks (k, 80, 16) or single chunks (80, 16), in order; window b is made as
    soon as chunk b + 2 exists, and only the 5 chunks a window uses are kept. The windows equal
    :func:`engine.core.schedule.windows` of all the chunks. ``on_window`` is called with each window
    before it is yielded. Raises :class:`DubError` when the stream ends with fewer than
    :data:`MIN_CHUNKS` chunks (no window: nothing was yielded)."""
    recent = _ChunkWindow()
    k = 0  # chunks received
    for block in chunks:
        block = np.asarray(block, dtype=np.float32)
        for c in block[None] if block.ndim == 2 else block:
            recent.chunks[k] = c
            k += 1
            b = k - 1 - CENTER  # the window whose last chunk just arrived
            if b < 0:
                continue
            recent.chunks.pop(b - 1 - CENTER, None)  # no later window uses it
            w = make_window(b, k, n_frames, recent)
            if on_window is not None:
                on_window(w)
            yield w
    if k < MIN_CHUNKS:
        raise _too_short(k)


def _render(stream, avatar: Avatar, windows: Iterable[Window], batch: int) -> Iterator[Frame]:
    """``batch`` windows per synthesizer call: the model work on the calling thread, composing a
    batch's frames on a worker thread while the next batch goes through the models."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mouthpiece-composite") as pool:
        pending = None
        it = iter(windows)
        while group := [w for _, w in zip(range(batch), it, strict=False)]:
            now = time.perf_counter()
            planned = [Planned(w, now, FrameKind.SPEECH) for w in group]
            job = pool.submit(stream.compose, avatar, stream.compute(avatar, planned))
            if pending is not None:
                yield from pending.result()
            pending = job
        if pending is not None:
            yield from pending.result()


def dub_frames(
    synth: Synthesizer,
    avatar: Avatar,
    chunks: np.ndarray | Iterable[np.ndarray],
    batch: int = 4,
    audio: np.ndarray | None = None,
) -> Iterator[Frame]:
    """Frames for mel ``chunks``: ``n`` chunks make ``n`` frames, output indices 0..n-1 in order (the
    authors' schedule, IPLAP_FACTS.md section 8), ``batch`` windows per synthesizer call.

    ``chunks``: an array (n, 80, 16), or a stream of chunk blocks (k, 80, 16) consumed as the windows
    need them (:func:`stream_windows`; e.g. :meth:`DubAudio.chunks`), so that memory does not grow
    with the audio. ``audio``: the whole 16 kHz audio, for synthesizers that analyse it ahead (the
    preview renderer's openness curve). Too few chunks raise :class:`DubError` before any frame.

    The synthesizer's model work runs on the calling thread; composing a batch's frames runs on a worker
    thread while the next batch goes through the models (one batch of look-ahead)."""
    if isinstance(chunks, np.ndarray) and len(chunks) < MIN_CHUNKS:
        raise _too_short(len(chunks))
    if batch < 1:
        raise ValueError("batch must be >= 1")
    stream = synth.open(avatar, crossfade=0, audio=audio)
    yield from _render(stream, avatar, stream_windows(chunks, avatar.n_frames), batch)


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


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: by inode when both exist, else by resolved path."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(out_path: str | os.PathLike, **inputs: str | os.PathLike | None) -> Path:
    """The dub's output path, refused (:class:`DubError`, nothing touched) unless it is an ``.mp4``,
    neither it nor its temporary ``NAME.partial.mp4`` is one of ``inputs`` (``avatar=...``,
    ``audio=...``: named in the message as ``--avatar``, ``--audio``; the same file by inode, whatever
    the spelling or link), it is not a folder, and the folder it goes in (made if missing) is writable."""
    out = Path(out_path)
    if out.suffix.lower() != ".mp4":
        raise DubError(f"{out}: the output must be an .mp4 file (NAME.mp4)")
    _refuse_overwrite(out, "--out", inputs)
    _refuse_overwrite(_partial(out), "--out's temporary file (NAME.partial.mp4)", inputs)
    if out.is_dir():
        raise DubError(f"{out}: is a folder; --out names the .mp4 file to write")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:  # the folders to make, and where
        folder = folder.parent
    if not folder.is_dir():
        raise DubError(f"{out}: cannot write there ({folder} is not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DubError(f"{out}: cannot write there (no permission to write in {folder})")
    return out


def _refuse_overwrite(target: Path, what: str, inputs: dict) -> None:
    for name, given in inputs.items():
        if given is not None and _same_file(target, Path(given)):
            raise DubError(
                f"{what} would overwrite the --{name} file: choose another output (nothing was written)"
            )


def _partial(out: Path) -> Path:
    return out.with_name(out.stem + ".partial.mp4")


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
    audio's openness curve; no weights needed). The pipeline is bounded (module docstring); the file
    is written as ``NAME.partial.mp4`` and renamed when complete (removed on an error and on Ctrl+C,
    SIGTERM or SIGHUP, which the command line turns into ``KeyboardInterrupt``). An output that is one
    of the inputs (by inode: another spelling, a hard or symbolic link) or that cannot be written there
    is refused before anything is read (:func:`check_output`); audio too short for one window
    (:data:`MIN_CHUNKS` chunks, about 0.27 s) is refused before the output file is made."""
    from engine.core.video import Mp4Writer

    renderer = canonical_renderer(renderer)
    if renderer not in ("neural", "preview"):
        raise ValueError(f"unknown renderer {renderer!r}; choose neural or preview")
    if renderer != "neural" and save_faces is not None:
        raise ValueError("--save-faces needs the neural renderer (the preview renderer makes no faces)")
    config = config or DubConfig()
    avatar_config = avatar_config or AvatarConfig()
    out_path = check_output(out_path, avatar=avatar_path, audio=audio_path)
    if save_faces is not None:
        _refuse_overwrite(Path(save_faces), "--save-faces", {"avatar": avatar_path, "audio": audio_path})
        _refuse_overwrite(Path(save_faces), "--save-faces", {"out": out_path})
    if not Path(audio_path).exists():
        raise FileNotFoundError(f"audio file not found: {audio_path}")
    if not Path(audio_path).is_file():
        raise DubError(f"{audio_path}: is not a file; --audio takes an audio file (or a video's audio)")
    if config.batch < 1:
        raise ValueError("--batch must be at least 1")
    seconds: dict[str, float] = {}
    # the audio's first chunks, before the models, the avatar or any file: unreadable, audio-less or
    # too-short audio is refused at once (the output audio and the 16 kHz samples decoded meanwhile
    # wait for the encoder and the synthesizer's analysis, :class:`_Deferred`)
    audio = DubAudio(audio_path, fps=avatar_config.fps, output_rate=OUTPUT_AUDIO_RATE)
    to_encoder, to_analysis = _Deferred(), _Deferred()
    chunks = audio.chunks(
        on_output=to_encoder.hook("add_audio"),
        on_samples=to_analysis.hook("add_samples"),
        on_end=_both(to_analysis.hook("end"), to_encoder.hook("end_audio")),
    )
    head = _first_chunks(chunks, MIN_CHUNKS)

    t0 = time.perf_counter()
    synth = make_synthesizer_for_dub(
        renderer, config, landmark_checkpoint, renderer_checkpoint, random_weights
    )
    if renderer == "neural":
        seconds["load models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    avatar = prepare_avatar(avatar_path, avatar_config, cache_dir)
    seconds["prepare"] = time.perf_counter() - t0

    stream = synth.open(avatar, crossfade=0)
    openness = stream.audio_ahead()  # a synthesizer that analyses the audio ahead gets it as it streams
    to_analysis.attach(openness)

    h, w = avatar.frame_size
    n_written = 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(out_path)
    faces = FaceFile(save_faces) if save_faces is not None else None
    bar = _progress(_estimate_frames(audio_path, avatar_config.fps), progress)
    t_dub = time.perf_counter()
    try:
        with Mp4Writer(
            tmp, w, h, fps=avatar_config.fps, audio_rate=OUTPUT_AUDIO_RATE, incremental_audio=True
        ) as writer:
            frame_bytes = max(1, h * w * 3)
            encoder = BackgroundWriter(writer, maxsize=max(2, min(16, ENCODE_QUEUE_BYTES // frame_bytes)))
            try:
                to_encoder.attach(encoder)
                on_window = None if openness is None else openness.window
                windows = stream_windows(itertools.chain(head, chunks), avatar.n_frames, on_window)
                last_face = None
                for frame in _render(stream, avatar, windows, config.batch):
                    if faces is not None and frame.face is not None and frame.face is not last_face:
                        faces.add(frame.face)
                        last_face = frame.face
                    encoder.write(frame.image)
                    n_written += 1
                    bar.update(1)
                bar.finish(n_written)
            finally:
                encoder.close()
        if faces is not None:
            faces.finish()
    except BaseException:
        tmp.unlink(missing_ok=True)
        if faces is not None:
            faces.discard()
        raise
    finally:
        bar.close()
    dubbing_seconds = time.perf_counter() - t_dub
    tmp.replace(out_path)
    seconds["audio"] = audio.seconds
    seconds.update({k: v for k, v in synth.times.seconds.items()})
    seconds["encode (overlapped)"] = encoder.seconds
    return DubSummary(
        out=str(out_path),
        frames=n_written,
        fps=avatar_config.fps,
        audio_seconds=audio.seconds_of_audio,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        faces_path=None if save_faces is None else str(save_faces),
        random_weights=random_weights,
        dubbing_seconds=round(dubbing_seconds, 3),
    )


def _first_chunks(chunks: Iterator[np.ndarray], n: int) -> list[np.ndarray]:
    """The first blocks of ``chunks`` holding at least ``n`` chunks; :class:`DubError` (too short) when
    the audio ends before that."""
    head, k = [], 0
    while k < n:
        block = next(chunks, None)
        if block is None:
            raise _too_short(k)
        head.append(block)
        k += 1 if np.ndim(block) == 2 else len(block)
    return head


class _Deferred:
    """Calls of a target that does not exist yet (the encoder, the synthesizer's audio analysis), kept
    in order until :meth:`attach` passes them on; afterwards they go straight to it. Attached to None,
    they are dropped (a synthesizer that does not analyse the audio)."""

    _UNSET = object()

    def __init__(self) -> None:
        self._target = self._UNSET
        self._calls: list[tuple] = []

    def hook(self, name: str) -> Callable[..., None]:
        """A function that calls the target's method ``name`` (now, or at :meth:`attach`)."""

        def call(*args) -> None:
            if self._target is self._UNSET:
                self._calls.append((name, args))
            elif self._target is not None:
                getattr(self._target, name)(*args)

        return call

    def attach(self, target) -> None:
        self._target = target
        calls, self._calls = self._calls, []
        if target is not None:
            for name, args in calls:
                getattr(target, name)(*args)


def _both(*calls: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        for c in calls:
            c()

    return run


def _estimate_frames(path: str | os.PathLike, fps: float) -> int | None:
    """The output's frame count from the container's duration, for the progress bar (None: unknown)."""
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            if s.duration is not None and s.time_base is not None:
                return max(1, round(float(s.duration * s.time_base) * fps))
            if c.duration is not None:
                return max(1, round(c.duration / av.time_base * fps))
    except (av.error.FFmpegError, IndexError):
        pass
    return None


class BackgroundWriter:
    """Feeds a writer (anything with ``write(frame)``) from a thread behind a bounded queue, so that
    encoding overlaps the models. ``write`` blocks while the queue is full; errors in the thread
    are raised on the next call or at ``close``. ``add_audio`` and ``end_audio`` reach the writer's
    methods of those names through the same queue, in order with the frames (an incremental audio
    track: :class:`engine.core.video.Mp4Writer`)."""

    def __init__(self, writer, maxsize: int = 16):
        self.writer, self.seconds = writer, 0.0
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mouthpiece-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            if self._error is None:
                t0 = time.perf_counter()
                try:
                    if isinstance(item, tuple):
                        getattr(self.writer, item[0])(*item[1:])
                    else:
                        self.writer.write(item)
                except BaseException as e:  # reported to the producer
                    self._error = e
                self.seconds += time.perf_counter() - t0

    def _put(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def write(self, frame: np.ndarray) -> None:
        self._put(frame)

    def add_audio(self, samples: np.ndarray) -> None:
        self._put(("add_audio", samples))

    def end_audio(self) -> None:
        self._put(("end_audio",))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def finish(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int | None, enabled: bool):
    """A progress bar (tqdm) whose total, estimated from the container, is set right by ``finish(n)``."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    class Bar(tqdm):
        def finish(self, n: int) -> None:
            self.total = n
            self.refresh()

    return Bar(total=total, desc="dubbing", unit="frame")
