"""benchmarks/search_efficiency.py: the rank correlation per epoch and the epochs-to-target count."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from search_efficiency import best_within, epochs_to_target, spearman_by_epoch  # noqa: E402


def test_rank_correlation_per_epoch_current_and_best_so_far():
    curves = [[0.3, 0.1, 0.5],   # final best 0.5: peaked early, dipped, recovered
              [0.1, 0.2, 0.3],   # 0.3
              [0.2, 0.3, 0.1],   # 0.3 (its best so far stays 0.3 at epoch 3)
              [0.0, 0.0, 0.05]]  # 0.05
    rows = spearman_by_epoch(curves)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["current"] == rows[0]["best_so_far"]  # the same at the first epoch
    assert rows[1]["current"] < rows[1]["best_so_far"]     # the dip at epoch 2 misleads `current` only
    assert rows[2]["best_so_far"] == pytest.approx(1.0)    # best so far at the last epoch is the final best


def test_epochs_to_target_counts_epochs_in_finishing_order():
    a = [{"val_ccc_mean": 0.1, "timestamp": 10, "time_total_s": 1}, {"val_ccc_mean": 0.4, "timestamp": 30,
                                                                     "time_total_s": 2}]
    b = [{"val_ccc_mean": 0.2, "timestamp": 20, "time_total_s": 1}, {"val_ccc_mean": None, "timestamp": 25,
                                                                     "time_total_s": 2}]
    assert epochs_to_target([a, b], 0.35) == (4, 4, 0.4)   # a's second epoch finished last
    assert epochs_to_target([a, b], 0.2) == (2, 4, 0.4)
    assert epochs_to_target([a, b], 0.5)[0] is None        # never reached
    assert [best_within([a, b], n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.2, 0.4]   # the None row counts as an epoch
