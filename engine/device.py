"""Device and precision choices, made once per run."""

from __future__ import annotations

import contextlib

import torch

from engine.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 autocast on CUDA under 'auto'/'bf16'; fp32 (no autocast) on the CPU or when asked."""
    if precision == "fp32" or device.type != "cuda":
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """An autocast context for the dtype, or a no-op one for full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
