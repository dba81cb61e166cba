"""The streaming parts of ``mouthpiece dub`` (:mod:`engine.offline.dub`): the audio file read once, in
pieces, into mel chunks, 16 kHz and output-rate samples (:class:`DubAudio`); the preview renderer's
openness per frame computed as the audio streams (the preview stream's ``audio_ahead``); generated faces
written to disk as they come (:class:`FaceFile`). Each keeps a bounded amount of data, whatever the
audio's length.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from engine.core.audio import MelChunker, MelConfig, decode_audio
from engine.live.audio import IncrementalMel, StreamingResampler

__all__ = ["DECODE_BLOCK", "OUTPUT_AUDIO_RATE", "DubAudio", "FaceFile"]

OUTPUT_AUDIO_RATE = 48000
#: Decoded samples (at the file's rate) gathered before one resampling and mel step (~0.35 s at 48 kHz).
DECODE_BLOCK = 16384


class DubAudio:
    """One pass over an audio file, in pieces: mel chunks for the windows, and on the way the 16 kHz
    samples and the output-rate samples.

    Decoded pieces (:func:`engine.core.audio.decode_audio`) are gathered into blocks of
    :data:`DECODE_BLOCK` samples; each block goes through two :class:`StreamingResampler` (16 kHz and
    ``output_rate``), an :class:`IncrementalMel` and a :class:`MelChunker`. Everything equals the
    whole-file functions: the 16 kHz and output samples :func:`engine.core.audio.load_audio` at those
    rates, the chunks :func:`engine.core.audio.mel_chunks` of :func:`engine.core.audio.melspectrogram`.

    Constructing it opens the file and decodes its first piece, so a missing, audio-less or
    undecodable file fails at once. :meth:`chunks` runs the pass (once).
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, output_rate: int = OUTPUT_AUDIO_RATE):
        t0 = time.perf_counter()
        self._decoded = decode_audio(path)
        self.sample_rate, self._first = next(self._decoded)  # an empty file raises AudioError here
        self.output_rate = int(output_rate)
        self._r16 = StreamingResampler(self.sample_rate, 1, MelConfig().sample_rate)
        self._rout = StreamingResampler(self.sample_rate, 1, self.output_rate)
        self._mel = IncrementalMel()
        self._chunker = MelChunker(fps)
        self.samples = 0  # 16 kHz samples so far
        self.chunks_total = 0
        self.ended = False
        self.seconds = time.perf_counter() - t0  # time spent decoding, resampling, in the mel

    @property
    def seconds_of_audio(self) -> float:
        return self.samples / MelConfig().sample_rate

    def chunks(
        self,
        on_output: Callable[[np.ndarray], None] | None = None,
        on_samples: Callable[[np.ndarray], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Blocks of mel chunks (k, 80, 16) as the file is decoded. Before each block, ``on_output``
        gets the output-rate samples and ``on_samples`` the 16 kHz samples of the same audio; at the end
        of the file (before the last chunks) ``on_end`` is called."""
        if self._first is None:
            raise RuntimeError("DubAudio.chunks() runs once")
        t0 = time.perf_counter()
        block, size = [self._first], self._first.size
        self._first = None
        for _, mono in self._decoded:
            block.append(mono)
            size += mono.size
            if size >= DECODE_BLOCK:
                mono, block, size = np.concatenate(block), [], 0
                c = self._step(self._r16.push(mono), self._rout.push(mono), on_output, on_samples)
                if c.size:
                    self.seconds += time.perf_counter() - t0
                    yield c
                    t0 = time.perf_counter()
        mono = np.concatenate(block) if block else np.zeros(0, np.float32)
        s16 = np.concatenate([self._r16.push(mono), self._r16.flush()])
        out = np.concatenate([self._rout.push(mono), self._rout.flush()])
        c = self._step(s16, out, on_output, on_samples, final=True)
        self.ended = True
        if on_end is not None:
            on_end()
        self.seconds += time.perf_counter() - t0
        if c.size:
            yield c

    def _step(self, s16, out, on_output, on_samples, final: bool = False) -> np.ndarray:
        if on_output is not None and out.size:
            on_output(out)
        if on_samples is not None and s16.size:
            on_samples(s16)
        self.samples += s16.size
        mel = self._mel.push(s16)
        if final:
            mel = np.concatenate([mel, self._mel.finish()], axis=1)
        c = self._chunker.push(mel)
        self.chunks_total += len(c)
        return c


class FaceFile:
    """``--save-faces``: the generated faces (128, 128, 3) uint8 written as they come to a temporary
    file, then stored as ``faces`` in an .npz (what ``np.savez(path, faces=np.stack(faces))`` makes)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import tempfile

        self.path = Path(path)
        self._raw = tempfile.TemporaryFile(dir=self.path.parent if self.path.parent.is_dir() else None)
        self.count = 0
        self.shape: tuple[int, ...] | None = None

    def add(self, face: np.ndarray) -> None:
        face = np.ascontiguousarray(face, dtype=np.uint8)
        if self.shape is None:
            self.shape = face.shape
        elif face.shape != self.shape:
            raise ValueError(f"faces of different shapes: {self.shape} and {face.shape}")
        self._raw.write(face.tobytes())
        self.count += 1

    def finish(self) -> None:
        shape = (self.count, *(self.shape or (128, 128, 3)))
        descr = np.lib.format.dtype_to_descr(np.dtype(np.uint8))
        header = {"descr": descr, "fortran_order": False, "shape": shape}
        self._raw.seek(0)
        with zipfile.ZipFile(self.path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("faces.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, header)
                while data := self._raw.read(1 << 22):
                    f.write(data)
        self._raw.close()

    def discard(self) -> None:
        self._raw.close()
