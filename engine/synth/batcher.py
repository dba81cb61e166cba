"""One model worker shared by live sessions: windows that are ready in several sessions at once go
through the transformer and the renderer together, in one batched call.

Each :class:`engine.live.session.LiveSession` makes its model calls from its own worker thread. With a
:class:`SharedModelWorker` those calls become requests on one queue: the worker thread takes every
request that is waiting, groups them by avatar (a renderer backend holds one avatar's reference
bank) and runs each group as one call of up to ``max_batch`` windows, then hands each session its
faces. Sessions never wait for a batch to fill: a request that finds the worker idle runs at
once, alone; requests that arrive while a call runs are batched into the next one (continuous
batching). A session whose call just returned needs a moment to send its next request; so that
sessions do not fall into taking turns, the worker lingers up to ``linger_s`` (5 ms) before a
call while a session that was active in the last second has nothing queued. Per-avatar state
(the renderer backend with its references and the landmark references on the device) is made on
first use and kept for the ``max_avatars`` most recently used avatars, so sessions on the same
avatar share one reference bank.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.core.avatar import Avatar
from engine.core.schedule import Window, silent_windows

__all__ = ["SharedModelWorker", "WorkerStats"]


@dataclass
class WorkerStats:
    calls: int = 0
    windows: int = 0
    requests: int = 0
    max_windows_per_call: int = 0
    max_owners_per_call: int = 0  # sessions served by one call
    shared_calls: int = 0  # calls that served more than one session
    busy_s: float = 0.0
    recent_batch: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))

    def snapshot(self) -> dict:
        b = np.asarray(self.recent_batch, dtype=np.float64)
        return {
            "calls": self.calls,
            "windows": self.windows,
            "requests": self.requests,
            "shared_calls": self.shared_calls,
            "max_windows_per_call": self.max_windows_per_call,
            "max_sessions_per_call": self.max_owners_per_call,
            "mean_windows_per_call": float(b.mean()) if b.size else 0.0,
            "busy_s": self.busy_s,
        }


@dataclass
class _Request:
    avatar: Avatar
    wins: list[Window]
    owner: object
    future: Future
    split: dict | None = None  # filled with the call's seconds per stage before the future is set


class SharedModelWorker:
    """See the module docstring. ``model``: what the calls run, with ``prepare(avatar) -> state`` (the
    per-avatar state: a backend with its references) and ``infer(state, avatar, windows, split) -> faces``
    (:class:`engine.synth.neural.NeuralSynthesizer`)."""

    def __init__(
        self,
        model,
        max_batch: int = 16,
        max_avatars: int = 8,
        linger_s: float = 0.005,
    ) -> None:
        if max_batch < 1 or max_avatars < 1:
            raise ValueError("max_batch and max_avatars must be >= 1")
        self._model = model
        self.max_batch = int(max_batch)
        self.max_avatars = int(max_avatars)
        self.linger_s = float(linger_s)
        self._active: dict[int, float] = {}  # owner id -> time of its last request
        self.stats = WorkerStats()
        self._states: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._queue: collections.deque[_Request] = collections.deque()
        self._drops: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._held = 0
        self._thread: threading.Thread | None = None

    # ---- client side (any thread) -------------------------------------------------------------

    def faces(
        self, avatar: Avatar, wins: list[Window], owner: object = None, split: dict | None = None
    ) -> np.ndarray:
        """Faces for ``wins`` of ``avatar`` (blocks until the call that includes them returns).
        ``split``: filled with the seconds per stage of the (shared) call that computed them."""
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the model worker is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mouthpiece-models", daemon=True)
                self._thread.start()
            self._queue.append(_Request(avatar, list(wins), owner, fut, split))
            self._active[id(owner)] = time.perf_counter()
            self._cond.notify()
        return fut.result()

    def warm_up(self, avatar: Avatar, windows: int = 2) -> float:
        """One call on silent windows of ``avatar`` (loads its bank, runs the first, slow, call);
        returns its seconds. Blocking."""
        t0 = time.perf_counter()
        self.faces(avatar, silent_windows(avatar, windows), owner=self)
        return time.perf_counter() - t0

    def release(self, avatar: Avatar) -> None:
        """Free the avatar's state (backend, reference bank) once no session uses it; non-blocking
        (done by the worker thread before its next call; GPU cache emptied)."""
        with self._cond:
            self._drops.append(str(avatar.folder))
            self._cond.notify()

    def close(self) -> None:
        """Stop the worker thread (requests still queued fail with RuntimeError)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._states.clear()

    @contextlib.contextmanager
    def held(self):
        """While inside, no new call starts (a running one finishes): requests queue up, and the
        first call after it takes all of them (batched as usual). For maintenance that must not race
        a call, and for tests that need several sessions' requests in one call whatever the load."""
        with self._cond:
            self._held += 1
        try:
            yield self
        finally:
            with self._cond:
                self._held -= 1
                self._cond.notify_all()

    def queued_owners(self) -> int:
        """How many distinct sessions have a request waiting."""
        with self._cond:
            return len(self._queued_ids())

    def _queued_ids(self) -> set[int]:
        """(With the lock held.) The ids of the sessions that have a request waiting."""
        return {id(r.owner) for r in self._queue}

    @property
    def avatars_loaded(self) -> int:
        return len(self._states)

    # ---- worker thread -----------------------------------------------------------------------

    def _state(self, avatar: Avatar):
        key = str(avatar.folder)
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = self._model.prepare(avatar)
            while len(self._states) > self.max_avatars:
                self._states.popitem(last=False)  # the least recently used avatar's bank goes
        self._states.move_to_end(key)
        return st

    def _run(self) -> None:
        while True:
            with self._cond:
                while (not self._queue and not self._drops or self._held) and not self._closed:
                    self._cond.wait()
                drops = list(self._drops)
                self._drops.clear()
                if self._queue and self.linger_s > 0:
                    self._linger()
                if self._closed:
                    for r in self._queue:
                        r.future.set_exception(RuntimeError("the model worker is closed"))
                    self._queue.clear()
                    return
                pending = list(self._queue)
                self._queue.clear()
            if drops:
                for key in drops:
                    self._states.pop(key, None)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            groups: dict[str, list[_Request]] = {}
            for r in pending:
                groups.setdefault(str(r.avatar.folder), []).append(r)
            for reqs in groups.values():
                while reqs:  # calls of up to max_batch windows; a request is never split
                    call, n = [reqs.pop(0)], 0
                    n = len(call[0].wins)
                    while reqs and n + len(reqs[0].wins) <= self.max_batch:
                        n += len(reqs[0].wins)
                        call.append(reqs.pop(0))
                    self._call(call)

    def _linger(self) -> None:
        """(With the lock held.) Wait up to ``linger_s`` for recently active sessions to queue."""
        now = time.perf_counter()
        for k in [k for k, t in self._active.items() if now - t > 1.0]:
            del self._active[k]
        end = now + self.linger_s
        while not self._closed:
            queued = self._queued_ids()
            left = end - time.perf_counter()
            if left <= 0 or all(k in queued for k in self._active):
                return
            self._cond.wait(left)

    def _call(self, call: list[_Request]) -> None:
        t0 = time.perf_counter()
        try:
            st = self._state(call[0].avatar)
            split: dict[str, float] = {}
            wins = [w for r in call for w in r.wins]
            with torch.inference_mode():
                faces = self._model.infer(st, call[0].avatar, wins, split)
        except BaseException as e:  # noqa: BLE001 - handed to every waiting session
            for r in call:
                r.future.set_exception(e)
            return
        s = self.stats
        n = len(faces)
        owners = len({id(r.owner) for r in call})
        s.calls += 1
        s.windows += n
        s.requests += len(call)
        s.max_windows_per_call = max(s.max_windows_per_call, n)
        s.max_owners_per_call = max(s.max_owners_per_call, owners)
        s.shared_calls += owners > 1
        s.busy_s += time.perf_counter() - t0
        s.recent_batch.append(n)
        i = 0
        for r in call:
            if r.split is not None:
                r.split.update(split)
            r.future.set_result(faces[i : i + len(r.wins)])
            i += len(r.wins)
