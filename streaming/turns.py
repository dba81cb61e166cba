"""Turn-taking events of a streaming session, for TTS and agent pipelines: ``playback_started`` when
the first sample of an utterance goes out in the returned audio, ``playback_finished`` with how
much of it went out (``position_s``) when it has been played to its end or is flushed.

An **utterance** is the audio pushed between two delimiters: it begins with the first audio pushed
after the session started or the previous utterance ended, and ends with ``segment_end`` (the
client), the gap watchdog (the input stalled for ``gap_ms``), ``end`` or a flush. Its **positions**
are in its own pushed audio: 0 is its first sample; ``position_s`` is the time, in that audio, just
after the last sample the returned audio has played out (the 48 kHz playout audio the tracks send:
what a viewer hears), so a flushed utterance counts only what went out before the flush, never
the audio dropped unplayed. Positions are 48 kHz samples on the session clock (the
:class:`streaming.tracks.PlayoutAudio` timeline, 3 per 16 kHz session sample); "played out"
advances when the audio track makes a 20 ms frame (:meth:`Turns.played`, from the frame's read),
so the position is exact to the returned audio at a 20 ms grain.

:class:`Turns` does no I/O: it calls ``emit(event)`` with each event (a JSON-ready dict) and the
session fans them out to its transports. Nothing here is thread-safe (the event loop thread)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_UTTERANCES", "Turns", "Utterance"]

PLAYOUT_RATE = 48000  # the positions' rate (streaming.tracks.PLAYOUT_RATE)
MAX_UTTERANCES = 4096  # ended utterances not yet played out that are remembered (older: no event)


@dataclass
class Utterance:
    """One utterance: ``start`` and ``end`` (exclusive; the pushed end while it is open) on the
    playout timeline, whether its first sample went out, and why it ended (None while open)."""

    id: int
    start: int
    end: int
    started: bool = False
    reason: str | None = None


class Turns:
    """The utterances of one session and their events (see the module docstring).

    ``emit``: called with each event; ``media_time``: playout position -> seconds on the session's
    output clock (the tracks' pts: video frame ``i`` at ``i / 25`` s), or None before the clock has
    its anchor; ``wall``: the Unix time of an event."""

    def __init__(
        self,
        emit: Callable[[dict], None],
        media_time: Callable[[int], float | None],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._emit, self._media, self._wall = emit, media_time, wall
        self._queue: collections.deque[Utterance] = collections.deque()  # not yet finished, in order
        self.open: Utterance | None = None  # the utterance taking audio now
        self.count = 0  # utterances begun
        self.cursor: int | None = None  # one past the last playout sample that went out

    # ---- input side ------------------------------------------------------------------------------

    def begin(self, position: int) -> Utterance:
        """Audio is about to be pushed at playout ``position``: the open utterance, begun here if
        there was none."""
        if self.open is None:
            self.count += 1
            self.open = Utterance(self.count, int(position), int(position))
            self._queue.append(self.open)
            while len(self._queue) > MAX_UTTERANCES:
                self._queue.popleft()
        return self.open

    def pushed(self, end: int) -> None:
        """The open utterance's audio now reaches playout position ``end`` (exclusive)."""
        if self.open is not None:
            self.open.end = max(self.open.end, int(end))

    def close(self, reason: str, end: int | None = None) -> int | None:
        """The open utterance ends (``segment_end``, ``gap``, ``end``): its audio is complete at
        ``end``; ``playback_finished`` follows when its last sample has gone out (at once if it
        has). Returns its id, or None when no utterance was open."""
        u, self.open = self.open, None
        if u is None:
            return None
        if end is not None:
            u.end = max(u.end, int(end))
        if u.end <= u.start:  # no audio came (an empty push): no utterance, no events
            self._queue.remove(u)
            return None
        u.reason = reason
        if self.cursor is not None:
            self.played(self.cursor)
        return u.id

    def flush(self, cursor: int | None) -> None:
        """A flush: every utterance not yet finished ends now, interrupted, at what went out
        (``cursor``: one past the last playout sample sent; None: nothing was sent)."""
        if cursor is not None:
            self.played(cursor)
        self.open = None
        while self._queue:
            u = self._queue.popleft()
            u.reason = "flush"
            if u.end > u.start:  # (an empty one had no audio: no events)
                self._finished(u, cursor, interrupted=True)

    # ---- output side -----------------------------------------------------------------------------

    def played(self, cursor: int) -> None:
        """The returned audio has gone out up to playout position ``cursor`` (exclusive)."""
        self.cursor = int(cursor) if self.cursor is None else max(self.cursor, int(cursor))
        c, q, i = self.cursor, self._queue, 0
        while i < len(q):  # in order: each one's start, then (from the front) its end
            u = q[i]
            if not u.started:
                if u.end <= u.start or c <= u.start:
                    break  # utterances go out in order: a later one cannot have started
                u.started = True
                self._event("playback_started", u, media_time_s=self._media(u.start))
            if i == 0 and u.reason is not None and c >= u.end:
                q.popleft()
                self._finished(u, c, interrupted=False)
                continue
            i += 1

    def _finished(self, u: Utterance, cursor: int | None, interrupted: bool) -> None:
        played = 0 if cursor is None else min(max(cursor, u.start), u.end) - u.start
        self._event(
            "playback_finished",
            u,
            position_s=played / PLAYOUT_RATE,
            duration_s=(u.end - u.start) / PLAYOUT_RATE,
            interrupted=interrupted,
            reason=u.reason,
            started=u.started,
            media_time_s=self._media(u.start + played),
        )

    def _event(self, kind: str, u: Utterance, **fields) -> None:
        event = {"type": kind, "utterance": u.id, **fields, "at": self._wall()}
        try:
            self._emit(event)
        except Exception:  # noqa: BLE001 - a failing consumer must not stop the session's audio
            pass

    @property
    def pending(self) -> int:
        """Utterances not yet finished (bounded by :data:`MAX_UTTERANCES`)."""
        return len(self._queue)
