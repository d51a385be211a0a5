"""Transfer: start a training run from a trained model file (`init_model`).

The encoder is always taken from the model file (its shape must match: same width and chunk_frames);
the temporal module, the cluster classifier and the attribute regressor are taken where every tensor
matches in shape; the attribute head row by row for the attributes both predict. The cluster top
layer is re-created every epoch and is never loaded. A store with other features than the model's
is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.errors import UserError
from model.features import FeatureSpec
from model.model_file import load_model
from model.network import DeepEmoCluster

# state_dict prefixes of the parts that are loaded whole when every tensor's shape matches
PARTS = ("temporal.", "classifier.", "regressor.")


@dataclass
class InitReport:
    """What `init_network` loaded and what it left fresh."""
    path: str
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One log line: `init_model PATH: loaded ...; fresh ...`."""
        text = f"init_model {self.path}: loaded {', '.join(self.loaded)}; fresh {', '.join(self.fresh) or 'nothing'}"
        return text + "".join(f"; {n}" for n in self.notes)

    def to_dict(self) -> dict:
        return {"path": self.path, "loaded": list(self.loaded), "fresh": list(self.fresh), "notes": list(self.notes)}


def check_features(model_path: str | Path, model_spec: dict, store) -> None:
    """UserError unless the store's features are computed the way the initial model's were."""
    model_kind = FeatureSpec.from_dict(model_spec).kind
    store_kind = FeatureSpec.from_dict(store.feature_spec).kind
    if model_kind != store_kind:
        hint = " --norm-terms DIR" if model_kind == "reference" else ""
        raise UserError(f"init_model {model_path} was trained on {model_kind!r} features {dict(model_spec)}, but the "
                        f"store {store.path} holds {store_kind!r} features {dict(store.feature_spec)}; prepare a "
                        f"store with `python -m tuner prepare CORPUS --features {model_kind}{hint}`")


def init_network(network: DeepEmoCluster, attributes: list[str], path: str | Path, store,
                 chunk_frames: int) -> InitReport:
    """Copy the matching parts of the model file at `path` into `network`, a network for chunks of
    `chunk_frames` frames (see the module doc)."""
    source, info = load_model(path)
    check_features(path, info.feature_spec, store)
    report = InitReport(str(path))
    src, dst = source.state_dict(), network.state_dict()
    enc = {k: v for k, v in src.items() if k.startswith("encoder.")}
    if any(k not in dst or dst[k].shape != v.shape for k, v in enc.items()) or len(enc) != sum(
            k.startswith("encoder.") for k in dst) or info.config.chunk_frames != chunk_frames:   # shapes may fit
        cfg = info.config
        raise UserError(f"init_model {path}: its encoder (width={cfg.width}, chunk_frames={cfg.chunk_frames}) does "
                        "not fit this run's; set width and chunk_frames to the model's")
    new = dict(enc)
    report.loaded.append("encoder")
    for part in PARTS:
        theirs = {k: v for k, v in src.items() if k.startswith(part)}
        ours = {k: v for k, v in dst.items() if k.startswith(part)}
        name = part.rstrip(".")
        if not ours:
            continue
        if theirs.keys() == ours.keys() and all(theirs[k].shape == ours[k].shape for k in ours):
            new.update(theirs)
            report.loaded.append(name)
        else:
            report.fresh.append(f"temporal ({network.temporal_kind}; the model's is {info.config.temporal})"
                                if part == "temporal." else name)
    rows = [(i, list(info.config.attributes).index(a)) for i, a in enumerate(attributes)
            if a in info.config.attributes]
    if rows:
        weight, bias = dst["attribute_head.weight"].clone(), dst["attribute_head.bias"].clone()
        for ours_i, theirs_i in rows:
            weight[ours_i], bias[ours_i] = src["attribute_head.weight"][theirs_i], src["attribute_head.bias"][theirs_i]
        new.update({"attribute_head.weight": weight, "attribute_head.bias": bias})
        taken = [attributes[i] for i, _ in rows]
        report.loaded.append(f"attribute_head ({', '.join(taken)})")
        left = [a for a in attributes if a not in taken]
        if left:
            report.fresh.append(f"attribute_head ({', '.join(left)})")
    else:
        report.fresh.append("attribute_head")
    report.fresh.append("top_layer (re-created every epoch)")
    network.load_state_dict(new, strict=False)
    terms = store.norm_terms
    if not (np.allclose(np.asarray(terms.mean).reshape(-1), info.norm_mean.reshape(-1), rtol=1e-4, atol=1e-5)
            and np.allclose(np.asarray(terms.std).reshape(-1), info.norm_std.reshape(-1), rtol=1e-4, atol=1e-5)):
        report.notes.append("note: the store's frames were normalised with other terms than the model's "
                            "(prepare with the model's terms, e.g. --norm-terms, to feed it what it was trained on)")
    return report
