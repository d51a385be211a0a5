"""Checkpoint folders: atomic replacement, RNG capture/restore, safe loading."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from model.checkpoint import (capture_rng, find_checkpoint, read_checkpoint, restore_rng,
                              write_checkpoint)


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    write_checkpoint(tmp_path / "ck", {"epoch": 1, "w": torch.ones(3)})

    def broken(path):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "ck", {"epoch": 2}, {"best_model.pt": broken})
    state = read_checkpoint(tmp_path / "ck")
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]          # no temporary folder left


def test_an_interrupted_swap_is_recovered(tmp_path):
    write_checkpoint(tmp_path / "ck", {"epoch": 4})
    (tmp_path / "ck").rename(tmp_path / "ck.old")                        # crash between the two renames
    assert find_checkpoint(tmp_path / "ck") == tmp_path / "ck.old"
    assert read_checkpoint(tmp_path / "ck")["epoch"] == 4
    write_checkpoint(tmp_path / "ck", {"epoch": 5})
    assert read_checkpoint(tmp_path / "ck")["epoch"] == 5 and not (tmp_path / "ck.old").exists()


def test_the_recovered_checkpoint_survives_a_crash_of_the_next_write(tmp_path, monkeypatch):
    write_checkpoint(tmp_path / "ck", {"epoch": 4})
    (tmp_path / "ck").rename(tmp_path / "ck.old")                        # crash between the two renames
    real_rename = os.rename

    def crash(src, dst):                                                 # the next write dies at its rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path / "ck", {"epoch": 5})
    monkeypatch.setattr(os, "rename", real_rename)
    assert read_checkpoint(tmp_path / "ck")["epoch"] == 4                # ck.old was not deleted first


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    rng, py, gen = np.random.default_rng(3), random.Random(3), torch.Generator().manual_seed(3)
    write_checkpoint(tmp_path / "ck", {"rng": capture_rng(rng, py, gen)})
    expected = (rng.random(4), py.random(), torch.rand(2, generator=gen), torch.rand(2))
    rng2, py2, gen2 = np.random.default_rng(99), random.Random(99), torch.Generator().manual_seed(99)
    restore_rng(read_checkpoint(tmp_path / "ck")["rng"], rng2, py2, gen2)
    got = (rng2.random(4), py2.random(), torch.rand(2, generator=gen2), torch.rand(2))
    assert np.array_equal(expected[0], got[0]) and expected[1] == got[1]
    assert torch.equal(expected[2], got[2]) and torch.equal(expected[3], got[3])
