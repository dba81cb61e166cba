"""The latency record of one frame: its stages (:data:`engine.live.messages.STAGES`) from the arrival of
its audio to its last packet on the wire.

The session knows the stages up to ``hold`` when the transport hands the frame on
(:meth:`LatencyRecord.handed_on`); the transport adds ``encode`` (:meth:`LatencyRecord.encoded`) and, when
the frame's packets are on the wire, :meth:`LatencyRecord.finish` adds ``send`` and ``total`` (from the
audio's arrival to the wire, or to the hand-off when the transport cannot time its encoder). The stages of
a frame add up to its ``total``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.core.frames import Frame
from engine.live.messages import STAGES

__all__ = ["MODEL_STAGES", "LatencyRecord"]

MODEL_STAGES = ("transformer", "sketch", "renderer")


@dataclass(slots=True)
class LatencyRecord:
    """One frame's stages in seconds (the ones it has: rest frames have no model stages)."""

    index: int
    speech: bool
    handed: float  # clock time the transport handed the frame on
    arrived: float | None = None  # clock time its first sample's audio arrived, if still known
    encoded_at: float | None = None
    stages: dict[str, float] = field(default_factory=dict)

    @classmethod
    def handed_on(cls, frame: Frame, now: float, arrival: tuple[float, float] | None) -> LatencyRecord:
        """The stages up to ``hold`` of ``frame`` handed on at ``now``; ``arrival``: (arrival time,
        ingest seconds) of the push that brought its first sample."""
        tm = frame.timing
        rec = cls(frame.index, frame.is_speech, now)
        st = rec.stages
        if arrival is not None:
            rec.arrived, st["ingest"] = arrival
            if tm.ready is not None:
                st["mel"] = tm.mel_s
                st["window_wait"] = max(0.0, tm.ready - tm.mel_s - rec.arrived - st["ingest"])
        done = tm.ready
        if tm.model_start is not None:
            model = [getattr(tm, f"{k}_s") for k in MODEL_STAGES]
            st["queue"] = max(0.0, tm.model_end - tm.ready - sum(model))
            st.update(zip(MODEL_STAGES, model, strict=True))
            st["composite"] = tm.composite_s
            done = tm.model_end + tm.composite_s
        if done is not None:
            st["hold"] = max(0.0, now - done)
        return rec

    def encoded(self, t: float) -> None:
        """The encoder returned the frame at clock time ``t``."""
        self.encoded_at = t
        self.stages["encode"] = max(0.0, t - self.handed)

    def finish(self, on_wire: float | None) -> dict:
        """``send`` and ``total``; returns the record as a JSON-ready dict: ``index``, ``speech``, the
        stages it has (seconds, in :data:`STAGES` order) and ``times`` (clock times ``arrived``,
        ``handed``, ``end`` of total)."""
        timed = on_wire is not None and self.encoded_at is not None
        if timed:
            self.stages["send"] = on_wire - self.encoded_at
        end = on_wire if timed else self.handed
        if self.arrived is not None:
            self.stages["total"] = end - self.arrived
        out: dict = {"index": self.index, "speech": self.speech}
        out.update((s, self.stages[s]) for s in STAGES if s in self.stages)
        out["times"] = {"arrived": self.arrived, "handed": self.handed, "end": end}
        return out
