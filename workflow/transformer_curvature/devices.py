"""Resolve the configured device when a job runs."""

from __future__ import annotations

import torch

DEVICE_SETTINGS = ("auto", "cpu", "cuda")


def resolve_device(setting: str) -> torch.device:
    """Turn ``auto``, ``cpu`` or ``cuda`` into a device; ``auto`` takes CUDA when present.

    Raises:
        ValueError: If `setting` is unknown, or ``cuda`` is requested without a GPU.
    """
    if setting not in DEVICE_SETTINGS:
        raise ValueError(f"Unknown device {setting!r}: use one of {list(DEVICE_SETTINGS)}.")
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if setting == "cuda":
        raise ValueError(
            "device is 'cuda' but PyTorch finds no CUDA GPU; set device: auto or cpu."
        )
    return torch.device("cpu")
