"""Resolve the configured device when a job runs, one GPU per concurrent job.

Snakemake's local executor counts a ``gpu`` resource but assigns no GPU ids,
so jobs that run at the same time on a workstation with several GPUs would all
use ``cuda:0``. `resolve_device` therefore claims a GPU slot: an exclusive
``fcntl.flock`` lock on one file per GPU in a slot folder (``.gpu_slots/<host>/``
in the working directory, or under the folder named by
``TRANSFORMER_CURVATURE_GPU_SLOTS``). The lock belongs to the job's process,
and the kernel releases it when the process exits, however it exits. A job
that finds every GPU taken waits for one to come free. With a single visible
GPU there is nothing to choose: jobs take it without a lock and share it
unless Snakemake's ``--resources gpu=1`` runs them one at a time.

Under SLURM (``SLURM_JOB_ID`` is set) the scheduler has already chosen the
GPUs and narrowed ``CUDA_VISIBLE_DEVICES`` to them. A job given one GPU takes
it without a lock. A job given several claims among them, with locks kept
apart per SLURM job, because two jobs on one node may both see their GPUs as
``0, 1, ...``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

DEVICE_SETTINGS = ("auto", "cpu", "cuda")
SLOT_DIR_VARIABLE = "TRANSFORMER_CURVATURE_GPU_SLOTS"
DEFAULT_SLOT_DIR = Path(".gpu_slots")
POLL_SECONDS = 1.0
"""How often a job that finds every GPU taken tries the locks again."""

logger = logging.getLogger(__name__)


@dataclass
class GpuSlot:
    """A GPU that this process holds through an exclusive lock on `lock_path`."""

    index: int
    """CUDA device index inside this process: the position among the visible GPUs."""
    gpu_id: str
    """The GPU's entry in ``CUDA_VISIBLE_DEVICES`` (an index or a UUID), or its index."""
    lock_path: Path
    handle: IO[str]
    """The open lock file; closing it releases the slot."""


class GpuSlotTimeout(TimeoutError):
    """Every GPU slot stayed taken for longer than the caller allowed."""


# Slots stay claimed until the process exits or `release_gpu_slots` runs;
# dropping the last reference to a handle would close it and free the GPU.
_held_slots: list[GpuSlot] = []


def resolve_device(setting: str, slot_dir: str | os.PathLike | None = None) -> torch.device:
    """Turn ``auto``, ``cpu`` or ``cuda`` into a device, claiming a free GPU for CUDA.

    ``auto`` takes CUDA when PyTorch finds a GPU and the CPU otherwise. On CUDA,
    the device index comes from `choose_gpu_index`; a process that already
    holds a GPU slot gets the same GPU again.

    Args:
        setting: The config's ``device`` value.
        slot_dir: Folder of the GPU lock files; by default the folder named by
            ``TRANSFORMER_CURVATURE_GPU_SLOTS``, else ``.gpu_slots`` in the working
            directory.

    Raises:
        ValueError: If `setting` is unknown, or ``cuda`` is requested without a GPU.
    """
    if setting not in DEVICE_SETTINGS:
        raise ValueError(f"Unknown device {setting!r}: use one of {list(DEVICE_SETTINGS)}.")
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", choose_gpu_index(slot_dir))
    if setting == "cuda":
        raise ValueError(
            "device is 'cuda' but PyTorch finds no CUDA GPU; set device: auto or cpu."
        )
    return torch.device("cpu")


def choose_gpu_index(
    slot_dir: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    device_count: int | None = None,
) -> int:
    """Return the CUDA device index this process should use, claiming a slot if needed.

    Args:
        slot_dir: Folder of the lock files, as in `resolve_device`.
        environ: Environment to read; `os.environ` by default.
        device_count: Number of GPUs visible to PyTorch; ``torch.cuda.device_count()``
            by default.

    Raises:
        ValueError: If no GPU is visible.
    """
    environ = os.environ if environ is None else environ
    if device_count is None:
        device_count = torch.cuda.device_count()
    if _held_slots:
        return _held_slots[0].index

    gpu_ids = visible_gpu_ids(environ, device_count)
    if not gpu_ids:
        raise ValueError(
            f"No GPU is visible (CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES')!r}, "
            f"{device_count} device(s)); set device: cpu, or make a GPU visible."
        )
    slurm_job = environ.get("SLURM_JOB_ID")
    if len(gpu_ids) == 1:
        # One GPU to choose from: the scheduler, or the user, has chosen it.
        logger.info("using the only visible GPU %s as cuda:0", gpu_ids[0])
        return 0

    folder = Path(slot_dir or environ.get(SLOT_DIR_VARIABLE) or DEFAULT_SLOT_DIR)
    folder = folder / _safe_name(socket.gethostname())
    if slurm_job:
        folder = folder / f"slurm-{_safe_name(slurm_job)}"
    slot = claim_gpu_slot(gpu_ids, folder)
    return slot.index


def visible_gpu_ids(environ: Mapping[str, str], device_count: int) -> list[str]:
    """Return the ids of the GPUs visible to PyTorch, in CUDA index order.

    The ids are the entries of ``CUDA_VISIBLE_DEVICES`` when it is set, so that
    two runs that address the same physical GPU under different indices share
    its lock. CUDA stops at the first invalid entry, and `device_count` is the
    number of entries it accepted.
    """
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(index) for index in range(device_count)]
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    return entries[:device_count]


def claim_gpu_slot(
    gpu_ids: list[str],
    slot_dir: str | os.PathLike,
    timeout_seconds: float | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> GpuSlot:
    """Lock the first free GPU of `gpu_ids` and hold it until this process exits.

    Each GPU has a lock file ``gpu-<id>.lock`` in `slot_dir`. A slot is free
    when no other open file holds an ``flock`` on its file, so a slot of a
    crashed or killed job is free again at once.

    Args:
        gpu_ids: The visible GPUs, in CUDA index order (see `visible_gpu_ids`).
        slot_dir: Folder of the lock files; created when missing.
        timeout_seconds: How long to wait for a free GPU; ``None`` waits without limit.
        poll_seconds: How long to sleep between two rounds over the locks.

    Returns:
        The claimed slot, also kept in this module until `release_gpu_slots`.

    Raises:
        ValueError: If `gpu_ids` is empty.
        GpuSlotTimeout: If every slot stays taken for `timeout_seconds`.
    """
    if not gpu_ids:
        raise ValueError("gpu_ids is empty: there is no GPU to claim.")
    folder = Path(slot_dir)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    waiting_logged = False
    while True:
        for index, gpu_id in enumerate(gpu_ids):
            slot = _try_lock(index, gpu_id, folder / f"gpu-{_safe_name(gpu_id)}.lock")
            if slot is not None:
                _held_slots.append(slot)
                logger.info("claimed GPU %s as cuda:%d (lock %s)", gpu_id, index, slot.lock_path)
                return slot
        if deadline is not None and time.monotonic() >= deadline:
            raise GpuSlotTimeout(
                f"All {len(gpu_ids)} GPUs {gpu_ids} stayed taken for {timeout_seconds} s "
                f"(locks in {folder}); run fewer GPU jobs at once, e.g. with "
                f"--resources gpu={len(gpu_ids)}."
            )
        if not waiting_logged:
            logger.info(
                "all %d GPUs %s are taken (locks in %s); waiting for one to come free",
                len(gpu_ids),
                gpu_ids,
                folder,
            )
            waiting_logged = True
        time.sleep(poll_seconds)


def release_gpu_slots() -> None:
    """Release every GPU slot this process holds (process exit does the same)."""
    while _held_slots:
        slot = _held_slots.pop()
        slot.handle.close()
        logger.info("released GPU %s", slot.gpu_id)


def _try_lock(index: int, gpu_id: str, lock_path: Path) -> GpuSlot | None:
    """Return the slot if the lock on `lock_path` was free, else ``None``."""
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    # The owner's host and process id, for someone who looks into the folder.
    handle.seek(0)
    handle.truncate()
    handle.write(f"{socket.gethostname()} {os.getpid()}\n")
    handle.flush()
    return GpuSlot(index=index, gpu_id=gpu_id, lock_path=lock_path, handle=handle)


def _safe_name(text: str) -> str:
    """Replace the characters that do not belong in a file name with ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)
