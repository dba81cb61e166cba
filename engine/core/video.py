"""Video and image input/output through PyAV (no external ffmpeg binary) and OpenCV: :func:`read_image`,
:func:`probe_video`, :func:`iter_frames` / :func:`read_frames` (BGR uint8 frames, converted to a target
frame rate by nearest timestamps, streaming; a truncated file is read up to the damage, with a
``mouthpiece.media`` warning), :class:`Mp4Writer` / :func:`write_mp4` (H.264 yuv420p MP4 with optional
AAC audio, exactly ``fps`` frames per second). Details: docs/dubbing.md, "Video input and output".
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from engine.core.audio import log, to_mono_16k

__all__ = [
    "AAC_RATES",
    "IMAGE_EXTENSIONS",
    "EncoderConfig",
    "Mp4Writer",
    "VideoError",
    "VideoInfo",
    "is_image",
    "iter_frames",
    "probe_video",
    "read_frames",
    "read_image",
    "write_mp4",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
# Sample rates FFmpeg's native AAC encoder accepts (av.codec.Codec("aac", "w").audio_rates).
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
AAC_FRAME_SIZE = 1024
FPS_TOLERANCE = 1e-3


class VideoError(ValueError):
    """A video or image that cannot be read (no video stream, undecodable, no frames)."""


def _ffmpeg_message(e: Exception) -> str:
    return f"{e.__class__.__name__}: {getattr(e, 'strerror', None) or e}"


def _check_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if not p.is_file():
        raise VideoError(f"{p}: not a regular file")
    return p


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def is_image(path: str | os.PathLike) -> bool:
    """True when ``path`` has a still-image extension (png, jpg, jpeg, bmp, webp, tif, tiff)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as BGR uint8, shape (H, W, 3).

    Grayscale is replicated to three channels, an alpha channel is dropped and 16-bit images are
    scaled to 8 bits (OpenCV's ``IMREAD_COLOR``). Raises ``FileNotFoundError`` for a missing path
    and :class:`VideoError` for a file OpenCV cannot decode.
    """
    p = _check_file(path, "image")
    data = np.fromfile(str(p), dtype=np.uint8)  # imdecode: also works for non-ASCII paths
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise VideoError(f"{p}: cannot decode as an image")
    return np.ascontiguousarray(img, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Probing and decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reports about a file's first video stream (native rate)."""

    width: int
    height: int
    fps: float  # average frame rate of the stream
    n_frames: int  # the container's count when it has one, else round(duration_s * fps)
    duration_s: float
    has_audio: bool


def _open(p: Path) -> av.container.InputContainer:
    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(f"{p}: cannot open as a video ({_ffmpeg_message(e)})") from None


def _video_stream(p: Path, container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoError(f"{p}: no video stream in file")
    return container.streams.video[0]


def _stream_fps(stream: av.video.stream.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _info(p: Path, container: av.container.InputContainer) -> VideoInfo:
    stream = _video_stream(p, container)
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width <= 0 or height <= 0:
        raise VideoError(f"{p}: video stream has no frame size")
    fps = _stream_fps(stream) or 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    n_frames = int(stream.frames or 0)
    if n_frames <= 0:
        n_frames = int(round(duration * fps))
    return VideoInfo(
        width=width,
        height=height,
        fps=fps,
        n_frames=n_frames,
        duration_s=duration,
        has_audio=bool(container.streams.audio),
    )


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Describe the first video stream of ``path`` without decoding it.

    Raises ``FileNotFoundError`` for a missing path and :class:`VideoError` for a file that is not
    a container FFmpeg can open or has no video stream.
    """
    p = _check_file(path, "video")
    with _open(p) as container:
        return _info(p, container)


def _decode_timed(p: Path) -> Iterator[tuple[Fraction | None, float | None, np.ndarray]]:
    """Yield (pts time or None, stream fps or None, BGR frame) for each decoded frame of ``p``."""
    with _open(p) as container:
        stream = _video_stream(p, container)
        stream.thread_type = "AUTO"
        src_fps = _stream_fps(stream)
        time_base = stream.time_base
        declared = int(stream.frames or 0)  # the container's frame count (0: not recorded)
        n = 0
        try:
            for frame in container.decode(stream):
                pts = frame.pts
                tb = frame.time_base or time_base
                t = Fraction(pts) * Fraction(tb) if pts is not None and tb is not None else None
                yield t, src_fps, frame.to_ndarray(format="bgr24")
                n += 1
        except av.error.FFmpegError as e:
            if n == 0:
                raise VideoError(f"{p}: cannot decode video ({_ffmpeg_message(e)})") from None
            declared = declared if declared > n else -1  # damaged after n good frames: those are used
        if n == 0:
            raise VideoError(f"{p}: video stream decodes to no frames")
        if n < declared or declared < 0:
            of = f"of {declared} " if declared > 0 else ""
            log.warning("%s is truncated or damaged: read %d %sframes", p.name, n, of)


def _as_fraction(rate: float) -> Fraction:
    return Fraction(rate).limit_denominator(1_000_000)


def _convert_rate(
    timed: Iterator[tuple[Fraction | None, float | None, np.ndarray]], fps: float
) -> Iterator[np.ndarray]:
    """Nearest-timestamp frame-rate conversion (module docstring), streaming.

    Output frames are produced one decoded frame late and held back one more, because the final
    count ``floor(duration * fps + 1/2)`` is only known at the end (with a source faster than
    ``2 * fps`` the last produced frame can be one too many).
    """
    rate = _as_fraction(fps)
    first: Fraction | None = None
    prev_t: Fraction | None = None  # relative time of prev_frame
    prev_frame: np.ndarray | None = None
    src_step: Fraction | None = None
    held: np.ndarray | None = None
    produced = 0  # output frames produced so far (including the held one)

    def produce(frame: np.ndarray) -> Iterator[np.ndarray]:
        nonlocal held, produced
        if held is not None:
            yield held
        held = frame
        produced += 1

    for t, src_fps, frame in timed:
        if src_step is None:
            src_step = 1 / _as_fraction(src_fps) if src_fps else 1 / rate
        if prev_t is None:
            first = t if t is not None else Fraction(0)
            prev_t, prev_frame = Fraction(0), frame
            continue
        rel = t - first if t is not None else None
        if rel is None or rel <= prev_t:  # missing or non-increasing pts: assume one source step
            rel = prev_t + src_step
        mid = (prev_t + rel) / 2
        while Fraction(produced) / rate <= mid:  # tie at the midpoint -> the earlier frame
            yield from produce(prev_frame)
        prev_t, prev_frame = rel, frame

    if prev_frame is None:
        return
    duration = prev_t + src_step
    total = max(1, math.floor(duration * rate + Fraction(1, 2)))
    while produced < total:
        yield from produce(prev_frame)
    if held is not None and produced <= total:
        yield held


def iter_frames(
    path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """Decode ``path`` frame by frame as BGR uint8 (H, W, 3).

    ``fps=None`` (default): the native frames, no conversion. Otherwise frames are converted to
    ``fps`` by the nearest-timestamp rule of the module docstring (unchanged when the stream's
    average rate is within 1e-3 of ``fps``). At most ``max_frames`` frames are yielded.
    Errors (``FileNotFoundError``, :class:`VideoError`) are raised when iteration starts.
    """
    p = _check_file(path, "video")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    if max_frames == 0:
        with _open(p) as container:
            _video_stream(p, container)
        return
    timed = _decode_timed(p)
    t, src_fps, frame = next(timed)  # _decode_timed raises VideoError on zero frames

    def chained() -> Iterator[tuple[Fraction | None, float | None, np.ndarray]]:
        yield t, src_fps, frame
        yield from timed

    if fps is None or (src_fps is not None and abs(src_fps - fps) <= FPS_TOLERANCE):
        frames: Iterator[np.ndarray] = (f for _, _, f in chained())
    else:
        frames = _convert_rate(chained(), fps)
    try:
        for n, f in enumerate(frames, start=1):
            yield f
            if max_frames is not None and n >= max_frames:
                return
    finally:
        timed.close()


def read_frames(
    path: str | os.PathLike, fps: float = 25.0, max_frames: int | None = None
) -> tuple[list[np.ndarray], VideoInfo]:
    """Decode all frames of ``path`` as BGR uint8 at ``fps`` (see the conversion rule above).

    Returns ``(frames, info)``: ``frames`` at ``fps`` (at most ``max_frames``) and ``info`` the
    source's :class:`VideoInfo` (native fps; ``n_frames`` is the exact decoded count of the source
    when the whole file was decoded without conversion, otherwise the probe's estimate).
    Raises ``FileNotFoundError`` for a missing path and :class:`VideoError` when the file has no
    video stream, cannot be decoded or decodes to no frames.
    """
    info = probe_video(path)
    frames = list(iter_frames(path, fps=fps, max_frames=max_frames))
    if not frames:
        raise VideoError(f"{path}: no frames read (max_frames={max_frames})")
    converted = abs(info.fps - fps) > FPS_TOLERANCE
    if not converted and (max_frames is None or len(frames) < max_frames):
        info = replace(info, n_frames=len(frames))
    return frames, info


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderConfig:
    """libx264 settings of :class:`Mp4Writer`."""

    crf: int = 18
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    profile: str = "high"

    def options(self) -> dict[str, str]:
        return {"crf": str(self.crf), "preset": self.preset, "profile": self.profile}


def _aac_rate(rate: int) -> int:
    """``rate`` if the AAC encoder accepts it, else the nearest higher accepted rate (or 96000)."""
    if rate in AAC_RATES:
        return rate
    higher = [r for r in AAC_RATES if r > rate]
    return min(higher) if higher else max(AAC_RATES)


class _MonoResampler:
    """Stateful swresample of mono float32 pieces (consecutive frames with pts): the pieces' outputs,
    with :meth:`flush`'s tail, make the one-shot resampling of the whole signal."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = rate_in
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
        self._pts = 0

    def push(self, mono: np.ndarray) -> np.ndarray:
        if mono.size == 0:
            return mono
        frame = av.AudioFrame.from_ndarray(mono[None], format="flt", layout="mono")
        frame.sample_rate = self.rate_in
        frame.time_base = Fraction(1, self.rate_in)
        frame.pts = self._pts
        self._pts += mono.size
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames) -> np.ndarray:
        parts = [f.to_ndarray()[0] for f in frames]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


class Mp4Writer:
    """Write BGR uint8 frames as an H.264 MP4 (exactly ``fps`` frames per second), with optional
    mono AAC audio muxed in.

    ``audio``: the whole track, mono samples at ``audio_rate`` Hz (float in [-1, 1], clipped; an int
    array or an (n, channels) array is converted like :func:`engine.core.audio.to_mono_16k` does).
    ``incremental_audio=True`` (with ``audio_rate``, without ``audio``): the track arrives in pieces
    through :meth:`add_audio` (converted the same way, piece by piece, resampled with one stateful
    filter when ``audio_rate`` is not an AAC rate), ended by :meth:`end_audio` or :meth:`close`.
    Either way the audio is encoded in whole AAC frames of 1024 samples as the video advances (the
    samples up to the last written frame's end), the rest, and a last partial frame, once the track
    has ended; so a track given in pieces ahead of the video makes the same file as the whole track.
    Only the samples not yet encoded are kept. Use as a context manager or call :meth:`close`;
    leaving the ``with`` block through an exception still finalises the file. See the module
    docstring for odd sizes and audio details.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        fps: float = 25,
        crf: int = 18,
        preset: str = "veryfast",
        audio: np.ndarray | None = None,
        audio_rate: int | None = None,
        profile: str = "high",
        incremental_audio: bool = False,
    ) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        if not self.path.parent.is_dir():  # PyAV opens the file lazily, at the first packet
            raise FileNotFoundError(f"output directory does not exist: {self.path.parent}")
        self.width, self.height = int(width), int(height)
        self.fps = float(fps)
        self.config = EncoderConfig(crf=int(crf), preset=preset, profile=profile)
        self.frames_written = 0
        self._closed = False

        self._has_audio = audio is not None or bool(incremental_audio)
        self._audio_pos = 0  # samples encoded
        self._pending: deque[np.ndarray] = deque()  # samples received, not yet encoded, in order
        self._pending_size = 0
        self._audio_ended = False
        self._audio_in_rate: int | None = None
        self._resampler: _MonoResampler | None = None
        self.audio_rate: int | None = None
        if self._has_audio:
            if audio is not None and incremental_audio:
                raise ValueError("give either the whole audio or incremental_audio=True, not both")
            if audio_rate is None or int(audio_rate) <= 0:
                raise ValueError(f"audio given without a positive audio_rate (got {audio_rate})")
            rate = _aac_rate(int(audio_rate))
            self._audio_in_rate, self.audio_rate = int(audio_rate), rate
            if audio is not None:
                samples = to_mono_16k(np.asarray(audio), int(audio_rate), rate)
                if samples.size == 0:
                    raise ValueError("audio is empty")
                self._append(np.clip(samples, -1.0, 1.0).astype(np.float32))
                self._audio_ended = True
            elif rate != self._audio_in_rate:
                self._resampler = _MonoResampler(self._audio_in_rate, rate)

        # libx264 + yuv420p need even dimensions: pad odd ones by one (replicated edge).
        self._pad_w, self._pad_h = self.width % 2, self.height % 2
        self._rate = _as_fraction(self.fps)
        self._container = av.open(str(self.path), mode="w", format="mp4", options={"movflags": "faststart"})
        try:
            vs = self._container.add_stream("libx264", rate=self._rate, options=self.config.options())
            vs.width = self.width + self._pad_w
            vs.height = self.height + self._pad_h
            vs.pix_fmt = self.config.pix_fmt
            vs.codec_context.time_base = 1 / self._rate
            self._video = vs
            self._astream = None
            if self._has_audio:
                self._astream = self._container.add_stream("aac", rate=self.audio_rate, layout="mono")
                self._astream.codec_context.time_base = Fraction(1, self.audio_rate)
        except Exception:
            self._container.close()
            raise

    # ---- context manager ----
    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # finalise the file but do not mask the original exception
            self.close()
        except Exception:
            pass

    # ---- writing ----
    def write(self, frame_bgr: np.ndarray) -> None:
        """Encode one BGR uint8 frame of the declared (height, width, 3)."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        frame = np.asarray(frame_bgr)
        if frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame, got dtype {frame.dtype}")
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"expected a frame of shape {(self.height, self.width, 3)}, got {frame.shape}")
        if self._pad_w or self._pad_h:
            frame = np.pad(frame, ((0, self._pad_h), (0, self._pad_w), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        vf = vf.reformat(format=self.config.pix_fmt)
        vf.pts = self.frames_written
        vf.time_base = 1 / self._rate
        self._mux(self._video.encode(vf))
        self.frames_written += 1
        if self._has_audio:
            self._write_audio(self._video_audio_end())

    def add_audio(self, samples: np.ndarray) -> None:
        """Append the next piece of an incremental track (see the class docstring): shape (n,) or
        (n, channels), at ``audio_rate``; encoded as far as the video has advanced."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if self._audio_in_rate is None or self._audio_ended:
            raise ValueError("add_audio needs incremental_audio=True, before end_audio()")
        x = np.asarray(samples)
        if x.ndim not in (1, 2):
            raise ValueError(f"expected samples of shape (n,) or (n, channels), got {x.shape}")
        if np.issubdtype(x.dtype, np.signedinteger):
            x = x.astype(np.float64) / float(-np.iinfo(x.dtype).min)  # int16: / 32768
        elif not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"expected signed integer or float samples, got dtype {x.dtype}")
        mono = np.ascontiguousarray(x.mean(axis=1) if x.ndim == 2 else x, dtype=np.float32)
        if self._resampler is not None:
            mono = self._resampler.push(mono)
        self._append(np.clip(mono, -1.0, 1.0).astype(np.float32))
        self._write_audio(self._video_audio_end())

    def end_audio(self) -> None:
        """The incremental track is complete: what is left of it is encoded as the video advances,
        and at :meth:`close`."""
        if self._audio_in_rate is None or self._audio_ended:
            return
        if self._resampler is not None:
            self._append(np.clip(self._resampler.flush(), -1.0, 1.0).astype(np.float32))
        self._audio_ended = True
        self._write_audio(self._video_audio_end())

    @property
    def audio_samples_pending(self) -> int:
        """Audio samples received and not yet encoded."""
        return self._pending_size

    def _append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._pending.append(samples)
            self._pending_size += samples.size

    def _take(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            head = self._pending[0]
            if head.size <= n:
                parts.append(self._pending.popleft())
            else:
                parts.append(head[:n])
                self._pending[0] = head[n:]
            n -= parts[-1].size
            self._pending_size -= parts[-1].size
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _video_audio_end(self) -> int:
        """The audio to encode now: up to the written video's end, in whole AAC frames."""
        upto = int(self.frames_written / self._rate * self.audio_rate)
        return upto - (upto - self._audio_pos) % AAC_FRAME_SIZE

    def _write_audio(self, upto: int) -> None:
        if self._audio_ended:
            upto = min(upto, self._audio_pos + self._pending_size)
        else:  # more may come: whole AAC frames only
            upto = min(upto, self._audio_pos + self._pending_size // AAC_FRAME_SIZE * AAC_FRAME_SIZE)
        while self._audio_pos < upto:
            end = min(self._audio_pos + AAC_FRAME_SIZE, upto)
            chunk = self._take(end - self._audio_pos)[None]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            af.sample_rate = self.audio_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self.audio_rate)
            self._mux(self._astream.encode(af))
            self._audio_pos = end

    def _mux(self, packets) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> None:
        """Flush both encoders and finalise the file; calling it again does nothing.

        A writer closed without any frame written raises ``ValueError`` and leaves no file.
        """
        if self._closed:
            return
        self._closed = True
        if self.frames_written == 0:
            self._container.close()
            self.path.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: no video frames were written; no file made")
        try:
            if self._has_audio:
                self.end_audio()
                self._write_audio(self._audio_pos + self._pending_size)
                self._mux(self._astream.encode(None))
            self._mux(self._video.encode(None))
        finally:
            self._container.close()


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25,
    audio: np.ndarray | None = None,
    audio_rate: int | None = None,
    **enc,
) -> int:
    """Write ``frames`` (BGR uint8, all the size of the first) to an MP4; returns the frame count.

    ``enc`` is passed to :class:`Mp4Writer` (``crf``, ``preset``, ``profile``). An empty iterable
    raises ``ValueError`` (nothing is written).
    """
    it = iter(frames)
    try:
        first = np.asarray(next(it))
    except StopIteration:
        raise ValueError(f"{path}: no frames to write") from None
    if first.ndim != 3:
        raise ValueError(f"expected frames of shape (H, W, 3), got {first.shape}")
    h, w = first.shape[:2]
    with Mp4Writer(path, w, h, fps=fps, audio=audio, audio_rate=audio_rate, **enc) as writer:
        writer.write(first)
        for frame in it:
            writer.write(frame)
        return writer.frames_written
