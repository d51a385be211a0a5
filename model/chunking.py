"""Dynamic chunking: every utterance becomes exactly C chunks of m frames, evenly spread.

With step = floor((T - m) / (C - 1)), chunk i covers frames [i*step, i*step + m). C = 1 starts at
0. An utterance shorter than m frames gets all-zero starts and is padded with zeros after its
frames (zero is the normalised mean). Works for any m and C; nothing is hard-coded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from model.store import FeatureStore


def chunk_starts(lengths: np.ndarray, m: int, C: int) -> np.ndarray:
    """Start frame of each chunk: [n, C] int64 (all zero for utterances shorter than m)."""
    if m < 1 or C < 1:
        raise ValueError(f"chunk size m={m} and chunks per sentence C={C} must be >= 1")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if C == 1:
        return np.zeros((len(lengths), 1), dtype=np.int64)
    step = np.maximum(lengths - m, 0) // (C - 1)
    return step[:, None] * np.arange(C, dtype=np.int64)[None, :]


def chunk_frames(frames, offsets: np.ndarray, lengths: np.ndarray, m: int, C: int) -> torch.Tensor:
    """The C chunks of each utterance, [n*C, 1, m, n_mels] float32, zero-padded past its end.

    `frames` is [F, n_mels] (a NumPy array, a read-only memmap or a tensor); utterance j occupies
    rows offsets[j] .. offsets[j] + lengths[j]. Each utterance's span is read once (one gather),
    then the overlapping chunks are cut from that copy in memory.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if offsets.shape != lengths.shape:
        raise ValueError(f"offsets {offsets.shape} and lengths {lengths.shape} differ in shape")
    if len(lengths) and lengths.min() < 1:
        raise ValueError("every utterance needs at least one frame")
    n, n_mels = len(lengths), frames.shape[1]
    if n == 0:
        return torch.zeros((0, 1, m, n_mels), dtype=torch.float32)
    starts = chunk_starts(lengths, m, C)                                  # [n, C]
    span = np.minimum(lengths, starts[:, -1] + m)                         # frames actually used
    local = np.zeros(n, dtype=np.int64)
    np.cumsum(span[:-1], out=local[1:])                                   # span start in `buf`
    rows = np.repeat(offsets - local, span) + np.arange(int(span.sum()), dtype=np.int64)
    buf = torch.from_numpy(np.ascontiguousarray(frames[rows])).float()    # one read per span
    pos = starts[:, :, None] + np.arange(m, dtype=np.int64)[None, None, :]  # [n, C, m] in-utterance
    valid = pos < lengths[:, None, None]
    take = local[:, None, None] + np.minimum(pos, span[:, None, None] - 1)
    out = buf.index_select(0, torch.from_numpy(take.reshape(-1)))
    if not valid.all():
        out.index_fill_(0, torch.from_numpy(np.flatnonzero(~valid.reshape(-1))), 0.0)
    return out.view(n * C, 1, m, n_mels)


def make_chunks(store: "FeatureStore", idx, m: int, C: int) -> torch.Tensor:
    """Chunks of the store's utterances `idx`, in that order: [len(idx)*C, 1, m, n_mels] float32."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    rows = store.index[idx]
    return chunk_frames(store.frames, rows["offset"], rows["length"], m, C)
