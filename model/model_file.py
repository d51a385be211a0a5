"""The model file: network weights plus everything needed to predict from audio, loadable without pickle code.

Saved with torch.save as a dict of tensors, numbers, strings, lists and dicts only, and loaded with
torch.load(weights_only=True), so a model file can never run code.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import TrainConfig
from model.errors import UserError
from model.network import DeepEmoCluster

FORMAT = "deepemocluster-model/1"


@dataclass
class ModelInfo:
    config: TrainConfig                             # the run's config (network shape, C, m, attributes)
    feature_spec: dict[str, Any]                    # how features were computed (model.features)
    norm_mean: np.ndarray                           # [n_mels] feature z-normalisation terms
    norm_std: np.ndarray
    label_terms: dict[str, tuple[float, float]]     # attribute -> (mean, std) of the 1..7 labels
    metadata: dict[str, Any]                        # free-form: epoch, metrics, source


def build_network(config: TrainConfig, n_mels: int = 128) -> DeepEmoCluster:
    """The network a config describes."""
    return DeepEmoCluster(config.temporal, config.num_clusters, config.chunk_frames,
                          config.chunks_per_sentence, len(config.attributes), config.width,
                          config.dropout, n_mels)


def save_model(path: str | Path, network: DeepEmoCluster, info: ModelInfo) -> None:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": info.config.to_dict(),
        "feature_spec": dict(info.feature_spec),
        "norm_mean": torch.as_tensor(np.asarray(info.norm_mean, dtype=np.float32)),
        "norm_std": torch.as_tensor(np.asarray(info.norm_std, dtype=np.float32)),
        "label_terms": {k: [float(m), float(s)] for k, (m, s) in info.label_terms.items()},
        "metadata": info.metadata,
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[DeepEmoCluster, ModelInfo]:
    """Load a model file (weights_only: no code is unpickled); the network is in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that needs code
        raise UserError(f"{path}: not a readable model file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a {FORMAT} file (convert published checkpoints with "
                        "`python -m tuner import-reference`)")
    config = TrainConfig.from_dict(payload["config"], source=f"{path}:config")
    info = ModelInfo(config, payload["feature_spec"], payload["norm_mean"].cpu().numpy(),
                     payload["norm_std"].cpu().numpy(),
                     {k: (float(v[0]), float(v[1])) for k, v in payload["label_terms"].items()},
                     payload.get("metadata", {}))
    network = build_network(config, int(info.norm_mean.shape[0]))
    network.load_state_dict(payload["state_dict"])
    network.to(device).eval()
    return network, info
