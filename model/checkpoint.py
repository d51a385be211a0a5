"""Training checkpoints: one folder holding everything needed to continue a run exactly.

Layout of a checkpoint folder:
- `state.pt`: a dict of plain tensors, numbers, strings, lists and dicts (torch.save), loaded with
  torch.load(weights_only=True) so that reading a checkpoint can never run code;
- `best_model.pt`: the best model so far, a model file (model.model_file), when there is one.

The folder is written atomically: the new checkpoint is written to a temporary sibling folder,
then swapped in by renames; a reader finds either the old or the new checkpoint, never a mix.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from model.atomic_files import building_dir
from model.errors import UserError
from model.safe_load import load_torch

if TYPE_CHECKING:   # torch is imported where it is used: status, export and report read checkpoint names only
    import torch

FORMAT = "deepemocluster-checkpoint/1"
STATE_FILE = "state.pt"
BEST_MODEL_FILE = "best_model.pt"
CV_BEST_MODEL = "best_model"      # a cv_folds run's best model: a folder of fold models (model.cv)


def best_model_name(config) -> str:
    """The name of a run's best model in its run folder and checkpoints: the file best_model.pt, or the
    folder best_model/ of a cv_folds run (`config`: a TrainConfig or a trial's config mapping)."""
    folds = config.get("cv_folds") if isinstance(config, dict) else config.cv_folds
    return CV_BEST_MODEL if folds else BEST_MODEL_FILE


def write_checkpoint(directory: str | Path, state: dict[str, Any],
                     extra_files: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """Write `state` (plus files made by `extra_files[name](path)`) atomically as `directory`."""
    import torch

    directory = Path(directory)
    old = directory.with_name(directory.name + ".old")   # find_checkpoint looks there after a crash mid-swap
    # a full disk is DiskFull; torch.save's error there is a RuntimeError ("unexpected pos"), told by the disk
    with building_dir(directory, old=old) as tmp:
        torch.save({"format": FORMAT, **state}, tmp / STATE_FILE)
        for name, write in (extra_files or {}).items():
            write(tmp / name)
    return directory


def find_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint folder at `directory` (or the one an interrupted swap left), else None."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def read_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Load `state.pt` of a checkpoint folder without unpickling code; UserError if unusable."""
    found = find_checkpoint(directory)
    if found is None:
        raise UserError(f"{directory}: no checkpoint found (expected {Path(directory) / STATE_FILE})")
    state = load_torch(found / STATE_FILE, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{found / STATE_FILE}: not a {FORMAT} checkpoint")
    state["_path"] = str(found)
    return state


def capture_rng(numpy_rng: np.random.Generator, python_rng: random.Random | Any,
                torch_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state a run draws from, as plain data."""
    import torch

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": numpy_rng.bit_generator.state,
        "python": _to_lists(python_rng.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch_generator is not None:
        state["generator"] = torch_generator.get_state()
    return state


def restore_rng(state: dict[str, Any], numpy_rng: np.random.Generator, python_rng: random.Random | Any,
                torch_generator: torch.Generator | None = None) -> None:
    """Put back the random states `capture_rng` recorded."""
    import torch

    torch.set_rng_state(state["torch"])
    numpy_rng.bit_generator.state = state["numpy"]
    python_rng.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if torch_generator is not None and "generator" in state:
        torch_generator.set_state(state["generator"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
