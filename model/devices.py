"""Where the work runs: the torch device, the autocast precision and the CPUs this process may use.

Training (model.trainer), inference (model.inference), the feature store's build and the search
driver all ask here, so that `auto`, an unusable device and "how many CPUs" mean the same everywhere.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from model.errors import UserError

if TYPE_CHECKING:   # torch is imported where it is used: the store's build asks for CPUs without it
    import torch

DEVICES = "auto, cpu, cuda or cuda:N"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; all of them where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def resolve_device(device: str | torch.device = "auto", option: str = "device") -> torch.device:
    """'auto' -> the first CUDA device when there is one, else the CPU; UserError for an unusable device.

    `option` names the setting in messages (`device` for a TrainConfig key, `--device` for a flag)."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"{option} {str(device)!r} is invalid: expected {DEVICES} ({exc})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option} {str(device)!r} was asked for but no CUDA GPU is available; "
                        f"use {option}=cpu or auto")
    if resolved.type not in ("cpu", "cuda"):
        raise UserError(f"{option} {str(device)!r} is not supported: expected {DEVICES}")
    return resolved


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    import torch

    try:
        flags = Path("/proc/cpuinfo").read_text()
        return " avx512_bf16" in flags or " amx_bf16" in flags
    except OSError:
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` (fp32, bf16, fp16 or auto) on `device` (None = plain fp32)."""
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("precision=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_supports_bf16() else None
