"""Import the published reference DeepEmoCluster checkpoints (vanilla, one attribute, C = 11, m = 62).

A reference checkpoint is a dict {'arch': 'vgg16', 'state_dict': {...}} saved from a model whose conv
stack was wrapped in DataParallel (keys `cnn_features.module.N.*`, `cnn_out.module.0.*`). Its layers
map one to one onto DeepEmoCluster(temporal='none'): the conv/BN layers sit at the same positions of
the Sequential, and the conv output [N, 128, 2, 4] is flattened in the same (C-order) way.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from model.config import TrainConfig
from model.corpora import ATTRIBUTES
from model.errors import UserError
from model.features import FeatureSpec, load_reference_norm_terms
from model.model_file import ModelInfo, build_network
from model.network import DeepEmoCluster
from model.safe_load import load_torch

REFERENCE_CHUNK_FRAMES = 62      # m of the published models
REFERENCE_CHUNKS = 11            # C of the published models
REFERENCE_EPOCHS = 50
REFERENCE_BATCH = 64

# reference key prefix (after removing DataParallel's ".module") -> DeepEmoCluster key prefix
KEY_PREFIXES = (
    ("cnn_features.", "encoder.conv."),
    ("cnn_out.", "encoder.fc."),
    ("classifier.", "classifier."),
    ("emo_regressor.", "regressor."),
    ("top_layer_class.", "top_layer."),
    ("top_layer_attri.", "attribute_head."),
)


def reference_key(key: str) -> str | None:
    """The DeepEmoCluster state_dict name of a reference key, or None when it has no counterpart."""
    key = key.replace(".module.", ".")
    if key.startswith("module."):
        key = key[len("module."):]
    for old, new in KEY_PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def reference_name(name: str) -> str:
    """The published checkpoints' key for a DeepEmoCluster state_dict name (inverse of reference_key)."""
    for old, new in KEY_PREFIXES:
        if name.startswith(new):
            wrapped = old + "module." if old in ("cnn_features.", "cnn_out.") else old
            return wrapped + name[len(new):]
    return name


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of a reference checkpoint file, on the CPU (weights_only: no code is unpickled)."""
    path = Path(path)
    payload = load_torch(path, "PyTorch checkpoint")
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        found = sorted(map(str, payload))[:10] if isinstance(payload, dict) else type(payload).__name__
        raise UserError(f"{path}: not a reference DeepEmoCluster checkpoint: expected a dict with "
                        f"'arch' and 'state_dict', found {found}")
    state = payload["state_dict"]
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: state_dict entries that are not named tensors: {', '.join(bad[:5])}")
    if payload.get("arch", "vgg16") != "vgg16":
        raise UserError(f"{path}: arch is {payload['arch']!r}; only the reference's 'vgg16' is supported")
    return dict(state)


def reference_config(num_clusters: int, attribute: str = "act") -> TrainConfig:
    """The TrainConfig of a published model: vanilla, m = 62, C = 11, one attribute, no dropout."""
    return TrainConfig(temporal="none", num_clusters=num_clusters, chunk_frames=REFERENCE_CHUNK_FRAMES,
                       chunks_per_sentence=REFERENCE_CHUNKS, attributes=[attribute], width=1.0, dropout=0.0,
                       epochs=REFERENCE_EPOCHS, batch_size=REFERENCE_BATCH)


def reference_network(state: dict[str, torch.Tensor], source: str = "checkpoint") -> DeepEmoCluster:
    """DeepEmoCluster(temporal='none') carrying the reference weights; every tensor checked by name and shape."""
    if "top_layer_class.weight" not in state or state["top_layer_class.weight"].dim() != 2:
        raise UserError(f"{source}: missing key 'top_layer_class.weight' (a [K, 256] tensor): "
                        "cannot tell the number of clusters K")
    num_clusters = int(state["top_layer_class.weight"].shape[0])
    if num_clusters < 2:
        raise UserError(f"{source}: top_layer_class.weight has {num_clusters} row(s); expected K >= 2 clusters")
    network = build_network(reference_config(num_clusters))
    target = network.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected, wrong_shape, misshaped = [], [], set()
    for key, value in state.items():
        name = reference_key(key)
        if name is None or name not in target:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(target[name].shape):
            wrong_shape.append(f"{key} {tuple(value.shape)} (expected {tuple(target[name].shape)})")
            misshaped.add(name)
        else:
            mapped[name] = value.to(target[name].dtype)
    missing = sorted(set(target) - set(mapped) - misshaped)
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(map(reference_name, missing)))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(sorted(unexpected)))
    if wrong_shape:
        problems.append("wrong shapes: " + ", ".join(wrong_shape))
    if problems:
        raise UserError(f"{source}: does not match the reference DeepEmoCluster (vanilla, m=62, "
                        f"C=11, K={num_clusters}): " + "; ".join(problems))
    network.load_state_dict(mapped, strict=True)
    return network.eval()


def attribute_from_filename(path: str | Path) -> str | None:
    """'act', 'dom' or 'val' when the file is named like the published ones (`..._Act.pth.tar`)."""
    match = re.search(r"_(act|dom|val)\.pth(\.tar)?$", Path(path).name, re.IGNORECASE)
    return match.group(1).lower() if match else None


def import_reference(checkpoint: str | Path, norm_terms_dir: str | Path,
                     attribute: str) -> tuple[DeepEmoCluster, ModelInfo]:
    """A published checkpoint plus its NormTerm folder as a network and the ModelInfo of a model file."""
    attribute = attribute.lower() if isinstance(attribute, str) else attribute
    if attribute not in ATTRIBUTES:
        raise UserError(f"attribute {attribute!r} is invalid: expected one of {', '.join(ATTRIBUTES)}")
    feature_terms, label_terms = load_reference_norm_terms(norm_terms_dir)
    state = read_reference_checkpoint(checkpoint)
    network = reference_network(state, str(checkpoint))
    info = ModelInfo(
        config=reference_config(network.top_layer.out_features, attribute),
        feature_spec=FeatureSpec(kind="reference").to_dict(),
        norm_mean=feature_terms.mean,
        norm_std=feature_terms.std,
        label_terms={attribute: label_terms[attribute]},
        metadata={"source": "reference", "checkpoint": str(Path(checkpoint).name),
                  "norm_terms": str(norm_terms_dir), "attribute": attribute},
    )
    return network, info
