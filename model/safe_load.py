"""Loading files that must never run code (torch.load(weights_only=True), np.load without pickles).

Both libraries answer a refused or damaged file with advice to load it unsafely ("weights_only=False
will likely succeed", "allow_pickle"); `load_torch` and `reason` turn that into a plain statement of
what is wrong with the file, so a user is never told to run a file's code.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

from model.errors import UserError

UNSAFE_ADVICE = ("weights_only", "allow_pickle")


def reason(exc: BaseException) -> str:
    """Why a file could not be loaded, in a few words, without the libraries' unsafe-loading advice."""
    text = str(exc).strip()
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        return "corrupt, or a Python pickle that would need code to load (refused)"
    if "allow_pickle" in text:
        return "holds Python objects (a pickle), not plain arrays (refused)"
    if "central directory" in text or "zip archive" in text or isinstance(exc, EOFError):
        return "truncated or corrupt (incomplete archive)"
    first = text.splitlines()[0] if text else ""
    if any(advice in first for advice in UNSAFE_ADVICE):
        first = "unsupported content"
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


def load_torch(path: str | Path, what: str, hint: str = "", map_location: Any = "cpu") -> Any:
    """torch.load(weights_only=True) of `path`; UserError '<path>: not a readable <what> (<reason>)<hint>'."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with warnings.catch_warnings():   # e.g. "Detected pickle protocol 4": noise on top of our message
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise                 # the machine's problem, not the file's
    except Exception as exc:  # noqa: BLE001 - any other failure to read the file is the file's problem
        raise UserError(f"{path}: not a readable {what} ({reason(exc)}){hint}") from None
