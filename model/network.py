"""The DeepEmoCluster network: chunk encoder, optional temporal module, cluster and attribute heads.

Input: chunks [B*C, 1, m, 128] (C consecutive chunks per sentence, m frames, 128 mel bands).
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch import nn

from model.config import TEMPORAL_MODULES   # noqa: F401 - the temporal variants this module builds

EMBED_DIM = 256
# (out_channels, stride) of the seven 3x3 conv layers at width 1.0
CONV_LAYERS = ((32, 1), (32, 1), (64, 2), (64, 2), (128, 2), (128, 2), (128, 2))


def conv_output_size(chunk_frames: int, n_mels: int = 128) -> tuple[int, int]:
    """(time, frequency) size of the conv stack's output for an m x n_mels input."""
    t, f = chunk_frames, n_mels
    for _, stride in CONV_LAYERS:
        t, f = (t - 1) // stride + 1, (f - 1) // stride + 1
    return t, f


class Output(NamedTuple):
    embedding: torch.Tensor   # [N, 256] chunk embeddings (encoder output; the triplet loss uses these)
    features: torch.Tensor    # [N, 256] input of the cluster top layer (what k-means clusters)
    logits: torch.Tensor      # [N, K] cluster logits
    attributes: torch.Tensor  # [N, A] normalised attribute predictions


class Encoder(nn.Module):
    """Seven conv-BN-ReLU layers, then Linear -> 256 + ReLU (+ dropout): one embedding per chunk."""

    def __init__(self, chunk_frames: int, width: float = 1.0, dropout: float = 0.0, n_mels: int = 128):
        super().__init__()
        layers, cin = [], 1
        for cout, stride in CONV_LAYERS:
            cout = max(4, int(round(cout * width)))
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.conv = nn.Sequential(*layers)
        t, f = conv_output_size(chunk_frames, n_mels)
        self.fc = nn.Sequential(nn.Linear(cin * t * f, EMBED_DIM), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc(self.conv(x).flatten(1)))


class TemporalCNN(nn.Module):
    """The C x 256 map of a sentence as a one-channel image through two 5x5 conv layers."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, 1, 2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 1, 5, 1, 2), nn.BatchNorm2d(1), nn.ReLU(inplace=True),
            nn.Dropout(0.3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, 256]
        return self.net(x.unsqueeze(1)).squeeze(1)


class TemporalGRU(nn.Module):
    """One bidirectional GRU layer, 128 hidden per direction (no dropout: it is a no-op with one layer)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(EMBED_DIM, EMBED_DIM // 2, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


class TemporalTransformer(nn.Module):
    """Sinusoidal positions + one Transformer encoder layer (d 256, 1 head, feed-forward 256)."""

    def __init__(self, max_len: int = 512):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, EMBED_DIM, 2) * (-math.log(10000.0) / EMBED_DIM))
        pe = torch.zeros(max_len, EMBED_DIM)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)
        self.layer = nn.TransformerEncoderLayer(EMBED_DIM, 1, EMBED_DIM, 0.3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x + self.pe[: x.shape[1]])


class DeepEmoCluster(nn.Module):
    def __init__(self, temporal: str = "none", num_clusters: int = 10, chunk_frames: int = 62,
                 chunks_per_sentence: int = 11, num_attributes: int = 1, width: float = 1.0,
                 dropout: float = 0.5, n_mels: int = 128):
        super().__init__()
        if temporal not in TEMPORAL_MODULES:
            raise ValueError(f"temporal must be one of {TEMPORAL_MODULES}, got {temporal!r}")
        self.temporal_kind, self.chunks_per_sentence = temporal, chunks_per_sentence
        # the reference's vanilla model has no dropout after the embedding; the temporal ones do
        self.encoder = Encoder(chunk_frames, width, dropout if temporal != "none" else 0.0, n_mels)
        self.temporal = {"gru": TemporalGRU, "cnn": TemporalCNN, "transformer": TemporalTransformer}.get(
            temporal, nn.Identity)()
        self.classifier = nn.Sequential(nn.Linear(EMBED_DIM, EMBED_DIM), nn.ReLU(inplace=True))
        self.top_layer = nn.Linear(EMBED_DIM, num_clusters)
        self.regressor = nn.Sequential(nn.Linear(EMBED_DIM, EMBED_DIM), nn.ReLU(inplace=True))
        self.attribute_head = nn.Linear(EMBED_DIM, num_attributes)
        self.apply(_init_weights)

    def reset_top_layer(self) -> None:
        """Re-create the cluster top layer: cluster ids mean something new after every k-means."""
        _init_weights(self.top_layer)

    def forward(self, x: torch.Tensor) -> Output:
        emb = self.encoder(x)
        h = emb
        if not isinstance(self.temporal, nn.Identity):
            n = x.shape[0]
            h = self.temporal(emb.view(n // self.chunks_per_sentence, self.chunks_per_sentence, -1))
            h = h.reshape(n, -1)
        feats = self.classifier(h)
        return Output(emb, feats, self.top_layer(feats), self.attribute_head(self.regressor(h)))


def inference_copy(network: DeepEmoCluster) -> DeepEmoCluster:
    """An eval-mode copy of `network` with each encoder BatchNorm folded into its convolution.

    The same function as `network.eval()` (up to rounding) with one pass less over every conv output;
    for no-grad passes (embedding for k-means, validation). `network` itself is left untouched."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(network).eval()
    layers, fused = list(net.encoder.conv), []
    for i in range(0, len(layers), 3):  # (Conv2d, BatchNorm2d, ReLU) triples
        conv, bn, relu = layers[i:i + 3]
        folded = fuse_conv_bn_eval(conv, bn)
        if conv.weight.is_contiguous(memory_format=torch.channels_last):
            folded = folded.to(memory_format=torch.channels_last)
        fused += [folded, relu]
    net.encoder.conv = nn.Sequential(*fused)
    return net


def _init_weights(m: nn.Module) -> None:
    """The reference's initialisation: conv N(0, sqrt(2/(k*k*out))), BN 1/0, linear N(0, 0.01), biases 0."""
    if isinstance(m, nn.Conv2d):
        n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.01)
        nn.init.zeros_(m.bias)
