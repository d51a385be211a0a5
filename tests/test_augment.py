"""SpecAugment: masks on training chunks only, reproducible per seed, config validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.augment import SpecAugment
from model.config import TrainConfig
from model.errors import ConfigError
from model.trainer import Trainer
from test_trainer import _comparable, config

AUG = dict(specaug_prob=1.0, specaug_freq_masks=2, specaug_freq_width=20, specaug_time_masks=1,
           specaug_time_width=6)


def test_masks_are_zero_bands_and_frames_drawn_per_chunk():
    x = torch.randn(64, 1, 16, 128) + 5          # no value is 0 before masking
    torch.manual_seed(0)
    out = SpecAugment(1.0, 2, 20, 1, 6)(x)
    assert out.shape == x.shape
    zero = out == 0
    changed = out != x
    assert torch.equal(zero, changed)            # masking only ever writes 0
    band = zero.all(dim=2).squeeze(1)            # [N, 128] bands masked over the whole chunk
    frame = zero.all(dim=3).squeeze(1)           # [N, 16] frames masked over every band
    assert 0 < band.sum(1).max() <= 2 * 19 and frame.sum(1).max() <= 5
    assert (zero.squeeze(1) == (band[:, None, :] | frame[:, :, None])).all()   # nothing else is masked
    assert len({tuple(b.nonzero().flatten().tolist()) for b in band}) > 10     # each chunk its own masks


def test_same_seed_same_masks_and_probability_selects_chunks():
    x = torch.randn(200, 1, 16, 128) + 5
    aug = SpecAugment(0.5, 1, 30, 1, 8)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    torch.manual_seed(4)
    c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    touched = (a != x).flatten(1).any(1).float().mean().item()
    assert 0.3 < touched < 0.7                   # about half the chunks (a mask may draw width 0)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert aug(cl).is_contiguous(memory_format=torch.channels_last)


def test_off_by_default_and_config_validation():
    assert SpecAugment.from_config(TrainConfig()) is None
    assert SpecAugment.from_config(TrainConfig(specaug_prob=0.5, specaug_freq_masks=0, specaug_time_masks=0)) is None
    assert isinstance(SpecAugment.from_config(TrainConfig(specaug_prob=0.5)), SpecAugment)
    for override, words in [("specaug_prob=1.5", ["specaug_prob", "1.5", "[0, 1]"]),
                            ("specaug_freq_masks=-1", ["specaug_freq_masks", ">= 0"]),
                            ("specaug_freq_width=0", ["specaug_freq_width", "[1, 128]"]),
                            ("specaug_time_width=70", ["specaug_time_width", "chunk_frames=62"])]:
        with pytest.raises(ConfigError) as err:
            TrainConfig.load(None, [override])
        assert all(w in str(err.value) for w in words), str(err.value)


def test_trainer_masks_training_chunks_only_and_is_reproducible(tiny_store):
    trainer = Trainer(config(epochs=1, **AUG), tiny_store)
    seen = []   # (training?, fraction of exact zeros) of every network input
    trainer.network.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, (args[0] == 0).float().mean().item())))
    first = trainer.run_epoch()
    train_zeros = [z for training, z in seen if training]
    eval_zeros = [z for training, z in seen if not training]
    assert train_zeros and eval_zeros
    assert min(train_zeros) > 0.05               # every training batch is masked
    assert max(eval_zeros) < 0.01                # k-means embedding and validation see the plain chunks

    again = Trainer(config(epochs=1, **AUG), tiny_store).run_epoch()
    assert _comparable(again) == _comparable(first)
    plain = Trainer(config(epochs=1), tiny_store).run_epoch()
    assert _comparable(plain) != _comparable(first)
    other_seed = Trainer(config(epochs=1, seed=1, **AUG), tiny_store)
    assert np.isfinite(other_seed.run_epoch()["loss_total"])


def test_augmented_run_resumes_exactly(tiny_store, tmp_path):
    cfg = config(**AUG)
    straight = Trainer(cfg, tiny_store)
    expected = [straight.run_epoch() for _ in range(2)]
    first = Trainer(cfg, tiny_store)
    first.run_epoch()
    first.save_checkpoint(tmp_path / "ck")
    resumed = Trainer(cfg, tiny_store)
    resumed.load_checkpoint(tmp_path / "ck")
    assert _comparable(resumed.run_epoch()) == _comparable(expected[1])
