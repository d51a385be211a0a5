"""The DeepEmoCluster trainer: deep clustering + attribute regression, every temporal variant, SSL, resumable.

One epoch (docs/training.md has the full description):
1. SSL stage, when there is an unlabeled pool: embed the pool's chunks, k-means them, train the
   clustering path only (cross-entropy on the pseudo-labels, + the triplet loss for `triplet`) with
   sentence-level uniform sampling.
2. Labeled stage: embed the labeled Train chunks, k-means, reset the cluster top layer, train with
   cross-entropy + sum over attributes of (1 - CCC) (+ triplet_weight * triplet loss).
3. NMI against the previous epoch's labeled assignments, validation CCC per attribute at sentence
   level, and the best model (highest mean validation CCC) kept.
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from model import checkpoint as ckpt
from model.augment import SpecAugment
from model.chunking import chunk_frames, chunk_starts, make_chunks
from model.clustering import KMeansResult, kmeans
from model.config import TrainConfig
from model.devices import resolve_device, resolve_precision, usable_cpus
from model.errors import UserError
from model.folds import DataSplit
from model.losses import ccc_loss, triplet_loss
from model.metrics import beats, ccc, nmi, plain
from model.model_file import ModelInfo, build_network, save_model
from model.network import inference_copy
from model.reported_metrics import unreported
from model.sampling import sample_chunks, sample_sentences, split_labeled
from model.transfer import init_network

if TYPE_CHECKING:   # imported in __init__ (the store module is not needed to import the trainer)
    from model.store import FeatureStore

STAGE_SSL, STAGE_LABELED = 1, 2
# config keys that may differ between a checkpoint and the run that resumes it (no effect on results)
RESUMABLE_CHANGES = ("epochs", "num_threads", "device", "embed_batch_chunks")
# (metric, mode) that picks the best epoch (best_model.pt) unless a search trial sets its metric (`selection`)
SELECTION = ("val_ccc_mean", "max")


class TrainingDiverged(UserError):
    """The loss or the predictions became NaN/inf: the run stops; the last good checkpoint stays."""


def stage_seed(seed: int, epoch: int, stage: int) -> int:
    """The k-means seed of one stage of one epoch: a fixed function of (config seed, epoch, stage)."""
    return int(np.random.SeedSequence([seed, epoch, stage]).generate_state(1)[0] & 0x7FFFFFFF)


class Trainer:
    """Trains one DeepEmoCluster model on a feature store; see the module docstring."""

    def __init__(self, config: TrainConfig, store: FeatureStore | str | Path, split: DataSplit | None = None):
        """`split`: the labeled utterances to train and validate on (a CV fold); default: the store's
        Train and Validation splits."""
        from model.store import FeatureStore

        self.config = config
        self.split = split
        self.store = (store if isinstance(store, FeatureStore) else FeatureStore.open(store)).verify()
        self.device = resolve_device(config.device)
        torch.set_num_threads(config.num_threads or usable_cpus())
        self.amp_dtype = resolve_precision(config.precision, self.device)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        random.seed(config.seed)
        self.py_rng = random              # python's global generator (libraries may draw from it)
        self.triplet_generator = torch.Generator().manual_seed(config.seed)
        self._select_data()

        self.n_mels = int(self.store.frames.shape[1])
        self.network = build_network(config, self.n_mels).to(self.device)
        self.init_report = None
        if config.init_model:
            self.init_report = init_network(self.network, list(config.attributes), config.init_model, self.store,
                                            config.chunk_frames)
            print(self.init_report.line(), file=sys.stderr, flush=True)
        if config.channels_last:
            self.network.encoder.conv.to(memory_format=torch.channels_last)
        self.augment = SpecAugment.from_config(config)   # training chunks only (None = off)
        self.attribute_weights = torch.tensor(config.loss_weights(), device=self.device)
        self.optimizers = self._make_optimizers()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.epoch = 0
        self.prev_assignments: np.ndarray | None = None
        self.best_metric = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_metrics: dict[str, Any] | None = None
        self.selects_best = True   # False for a CV fold: its CVTrainer picks the best epoch (the folds' mean)
        self.selection = SELECTION   # (metric, mode) that picks the best epoch; a search trial sets its own
        self.history: list[dict[str, Any]] = []
        self.failed: str | None = None

    # ---- data ----------------------------------------------------------------------------
    def _select_data(self) -> None:
        """Labeled Train subset, its normalised labels, the unlabeled pool and the validation set."""
        from model.store import label_terms

        cfg, store = self.config, self.store
        C, attrs = cfg.chunks_per_sentence, list(cfg.attributes)
        if self.split is not None:
            train, valid, val_name = self.split.train, self.split.validation, self.split.name
        else:
            train, valid, val_name = self._store_splits()
        if len(train) == 0:
            raise UserError(f"{store.path}: the Train split holds no labeled utterances")
        if len(valid) == 0:
            raise UserError(f"{store.path}: the {val_name} split holds no labeled utterances")

        split_rng = np.random.default_rng([cfg.seed, 0x5EED])  # data selection: fixed by the seed
        dropped = np.zeros(0, dtype=np.int64)
        if cfg.labeled_ratio < 1:
            keep = split_labeled(store.index["speaker"][train], cfg.labeled_ratio, split_rng)
            train, dropped = train[keep], train[~keep]
        labels = np.asarray(store.labels(train, attrs), dtype=np.float64)
        self.label_terms = label_terms(labels, attrs)   # over the labeled utterances this run keeps
        for a in attrs:
            if a not in self.label_terms:
                raise UserError(f"attribute {a!r} has no labels in the Train split of {store.path} "
                                f"({len(train)} labeled utterances kept); remove it from `attributes`")
        if len(train) * C < cfg.num_clusters:
            raise UserError(f"the labeled training subset has {len(train)} utterances x C={C} = {len(train) * C} "
                            f"chunks, fewer than num_clusters={cfg.num_clusters}; lower num_clusters"
                            + (f" or raise labeled_ratio={cfg.labeled_ratio}" if cfg.labeled_ratio < 1 else
                               " or use a store with more Train utterances"))
        means = np.array([self.label_terms[a][0] for a in attrs])
        stds = np.array([self.label_terms[a][1] for a in attrs])
        self.train_ids = train
        self.train_labels = ((labels - means) / stds).astype(np.float32)   # z-normalised, NaN kept
        self.val_name, self.val_ids = val_name, valid
        self.val_labels = np.asarray(store.labels(valid, attrs), dtype=np.float64)

        pool = np.zeros(0, dtype=np.int64)
        if cfg.unlabeled_pool != 0:
            # the store's pool (unlabeled audio + Train utterances without labels; never Validation/Test)
            # plus the Train utterances whose labels labeled_ratio dropped
            pool = np.unique(np.concatenate([np.asarray(store.pool_ids(), dtype=np.int64), dropped]))
            if cfg.unlabeled_pool is not None and len(pool) > cfg.unlabeled_pool:
                pool = np.sort(split_rng.choice(pool, cfg.unlabeled_pool, replace=False))
            if 0 < len(pool) * C < cfg.num_clusters:
                raise UserError(f"the unlabeled pool has {len(pool)} utterances x C={C} = {len(pool) * C} chunks, "
                                f"fewer than num_clusters={cfg.num_clusters}; set unlabeled_pool=0 to train "
                                "without SSL or lower num_clusters")
        self.pool_ids = pool

    def _store_splits(self) -> tuple[np.ndarray, np.ndarray, str]:
        """The labeled utterances of the store's Train and Validation splits, and the validation split's name."""
        store = self.store
        splits, roles = list(store.splits), store.roles
        train_name, val_name = roles["train"], roles["validation"]
        if train_name is None:
            raise UserError(f"{store.path}: the store has no Train split (splits: {', '.join(splits) or 'none'})")
        if val_name is None:
            raise UserError(f"{store.path}: the store has no Validation (or Development) split "
                            f"(splits: {', '.join(splits) or 'none'}); training needs one to pick the best model")
        return (np.asarray(store.ids(train_name, labeled=True), dtype=np.int64),
                np.asarray(store.ids(val_name, labeled=True), dtype=np.int64), val_name)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def _sentence_chunks(self, ids: np.ndarray) -> torch.Tensor:
        """All C chunks of the utterances `ids`, on the device."""
        return self._to_device(make_chunks(self.store, ids, self.config.chunk_frames, self.config.chunks_per_sentence))

    def _single_chunks(self, ids: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        """Chunk `positions[i]` of utterance `ids[i]` (the same frames make_chunks cuts), on the device."""
        m, C = self.config.chunk_frames, self.config.chunks_per_sentence
        rows = self.store.index[ids]
        lengths = rows["length"].astype(np.int64)
        starts = chunk_starts(lengths, m, C)[np.arange(len(ids)), positions]
        x = chunk_frames(self.store.frames, rows["offset"].astype(np.int64) + starts,
                         np.minimum(lengths - starts, m), m, 1)
        return self._to_device(x)

    # ---- pieces of an epoch --------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @contextlib.contextmanager
    def _oom_guard(self, what: str):
        """Turn a CUDA out-of-memory error into a UserError naming the config that caused it."""
        try:
            yield
        except torch.cuda.OutOfMemoryError:
            cfg = self.config
            raise UserError(f"out of GPU memory while {what} (batch_size={cfg.batch_size}, "
                            f"chunk_frames m={cfg.chunk_frames}, chunks_per_sentence C={cfg.chunks_per_sentence}, "
                            f"width={cfg.width}, embed_batch_chunks={cfg.embed_batch_chunks}, "
                            f"temporal={cfg.temporal}); lower batch_size, width or embed_batch_chunks") from None

    def infer(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode, no-grad pass: (cluster features [n*C, 256], normalised attribute predictions [n*C, A])."""
        C = self.config.chunks_per_sentence
        per = max(1, self.config.embed_batch_chunks // C)
        feats = np.empty((len(ids) * C, self.network.top_layer.in_features), dtype=np.float32)
        preds = np.empty((len(ids) * C, len(self.config.attributes)), dtype=np.float32)
        network = inference_copy(self.network)  # eval mode, BatchNorm folded into the convolutions
        with torch.inference_mode(), self._oom_guard("embedding chunks"), self._autocast():
            for s in range(0, len(ids), per):
                batch = ids[s:s + per]
                out = network(self._sentence_chunks(batch))
                rows = slice(s * C, (s + len(batch)) * C)
                feats[rows] = out.features.float().cpu().numpy()
                preds[rows] = out.attributes.float().cpu().numpy()
        return feats, preds

    def _cluster(self, ids: np.ndarray, stage: int, epoch: int, times: dict[str, float]) -> KMeansResult:
        """Embed `ids` and k-means the chunk features with this stage's seed."""
        cfg = self.config
        t = time.perf_counter()
        feats, _ = self.infer(ids)
        times["embed"] += time.perf_counter() - t
        if not np.isfinite(feats).all():
            self._diverged(f"the chunk embeddings hold NaN/inf at epoch {epoch}")
        t = time.perf_counter()
        result = kmeans(feats, cfg.num_clusters, cfg.kmeans_iterations, stage_seed(cfg.seed, epoch, stage),
                        cfg.pca_whitening, None if self.device.type == "cuda" else False)
        times["kmeans"] += time.perf_counter() - t
        return result

    def _reset_top_layer(self) -> None:
        """Fresh N(0, 0.01) cluster top layer, and no optimiser state left over from the old one."""
        self.network.reset_top_layer()
        for opt in self.optimizers:
            for p in self.network.top_layer.parameters():
                opt.state.pop(p, None)

    def _make_optimizers(self) -> list[torch.optim.Optimizer]:
        cfg, params = self.config, list(self.network.parameters())
        if cfg.optimizer == "adam":
            return [torch.optim.Adam(params, lr=cfg.lr_adam, weight_decay=cfg.weight_decay)]
        return [torch.optim.SGD(params, lr=cfg.lr_sgd, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
                torch.optim.Adam(params, lr=cfg.lr_adam, weight_decay=cfg.weight_decay),
                torch.optim.SGD(self.network.top_layer.parameters(), lr=cfg.lr_top, weight_decay=cfg.weight_decay)]

    def _diverged(self, reason: str):
        # NaN/inf in the store's frames is a corrupt store (StoreError), not a divergence
        self.store.check_frames(np.concatenate([self.train_ids, self.pool_ids, self.val_ids]))
        self.failed = reason
        cfg = self.config
        raise TrainingDiverged(f"training diverged: {reason} (temporal={cfg.temporal}, lr_sgd={cfg.lr_sgd}, "
                               f"lr_adam={cfg.lr_adam}, lr_top={cfg.lr_top}, precision={cfg.precision}); "
                               "the best model and the last checkpoint are from before the divergence")

    def _train_stage(self, ids: np.ndarray, assignments: np.ndarray, labels: np.ndarray | None,
                     chunk_sampling: bool, stage_name: str, times: dict) -> dict[str, float]:
        """One pass over the cluster-balanced resampling of `ids`; returns mean losses and counts.

        `assignments` [n, C]; `labels` [n, A] normalised (None: the SSL stage, clustering path only).
        """
        cfg, C = self.config, self.config.chunks_per_sentence
        self._start_stage()
        if chunk_sampling:  # vanilla: cluster-uniform chunks, batches of batch_size*C chunks
            order = sample_chunks(assignments.reshape(-1), cfg.num_clusters, self.rng)
            step = cfg.batch_size * C
        else:               # temporal: cluster-balanced sentences, kept whole and in order
            order = sample_sentences(assignments, cfg.num_clusters, self.rng)
            step = cfg.batch_size
        sums: dict[str, float] = defaultdict(float)
        batches = chunks = 0
        t_stage = time.perf_counter()
        for b in range(0, len(order), step):
            t = time.perf_counter()
            x, pseudo_t, y_t = self._stage_batch(order[b:b + step], ids, assignments, labels, chunk_sampling)
            times["batch"] += time.perf_counter() - t
            with self._oom_guard(f"training ({stage_name} stage)"):
                parts = self._train_step(x, pseudo_t, y_t, f"{stage_name} loss", b // step + 1)
            for k, v in parts.items():
                sums[k] += float(v.detach())
            batches += 1
            chunks += x.shape[0]
        seconds = time.perf_counter() - t_stage
        times["train"] += seconds
        result = {k: v / max(batches, 1) for k, v in sums.items()}
        result.update(chunks=chunks, seconds=seconds)
        return result

    def _start_stage(self) -> None:
        """A fresh top layer, training mode, and the encoder frozen for the first freeze_encoder_epochs."""
        net = self.network
        self._reset_top_layer()
        net.train()
        frozen = self.epoch < self.config.freeze_encoder_epochs   # self.epoch: epochs completed before this one
        if frozen:
            net.encoder.eval()                                 # BatchNorm statistics and dropout frozen too
        for p in net.encoder.parameters():
            p.requires_grad_(not frozen)                       # no gradient, so no optimiser step or decay

    def _stage_batch(self, pick: np.ndarray, ids: np.ndarray, assignments: np.ndarray, labels: np.ndarray | None,
                     chunk_sampling: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The chunks of batch `pick` (augmented when SpecAugment is on), their pseudo-labels and their
        attribute labels (None in the SSL stage) on the device."""
        C = self.config.chunks_per_sentence
        if chunk_sampling:
            sent, pos = pick // C, pick % C
            x = self._single_chunks(ids[sent], pos)
            pseudo = assignments.reshape(-1)[pick]
            y = labels[sent] if labels is not None else None
        else:
            x = self._sentence_chunks(ids[pick])
            pseudo = assignments[pick].reshape(-1)
            y = np.repeat(labels[pick], C, axis=0) if labels is not None else None
        if self.augment is not None:
            x = self.augment(x)
        pseudo_t = torch.from_numpy(pseudo).to(self.device)
        y_t = torch.from_numpy(y).to(self.device) if y is not None else None
        return x, pseudo_t, y_t

    def _train_step(self, x: torch.Tensor, pseudo_t: torch.Tensor, y_t: torch.Tensor | None, what: str,
                    batch: int) -> dict[str, torch.Tensor]:
        """One optimiser step on a batch; returns its losses (cross-entropy, CCC, triplet, total)."""
        cfg, C = self.config, self.config.chunks_per_sentence
        with self._autocast():
            out = self.network(x)
        loss_ce = F.cross_entropy(out.logits.float(), pseudo_t)
        loss = loss_ce
        parts = {"loss_ce": loss_ce}
        if y_t is not None:
            loss_ccc = (ccc_loss(out.attributes.float(), y_t) * self.attribute_weights).sum()
            loss = loss + loss_ccc
            parts["loss_ccc"] = loss_ccc
        if cfg.temporal == "triplet":
            emb = out.embedding.float().view(-1, C, out.embedding.shape[-1])
            loss_trip = triplet_loss(emb, cfg.triplet_margin, cfg.triplet_window,
                                     cfg.triplets_per_sentence, self.triplet_generator)
            loss = loss + cfg.triplet_weight * loss_trip
            parts["loss_triplet"] = loss_trip
        if not torch.isfinite(loss):
            self._diverged(f"the {what} became {loss.item()} at epoch {self.epoch + 1}, batch {batch}")
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in self.optimizers:
            self.scaler.step(opt)
        self.scaler.update()
        parts["loss_total"] = loss
        return parts

    def validate(self) -> dict[str, float]:
        """Validation CCC per attribute at sentence level (mean of chunk predictions, de-normalised)."""
        C, attrs = self.config.chunks_per_sentence, list(self.config.attributes)
        _, preds = self.infer(self.val_ids)
        sentence = preds.reshape(len(self.val_ids), C, len(attrs)).mean(axis=1).astype(np.float64)
        if not np.isfinite(sentence).all():
            self._diverged(f"the validation predictions hold NaN/inf at epoch {self.epoch + 1}")
        out = {}
        for j, a in enumerate(attrs):
            mean, std = self.label_terms[a]
            out[f"val_ccc_{a}"] = ccc(self.val_labels[:, j], sentence[:, j] * std + mean)
        out["val_ccc_mean"] = float(np.mean([out[f"val_ccc_{a}"] for a in attrs]))
        return out

    # ---- one epoch -----------------------------------------------------------------------
    def run_epoch(self) -> dict[str, Any]:
        """Run the next epoch (SSL stage, labeled stage, validation); returns its metrics."""
        cfg, C = self.config, self.config.chunks_per_sentence
        epoch = self.epoch + 1
        t_epoch = time.perf_counter()
        times: dict[str, float] = defaultdict(float)
        metrics: dict[str, Any] = {"epoch": epoch}

        if len(self.pool_ids):
            km = self._cluster(self.pool_ids, STAGE_SSL, epoch, times)
            ssl = self._train_stage(self.pool_ids, km.assignments.reshape(-1, C), None, False, "SSL", times)
            metrics["ssl_loss_ce"] = ssl["loss_ce"]
            if "loss_triplet" in ssl:
                metrics["ssl_loss_triplet"] = ssl["loss_triplet"]
            metrics.update(ssl_sentences=len(self.pool_ids), ssl_cluster_empty=km.reseeded,
                           time_ssl_train_s=ssl["seconds"])

        km = self._cluster(self.train_ids, STAGE_LABELED, epoch, times)
        assignments = km.assignments
        res = self._train_stage(self.train_ids, assignments.reshape(-1, C), self.train_labels,
                                cfg.temporal == "none", "labeled", times)
        metrics.update(loss_total=res["loss_total"], loss_ce=res["loss_ce"], loss_ccc=res["loss_ccc"])
        if "loss_triplet" in res:
            metrics["loss_triplet"] = res["loss_triplet"]
        metrics["nmi"] = nmi(self.prev_assignments, assignments) if self.prev_assignments is not None \
            else float("nan")
        metrics.update(cluster_min=int(km.sizes.min()), cluster_max=int(km.sizes.max()),
                       cluster_empty=int(km.reseeded), kmeans_objective=float(km.objective))

        t = time.perf_counter()
        metrics.update(self.validate())
        times["validate"] += time.perf_counter() - t

        is_best = improves(metrics, self.selection, None if self.best_metrics is None else self.best_metric)
        self.prev_assignments = assignments
        self.epoch = epoch
        total = time.perf_counter() - t_epoch
        metrics.update(
            is_best=is_best, train_sentences=len(self.train_ids),
            time_embed_s=times["embed"], time_kmeans_s=times["kmeans"], time_train_s=times["train"],
            time_batch_s=times["batch"], time_validate_s=times["validate"], time_epoch_s=total,
            chunks_per_s=res["chunks"] / res["seconds"] if res["seconds"] > 0 else float("nan"),
        )
        if is_best and self.selects_best:
            self.keep_as_best(metrics)
        metrics["best_val_ccc_mean"] = best_val_ccc(self)
        self.history.append(dict(metrics))
        return metrics

    def keep_as_best(self, metrics: dict[str, Any]) -> None:
        """Keep the weights and `metrics` of the epoch just run as the best model."""
        self.best_metric, self.best_epoch = float(metrics[self.selection[0]]), self.epoch
        self.best_state = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
        self.best_metrics = dict(metrics)

    def select_best_by(self, metric: str, mode: str) -> None:
        """Pick the best epoch by `metric` and `mode` (a search trial's metric) instead of val_ccc_mean; a
        UserError when this run would never report the metric."""
        why = unreported(metric, self.config)
        if why is None and metric == "ssl_loss_ce" and not len(self.pool_ids):
            why = (f"this run has no unlabeled utterances (the store has no unlabeled pool and "
                   f"labeled_ratio={self.config.labeled_ratio} drops no labels), so no SSL stage")
        if why is not None:
            raise UserError(f"the metric {metric!r} that picks the best model is never reported: {why}")
        self.selection = (metric, mode)

    def fit(self, on_epoch: Callable[[dict], bool | None] | None = None,
            checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
        """Train to config.epochs (a fresh trainer resumes from `checkpoint_dir` if it holds a checkpoint;
        one is saved there every epoch); `on_epoch(metrics)` returning True stops early. Returns a summary."""
        if checkpoint_dir is not None and self.epoch == 0 and ckpt.find_checkpoint(checkpoint_dir) is not None:
            self.load_checkpoint(checkpoint_dir)
        while self.epoch < self.config.epochs:
            metrics = self.run_epoch()
            if checkpoint_dir is not None:
                self.save_checkpoint(checkpoint_dir)
            if on_epoch is not None and on_epoch(metrics):
                break
        return {"epochs": self.epoch, "best_epoch": self.best_epoch, "best_val_ccc_mean": best_val_ccc(self),
                "best_metrics": self.best_metrics, "last_metrics": self.history[-1] if self.history else None}

    # ---- models and checkpoints ----------------------------------------------------------
    def model_info(self, metadata: dict[str, Any] | None = None) -> ModelInfo:
        """What a model file of this run holds besides the weights."""
        terms = self.store.norm_terms
        return ModelInfo(self.config, dict(self.store.feature_spec), terms.mean.astype(np.float32),
                         terms.std.astype(np.float32), dict(self.label_terms), metadata or {})

    def save_best_model(self, path: str | Path) -> bool:
        """Write the best model so far as a model file; False when no epoch has finished."""
        if self.best_state is None:
            return False
        with torch.random.fork_rng(devices=[]):   # building a network draws init weights: keep the run's RNG
            network = build_network(self.config, self.n_mels)
        network.load_state_dict(self.best_state)
        meta = {"epoch": self.best_epoch, "metrics": plain(self.best_metrics or {}),
                "store": str(self.store.path), "validation_split": self.val_name}
        if self.init_report is not None:
            meta["init_model"] = self.init_report.to_dict()
        save_model(path, network, self.model_info(meta))
        return True

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue from the next epoch exactly, as plain data."""
        return {
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "store": {"path": str(self.store.path), "fingerprint": str(self.store.meta.get("fingerprint", ""))},
            "network": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.capture_rng(self.rng, self.py_rng, self.triplet_generator),
            "prev_assignments": None if self.prev_assignments is None else torch.from_numpy(self.prev_assignments),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_metrics": plain(self.best_metrics) if self.best_metrics else None,
            "best_state": self.best_state,
            "selection": list(self.selection),
            "history": [plain(m) for m in self.history],
        }

    def save_checkpoint(self, directory: str | Path) -> Path:
        """checkpoint_state() plus best_model.pt, written atomically as the folder `directory`."""
        extra = {ckpt.BEST_MODEL_FILE: self.save_best_model} if self.best_state is not None else {}
        return ckpt.write_checkpoint(directory, self.checkpoint_state(), extra)

    def load_checkpoint(self, directory: str | Path) -> None:
        """Continue from a checkpoint written by save_checkpoint with a compatible config."""
        state = ckpt.read_checkpoint(directory)
        self.restore_state(state, str(Path(state["_path"]) / ckpt.STATE_FILE))

    def restore_state(self, state: dict[str, Any], where: str) -> None:
        """Continue from checkpoint_state() data (`where` names its file in errors); a checkpoint whose
        entries are missing or of the wrong type (damaged) is a UserError naming it."""
        try:
            self._restore(state, where)
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise UserError(f"{where}: damaged checkpoint (an entry is missing or of the wrong type: "
                            f"{exc.__class__.__name__}: {detail})") from None

    def _restore(self, state: dict[str, Any], where: str) -> None:
        check_resumable(state["config"], self.config, where)
        fingerprint = str(self.store.meta.get("fingerprint", ""))
        if state["store"]["fingerprint"] != fingerprint:
            raise UserError(f"{where}: the checkpoint was trained on a different store "
                            f"({state['store']['path']}) than {self.store.path}")
        self.network.load_state_dict(state["network"])
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        self.scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng(state["rng"], self.rng, self.py_rng, self.triplet_generator)
        prev = state["prev_assignments"]
        self.prev_assignments = None if prev is None else prev.numpy().copy()
        self.epoch = int(state["epoch"])
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        self.best_metrics = state["best_metrics"]
        self.best_state = state["best_state"]
        self.selection = checkpoint_selection(state)
        self.history = list(state["history"])


def improves(metrics: dict[str, Any], selection: tuple[str, str], best: float | None) -> bool:
    """Whether an epoch's `metrics` beat the best so far (`best`; None: none yet) on `selection` = (metric,
    mode); an epoch without a finite value of the metric never does. An epoch that does not report the metric
    at all is a UserError: no epoch of the run would ever be kept as its best model."""
    metric, mode = selection
    if metric not in metrics:
        raise UserError(f"epoch {metrics.get('epoch')} does not report {metric!r}, the metric that picks the best "
                        f"model (it reports {', '.join(sorted(k for k in metrics if k != 'epoch'))}); "
                        "no best model could be kept")
    value = float(metrics[metric])
    return math.isfinite(value) and beats(value, best, mode)


def checkpoint_selection(state: dict[str, Any]) -> tuple[str, str]:
    """The (metric, mode) a checkpoint's best model was picked by; the best so far is kept by it when the
    trainer continues (a checkpoint written before searches picked by their metric: val_ccc_mean)."""
    return tuple(state.get("selection", SELECTION))


def best_val_ccc(trainer) -> float:
    """The validation CCC (mean over attributes) of a Trainer's or CVTrainer's best epoch (-inf before one)."""
    return float(trainer.best_metrics["val_ccc_mean"]) if trainer.best_metrics else -math.inf


def check_resumable(saved: dict[str, Any], config: TrainConfig, where: str) -> None:
    """UserError unless a checkpoint's config equals `config` up to RESUMABLE_CHANGES (a key that an older
    checkpoint lacks counts as its default)."""
    defaults = TrainConfig().to_dict()
    for key, value in config.to_dict().items():
        before = saved.get(key, defaults[key])
        if key not in RESUMABLE_CHANGES and before != value:
            raise UserError(f"{where}: the checkpoint was trained with {key}={before!r}, "
                            f"this run has {key}={value!r}; only {', '.join(RESUMABLE_CHANGES)} may change "
                            "on resume")
