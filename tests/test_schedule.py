"""The authors' offline schedule: ping-pong template order, windows, mel offsets, references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.core.schedule import CENTER, make_window, num_windows, pingpong, reference_indices, windows


def test_pingpong_matches_the_authors_sequence():
    for L in (1, 2, 3, 7):
        seq = list(range(L)) + list(reversed(range(L)))
        authors = seq * 10  # (list + reversed) repeated
        assert [pingpong(i, L) for i in range(len(authors))] == authors
    assert pingpong(np.arange(6), 3).tolist() == [0, 1, 2, 2, 1, 0]
    with pytest.raises(ValueError):
        pingpong(0, 0)


def test_windows_cover_every_output_frame_once_and_use_the_right_mels():
    n_chunks, L = 13, 4
    plan = windows(n_chunks, L)
    assert len(plan) == num_windows(n_chunks) == 11
    outputs = [p for w in plan for p in w.output_indices]
    assert outputs == list(range(n_chunks))
    w0 = plan[0]
    assert w0.output_indices == (0, 1, 2)
    assert w0.mel_indices == (0, 0, 0, 1, 2)
    assert w0.templates == (0, 1, 2, 3, 3)
    assert w0.render_template == 2 and w0.mel_indices[CENTER] == 0
    w = make_window(6, n_chunks, L)
    assert w.mel_indices == (4, 5, 6, 7, 8)
    assert w.templates == tuple(pingpong(i, L) for i in range(6, 11))
    assert w.render_template == pingpong(8, L) and w.output_indices == (8,)
    last = plan[-1]
    assert max(last.mel_indices) == n_chunks - 1
    for p in range(2, n_chunks):  # output frame p shows template f(p), audio chunk p - 2
        (win,) = [w for w in plan if p in w.output_indices]
        assert win.render_template == pingpong(p, L) and win.mel_indices[CENTER] == p - 2


def test_too_few_chunks_give_no_windows():
    assert num_windows(2) == 0 and windows(2, 5) == []
    with pytest.raises(IndexError):
        make_window(0, 2, 5)


def test_reference_indices_follow_stable_sort_and_float32_linspace():
    rng = np.random.default_rng(0)
    lip = rng.random(125)
    lip[[3, 40, 77]] = lip[10]  # ties keep frame order
    order = sorted(range(125), key=lambda i: lip[i])  # Python's sort is stable, as the authors'
    for count in (15, 25, 1, 200):
        expected = [order[int(v)] for v in torch.linspace(0, 124, steps=count)]
        assert reference_indices(lip, count).tolist() == expected
    assert reference_indices(np.array([0.5]), 15).tolist() == [0] * 15
    picks = reference_indices(lip, 15)
    assert (
        np.all(np.diff(lip[picks]) >= 0)
        and picks[0] == int(np.argmin(lip))
        and picks[-1] == int(np.argmax(lip))
    )
    with pytest.raises(ValueError):
        reference_indices(np.array([]), 3)


def test_windows_with_chunks_carry_their_mel():
    chunks = np.random.default_rng(0).standard_normal((9, 80, 16)).astype(np.float32)
    for w in windows(len(chunks), 3, chunks):
        assert w.mel.shape == (5, 80, 16) and w.index == w.output_indices[0]
        np.testing.assert_array_equal(w.mel, chunks[list(w.mel_indices)])
        np.testing.assert_array_equal(w.render_mel, chunks[w.start])
    assert windows(9, 3)[0].mel.size == 0  # a plan without audio
