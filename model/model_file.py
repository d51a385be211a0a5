"""The model file: network weights plus everything needed to predict from audio, loadable without pickle code.

Saved with torch.save as a dict of tensors, numbers, strings, lists and dicts only, and loaded with
torch.load(weights_only=True), so a model file can never run code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.atomic_files import atomic_write
from model.config import TrainConfig
from model.errors import UserError
from model.network import DeepEmoCluster
from model.safe_load import load_torch

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
    atomic_write(path, lambda f: torch.save(payload, f))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[DeepEmoCluster, ModelInfo]:
    """Load a model file (weights_only: no code is unpickled); the network is in eval mode."""
    path = Path(path)
    hint = "; expected a model file written by `python -m tuner train` or `import-reference`"
    payload = load_torch(path, "model file", hint, map_location=device)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a {FORMAT} file (convert published checkpoints with "
                        "`python -m tuner import-reference`)")
    config = TrainConfig.from_dict(payload.get("config"), source=f"{path}:config")
    try:
        info = ModelInfo(config, dict(payload["feature_spec"]), payload["norm_mean"].cpu().numpy(),
                         payload["norm_std"].cpu().numpy(),
                         {k: (float(v[0]), float(v[1])) for k, v in payload["label_terms"].items()},
                         payload.get("metadata", {}))
        state = dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UserError(f"{path}: damaged model file (its {exc} entry is missing or of the wrong type)") from None
    network = build_network(config, int(info.norm_mean.shape[0]))
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"{path}: its weights do not match its own config (temporal={config.temporal}, "
                        f"num_clusters={config.num_clusters}, width={config.width}, "
                        f"attributes={config.attributes}): {detail}") from None
    network.to(device).eval()
    return network, info
