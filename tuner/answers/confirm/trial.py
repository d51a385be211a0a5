"""A confirmation's trial (Ray Tune function trainable): one seed of one configuration, trained for its full
epochs with no early stopping, then, after its last epoch and inside the trial (on its node, its GPU), its best
model (best_model.pt, chosen by validation CCC) evaluated on the validation split and the test splits:
`evaluation.json` and `predictions-<split>.npz` (per test utterance: store row, labels, predictions, speaker
code) are added to its final checkpoint (tuner.answers.confirm.results reads them).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from tuner.runs.config_errors import ConfigErrorRecorder
from tuner.runs.confirm_files import EVALUATION_FILE, EXPERIMENT, evaluated_checkpoint
from tuner.runs.run_dir import RunDir


def evaluate_seed(trainer, directory: str, splits: list[str] | None) -> dict[str, float]:
    """After the last epoch: evaluate best_model.pt in the checkpoint `directory` on the validation
    and test splits; write evaluation.json and predictions-<split>.npz there; return summary metrics.
    A cv_folds configuration's best model is its folder of fold models (averaged); its validation
    is the best mean-over-folds CCC (the store's Validation split was part of its folds)."""
    from model.checkpoint import best_model_name
    from model.inference import evaluate_store, resolve_models
    from model.trainer import best_val_ccc

    store = trainer.store
    test_splits = list(splits) if splits is not None else list(store.roles["test"])
    evaluation: dict[str, Any] = {"best_epoch": trainer.best_epoch, "validation_split": trainer.val_name,
                                  "test_splits": test_splits, "validation": None, "test": {}}
    best = Path(directory) / best_model_name(trainer.config)
    if not best.exists():  # validation CCC never finite: no model to evaluate
        evaluation["error"] = "no best model: the validation CCC was never a finite number"
    else:
        model = resolve_models(best, trainer.device)
        if trainer.config.cv_folds:
            evaluation["validation"] = {"ccc_mean": best_val_ccc(trainer), "cv_folds": trainer.config.cv_folds}
        else:
            evaluation["validation"] = evaluate_store(model, store, trainer.val_name, trainer.device)
        for split in test_splits:
            result = evaluate_store(model, store, split, trainer.device, predictions=True)
            per_utt = result.pop("predictions")
            buf = io.BytesIO()
            np.savez(buf, index=per_utt["index"], labels=per_utt["labels"], preds=per_utt["preds"],
                     speakers=utterance_speakers(store, per_utt["index"]),
                     attributes=np.array(trainer.config.attributes))
            (Path(directory) / f"predictions-{split}.npz").write_bytes(buf.getvalue())
            evaluation["test"][split] = result
    (Path(directory) / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=1))
    out = {}
    if evaluation["validation"]:
        out["confirm_validation_ccc_mean"] = evaluation["validation"]["ccc_mean"]
    for split, result in evaluation["test"].items():
        out[f"confirm_{split}_ccc_mean"] = result["ccc_mean"]
    return out


def utterance_speakers(store, index: np.ndarray) -> np.ndarray:
    """The speaker codes of store rows `index` (-1: unknown; all -1 when the store has no speaker ids)."""
    return store.groups(index, "speaker") if store.speakers else np.full(len(index), -1, dtype=np.int64)


def confirm_trial(config: dict[str, Any], configurations: dict[str, dict[str, Any]], store_path: str,
                  cpus: float, gpus: float, splits: list[str] | None, storage: str, run_name: str,
                  first_keys: tuple[str, ...] = ()) -> None:
    """Ray Tune function trainable: one seed of one configuration, trained fully, then evaluated.

    A seed already evaluated is not trained again: a driver killed after the trial's last checkpoint
    was written but before it recorded that checkpoint restores the trial without it. A configuration the
    store cannot train is recorded in the trial's folder (config_error.txt), not raised: Ray does not retry it."""
    from functools import partial

    from ray import tune

    from tuner.search.trainable import train_trial

    folder = Path(tune.get_context().get_trial_dir()).name
    if evaluated_checkpoint(RunDir(storage, run_name), folder) is not None:
        print(f"[tuner] confirm: {config['config_id']} seed {config['seed']} was evaluated before; kept")
        return
    values = {**configurations[config["config_id"]], "seed": int(config["seed"])}
    train_trial(values, store_path, cpus, gpus, first_keys, on_last_epoch=partial(evaluate_seed, splits=splits),
                config_errors=ConfigErrorRecorder(storage, run_name, EXPERIMENT))
