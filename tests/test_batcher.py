"""The shared model worker: cross-session batching gives each session exactly its own faces.

Real transformer (stand-in weights) on the bundled portrait; the renderer is tests/helpers.py's
InvertBackend except in the equivalence test, which uses the real ``fast`` renderer. Threads meet
through events with time limits; nothing sleeps to synchronise.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.core.avatar import AvatarConfig, prepare_avatar
from engine.live.audio import IncrementalMel, LiveWindowScheduler
from engine.synth.backends import make_renderer_backend
from engine.synth.batcher import SharedModelWorker
from engine.synth.neural import FaceGenerator, NeuralSynthesizer
from tests.helpers import PORTRAIT, InvertBackend, eventually, speechlike

LIMIT = 60.0


@pytest.fixture(scope="module")
def avatars(tmp_path_factory):
    import cv2

    cache = tmp_path_factory.mktemp("batcher-avatars")
    mirrored = cache / "mirrored.png"
    cv2.imwrite(str(mirrored), cv2.flip(cv2.imread(str(PORTRAIT)), 1))
    cfg = AvatarConfig(n_refs=1)
    return prepare_avatar(PORTRAIT, cfg, cache), prepare_avatar(mirrored, cfg, cache)


def live_windows(avatar, seconds: float, seed: int):
    return LiveWindowScheduler(avatar.n_frames).push(IncrementalMel().push(speechlike(seconds, seed=seed)))


def own_faces(lm, backend, avatar, wins) -> np.ndarray:
    backend.set_references(*avatar.reference_tensors())
    import torch

    refs = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in avatar.landmark_refs())
    return FaceGenerator(lm, backend).faces(avatar, wins, refs)


def shared_worker(lm, backend_factory, **kw) -> SharedModelWorker:
    """The model worker around the neural synthesizer's model calls."""
    return SharedModelWorker(NeuralSynthesizer(lm, backend_factory, shared=False), **kw)


def test_shared_worker_equals_a_private_backend(avatars, landmark_model, renderer_model):
    avatar = avatars[0]
    wins = live_windows(avatar, 0.6, seed=1)[:3]
    worker = shared_worker(landmark_model, lambda: make_renderer_backend("fast", renderer_model))
    try:
        shared = worker.faces(avatar, wins)
    finally:
        worker.close()
    private = own_faces(landmark_model, make_renderer_backend("fast", renderer_model), avatar, wins)
    assert shared.shape == (3, 128, 128, 3) and shared.dtype == np.uint8
    np.testing.assert_array_equal(shared, private)


class GatedInvert(InvertBackend):
    """InvertBackend whose first call waits for a gate, so that requests pile up behind it."""

    def __init__(self, gate: threading.Event, entered: threading.Event):
        super().__init__()
        self.gate, self.entered, self.batches = gate, entered, []

    def render(self, faces, sketches, mels):
        self.entered.set()
        assert self.gate.wait(LIMIT)
        self.batches.append(len(faces))
        return super().render(faces, sketches, mels)


def test_requests_of_several_sessions_share_one_call(avatars, landmark_model):
    a, b = avatars
    gate, entered = threading.Event(), threading.Event()
    backends: list[GatedInvert] = []

    def factory():
        backends.append(GatedInvert(gate, entered))
        return backends[-1]

    worker = shared_worker(landmark_model, factory, max_batch=8)
    reqs = {  # owner -> (avatar, windows)
        "first": (a, live_windows(a, 0.5, seed=1)[:1]),
        "s1": (a, live_windows(a, 0.7, seed=2)[:2]),
        "s2": (a, live_windows(a, 0.7, seed=3)[:3]),
        "s3": (b, live_windows(b, 0.7, seed=4)[:2]),
    }
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(worker.faces, *reqs["first"], "first")
            assert entered.wait(LIMIT)  # the worker is busy with "first"; the others queue up
            others = {k: pool.submit(worker.faces, *reqs[k], k) for k in ("s1", "s2", "s3")}

            assert eventually(lambda: worker.queued_owners() == 3)
            gate.set()
            out = {"first": first.result(LIMIT), **{k: f.result(LIMIT) for k, f in others.items()}}
        stats = worker.stats.snapshot()
    finally:
        worker.close()

    # one backend per avatar; the two queued sessions on avatar a ran as ONE call of 2 + 3 windows
    assert len(backends) == 2
    assert backends[0].batches == [1, 5] and backends[1].batches == [2]
    assert stats["calls"] == 3 and stats["shared_calls"] == 1 and stats["max_sessions_per_call"] == 2
    # and every session got exactly its own faces
    for owner, (avatar, wins) in reqs.items():
        np.testing.assert_array_equal(out[owner], own_faces(landmark_model, InvertBackend(), avatar, wins))


def test_a_held_worker_queues_requests_into_one_call(avatars, landmark_model):
    """While ``held()``, no call starts: the requests of two sessions wait, and the first call after
    it serves both (one backend call of 1 + 2 windows), each session getting its own faces."""
    a = avatars[0]
    backends: list[GatedInvert] = []
    gate = threading.Event()
    gate.set()

    def factory():
        backends.append(GatedInvert(gate, threading.Event()))
        return backends[-1]

    worker = shared_worker(landmark_model, factory, linger_s=0.0)
    reqs = {"s1": live_windows(a, 0.5, seed=5)[:1], "s2": live_windows(a, 0.7, seed=6)[:2]}
    try:
        with ThreadPoolExecutor(2) as pool:
            with worker.held():
                futs = {k: pool.submit(worker.faces, a, w, k) for k, w in reqs.items()}
                assert eventually(lambda: worker.queued_owners() == 2)
                assert worker.stats.calls == 0 and not any(f.done() for f in futs.values())
            out = {k: f.result(LIMIT) for k, f in futs.items()}
        stats = worker.stats.snapshot()
    finally:
        worker.close()
    assert backends[0].batches == [3]
    assert stats["calls"] == 1 and stats["shared_calls"] == 1 and stats["max_sessions_per_call"] == 2
    for owner, wins in reqs.items():
        np.testing.assert_array_equal(out[owner], own_faces(landmark_model, InvertBackend(), a, wins))


def test_worker_errors_reach_every_waiting_session_and_close_stops_it(avatars, landmark_model):
    class Broken(InvertBackend):
        def render(self, faces, sketches, mels):
            raise RuntimeError("renderer exploded")

    worker = shared_worker(landmark_model, Broken)
    a = avatars[0]
    with pytest.raises(RuntimeError, match="exploded"):
        worker.faces(a, live_windows(a, 0.5, seed=1)[:1])
    worker.release(a)
    worker.close()
    assert not [t for t in threading.enumerate() if t.name == "mouthpiece-models"]
    with pytest.raises(RuntimeError, match="closed"):
        worker.faces(a, live_windows(a, 0.5, seed=1)[:1])


def test_release_and_lru_bound_the_reference_banks(avatars, landmark_model):
    a, b = avatars
    worker = shared_worker(landmark_model, InvertBackend, max_avatars=1)
    try:
        worker.faces(a, live_windows(a, 0.5, seed=1)[:1])
        assert worker.avatars_loaded == 1
        worker.faces(b, live_windows(b, 0.5, seed=1)[:1])  # evicts a (max_avatars=1)
        assert worker.avatars_loaded == 1 and list(worker._states) == [str(b.folder)]
        worker.release(b)
        worker.warm_up(a)  # the release is applied before the next call
        assert list(worker._states) == [str(a.folder)]
    finally:
        worker.close()
