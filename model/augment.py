"""SpecAugment-style masking of training chunks (torchaudio FrequencyMasking / TimeMasking).

Applied by the Trainer to the chunks of its training passes only, on the training device; never to
the embedding pass for k-means, validation or prediction. Masked values become 0, the mean of the
z-normalised features. The masks are drawn from torch's global generator, which the Trainer seeds
from the config and a checkpoint saves and restores, so a run is reproducible and resumable.
"""
from __future__ import annotations

import torch
import torchaudio.transforms as T
from torch import nn


class SpecAugment(nn.Module):
    """`freq_masks` masks of up to `freq_width` mel bands and `time_masks` masks of up to
    `time_width` frames, each chunk drawing its own; a chunk is augmented with probability `prob`."""

    def __init__(self, prob: float, freq_masks: int, freq_width: int, time_masks: int, time_width: int):
        super().__init__()
        self.prob = prob
        self.masks = nn.ModuleList([T.FrequencyMasking(freq_width, iid_masks=True) for _ in range(freq_masks)]
                                   + [T.TimeMasking(time_width, iid_masks=True) for _ in range(time_masks)])

    @classmethod
    def from_config(cls, config) -> "SpecAugment | None":
        """The augmentation a TrainConfig asks for, or None when it is off (`specaug_prob` 0 or no masks)."""
        if config.specaug_prob == 0 or config.specaug_freq_masks + config.specaug_time_masks == 0:
            return None
        return cls(config.specaug_prob, config.specaug_freq_masks, config.specaug_freq_width,
                   config.specaug_time_masks, config.specaug_time_width)

    @torch.no_grad()
    def forward(self, chunks: torch.Tensor) -> torch.Tensor:
        """Chunks [N, 1, m, n_mels] (time, frequency) -> masked chunks of the same shape and layout."""
        spec = chunks.transpose(-1, -2)                      # torchaudio's (..., freq, time)
        masked = spec
        for mask in self.masks:
            masked = mask(masked)
        if self.prob < 1:
            chosen = torch.rand(chunks.shape[0], device=chunks.device) < self.prob
            masked = torch.where(chosen.view(-1, 1, 1, 1), masked, spec)
        out = masked.transpose(-1, -2)
        if chunks.is_contiguous(memory_format=torch.channels_last):
            return out.contiguous(memory_format=torch.channels_last)
        return out.contiguous()
