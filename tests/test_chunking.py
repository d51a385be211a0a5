"""Dynamic chunking against a slow, obviously-correct loop implementation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.chunking import chunk_frames, chunk_starts, make_chunks


def slow_chunks(frames: np.ndarray, offsets, lengths, m: int, C: int) -> np.ndarray:
    """One utterance, one chunk, one frame at a time, straight from the definition."""
    out = []
    for off, T in zip(offsets, lengths):
        utt = frames[off:off + T]
        step = 0 if C == 1 or T < m else (T - m) // (C - 1)
        for i in range(C):
            chunk = np.zeros((m, frames.shape[1]), dtype=np.float32)
            for k in range(m):
                f = i * step + k
                if f < T:
                    chunk[k] = utt[f]
            out.append(chunk)
    return np.stack(out)[:, None]


def packed(lengths, n_mels=5, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    frames = rng.standard_normal((int(lengths.sum()), n_mels)).astype(dtype)
    return frames, offsets


def test_chunk_starts_follow_the_formula():
    starts = chunk_starts(np.array([62, 72, 162, 700, 30]), 62, 11)
    assert starts.shape == (5, 11)
    assert starts[0].tolist() == [0] * 11                      # T == m: all chunks identical
    assert starts[1].tolist() == list(range(11))               # step 1
    assert starts[2].tolist() == [10 * i for i in range(11)]   # step 10, last chunk ends at T
    assert starts[3, -1] + 62 <= 700 and starts[3, 1] == (700 - 62) // 10
    assert starts[4].tolist() == [0] * 11                      # shorter than m


def test_chunk_starts_single_chunk_and_bad_sizes():
    assert chunk_starts([5, 500], 62, 1).tolist() == [[0], [0]]
    with pytest.raises(ValueError):
        chunk_starts([100], 0, 11)
    with pytest.raises(ValueError):
        chunk_starts([100], 62, 0)


@pytest.mark.parametrize("m", [1, 8, 31, 62, 100])
@pytest.mark.parametrize("C", [1, 2, 5, 11, 16])
def test_chunk_frames_matches_the_loop(m, C):
    lengths = [1, 7, max(m - 1, 1), m, m + 1, max(m + C - 2, 1), 3 * m + 5, 250]
    frames, offsets = packed(lengths, seed=m * 100 + C)
    got = chunk_frames(frames, offsets, lengths, m, C)
    assert got.dtype == torch.float32 and got.shape == (len(lengths) * C, 1, m, 5)
    np.testing.assert_array_equal(got.numpy(), slow_chunks(frames, offsets, lengths, m, C))


def test_chunk_frames_random_order_and_float16():
    lengths = np.array([40, 300, 61, 62, 63, 999, 2])
    frames, offsets = packed(lengths, n_mels=128, seed=3, dtype=np.float16)
    order = np.array([5, 0, 3, 3, 6, 1])                       # any subset, repeats allowed
    got = chunk_frames(frames, offsets[order], lengths[order], 62, 11)
    want = slow_chunks(frames.astype(np.float32), offsets[order], lengths[order], 62, 11)
    np.testing.assert_array_equal(got.numpy(), want)


def test_padding_is_zero_after_the_frames():
    frames = np.ones((10, 3), dtype=np.float32)
    got = chunk_frames(frames, [0], [10], 16, 3).numpy()
    assert got.shape == (3, 1, 16, 3)
    assert (got[:, 0, :10] == 1).all() and (got[:, 0, 10:] == 0).all()


def test_in_memory_tensor_input_for_prediction():
    frames = torch.arange(200 * 4, dtype=torch.float32).view(200, 4)
    got = chunk_frames(frames, [0], [200], 62, 11)
    np.testing.assert_array_equal(got.numpy(), slow_chunks(frames.numpy(), [0], [200], 62, 11))


def test_rejects_empty_utterances_and_mismatched_inputs():
    frames = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(ValueError):
        chunk_frames(frames, [0], [0], 4, 2)
    with pytest.raises(ValueError):
        chunk_frames(frames, [0, 5], [5], 4, 2)
    assert chunk_frames(frames, [], [], 4, 2).shape == (0, 1, 4, 2)


def test_make_chunks_reads_from_a_store(tmp_path):
    lengths = np.array([80, 20, 150])
    frames, offsets = packed(lengths, n_mels=128, seed=7, dtype=np.float16)

    class FakeStore:  # the two attributes make_chunks uses, as FeatureStore provides them
        pass

    store = FakeStore()
    store.frames = frames
    store.index = np.zeros(3, dtype=[("offset", np.int64), ("length", np.int32)])
    store.index["offset"], store.index["length"] = offsets, lengths
    got = make_chunks(store, [2, 1], 62, 4)
    want = slow_chunks(frames.astype(np.float32), offsets[[2, 1]], lengths[[2, 1]], 62, 4)
    np.testing.assert_array_equal(got.numpy(), want)
