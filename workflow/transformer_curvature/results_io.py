"""Write and read result files: plain data only, written atomically.

Result pickles hold numbers, strings, lists, tuples, dicts and NumPy arrays.
`load_results` uses a restricted unpickler, so a file that would build any
other object (and could run code on load) is rejected before that object is
built.

Writes go through a temporary file in the target's folder and a rename, so a
job killed mid-write leaves no partial file at the target path. A write that
fails for lack of space or permission raises `ResultWriteError`, which names
the path and what to do.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# The globals a pickle of plain data and NumPy arrays needs. NumPy 2 moved
# numpy.core to numpy._core; both names are listed so that files written under
# either version load.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "float64"),
    ("numpy", "float32"),
    ("numpy", "int64"),
    ("numpy", "bool_"),
    ("builtins", "complex"),
}

# Suffix of the temporary files of `atomic_write_bytes`. tempfile adds 8
# random characters from [a-z0-9_] between the prefix and the suffix.
_PARTIAL_SUFFIX = ".partial"
_RANDOM_PART = r"[a-z0-9_]{8}"

# Advice for a failed write, by errno.
_WRITE_ADVICE = {
    errno.ENOSPC: "The file system is full: free some space there, or run the "
    "workflow from another directory (snakemake --directory).",
    errno.EDQUOT: "The disk quota is exhausted: free some space there, or run "
    "the workflow from another directory (snakemake --directory).",
    errno.EACCES: "Permission denied: make the folder writable for this user, "
    "or run the workflow from another directory (snakemake --directory).",
    errno.EPERM: "Operation not permitted: make the folder writable for this "
    "user, or run the workflow from another directory (snakemake --directory).",
    errno.EROFS: "The file system is read-only: run the workflow from a "
    "writable directory (snakemake --directory).",
    errno.ENOTDIR: "A component of the path is a file, not a folder: move that file away.",
    errno.EEXIST: "A component of the path is a file, not a folder: move that file away.",
}


class UnsafeResultError(pickle.UnpicklingError):
    """A result file refers to a Python object other than plain data."""


class DamagedResultError(ValueError):
    """A result file is truncated, corrupt, or lacks what its reader needs."""


class ResultWriteError(OSError):
    """Error raised when a result file or output folder cannot be written.

    The message names the path and the remedy. ``errno`` and ``filename`` are
    those of the underlying error, where there is one.
    """

    def __str__(self) -> str:
        # OSError would prefix "[Errno N]" and repeat the path once errno is set.
        return str(self.args[0])


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in `_ALLOWED_GLOBALS`."""

    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafeResultError(
                f"{self.path}: refers to {module}.{name}, which is not plain data; "
                "result files may hold only numbers, strings, lists, dicts and "
                "NumPy arrays. Nothing in the file was run. Delete the file and "
                "rerun the rule that writes it."
            )
        return super().find_class(module, name)


def load_results(path: str | os.PathLike) -> Any:
    """Load a result pickle, rejecting anything but plain data.

    Raises:
        UnsafeResultError: If the file refers to another Python object. The
            object is not built, so no code from the file runs.
        DamagedResultError: If the file is truncated or is not a pickle.
    """
    with open(path, "rb") as handle:
        try:
            return _PlainDataUnpickler(handle, str(path)).load()
        except UnsafeResultError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as error:
            raise DamagedResultError(
                f"{path}: damaged result file ({type(error).__name__}: {error}). "
                "Delete it and rerun the rule that writes it."
            ) from error


# Keys of every per-seed growth result.
_SEED_RESULT_KEYS = ("config", "seed", "sigmas", "num_layers", "norms")


def load_seed_result(path: str | os.PathLike) -> dict[str, Any]:
    """Load a per-seed growth result and check it against its path.

    The path must be ``.../<config>/seed=<seed>.pickle`` for the configuration
    and seed stored in the file, so that a file copied or moved to another
    seed's or configuration's place is not counted twice.

    Raises:
        DamagedResultError: If the file is damaged, lacks a key, or belongs to
            another configuration or seed than its path names.
    """
    path = Path(path)
    result = load_results(path)
    advice = "Delete it and rerun the growth job that writes it."
    if not isinstance(result, dict):
        raise DamagedResultError(
            f"{path}: contains {type(result).__name__}, not a per-seed result (a dict). {advice}"
        )
    missing = [key for key in _SEED_RESULT_KEYS if key not in result]
    if missing:
        raise DamagedResultError(f"{path}: lacks the keys {missing} of a per-seed result. {advice}")
    expected_name = f"seed={result['seed']}.pickle"
    if path.name != expected_name or path.parent.name != result["config"]:
        raise DamagedResultError(
            f"{path}: contains configuration {result['config']!r}, seed {result['seed']}, "
            f"which belong in {result['config']}/{expected_name}. {advice}"
        )
    return result


def _write_error(path: Path, error: OSError) -> ResultWriteError:
    """Wrap `error` from writing `path` in a `ResultWriteError` that names the path and the remedy."""
    advice = _WRITE_ADVICE.get(error.errno, "Check the path and the file system.")
    reason = error.strerror or str(error)
    wrapped = ResultWriteError(f"cannot write {path}: {reason}. {advice}")
    wrapped.errno = error.errno
    wrapped.filename = str(path)
    return wrapped


def _remove_stale_partials(path: Path) -> None:
    """Delete temporary files that a killed writer of `path` left behind.

    Snakemake runs one job per output path at a time, so no temporary file of
    `path` belongs to a live writer when a new write starts.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_RANDOM_PART}{re.escape(_PARTIAL_SUFFIX)}")
    for candidate in path.parent.glob(f".{path.name}.*{_PARTIAL_SUFFIX}"):
        if pattern.fullmatch(candidate.name):
            candidate.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write `payload` to `path` through a temporary file and a rename.

    A job killed mid-write leaves no partial file at `path`. Its temporary
    file, ``.<name>.<random>.partial`` beside `path`, is deleted by the next
    write of `path`.

    Raises:
        ResultWriteError: If the folder cannot be created or the file cannot
            be written (full disk, missing permission, a file in the way).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(path)
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=_PARTIAL_SUFFIX
        )
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        # mkstemp creates the file for its owner only; give it the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise _write_error(path, error) from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_results(path: str | os.PathLike, results: Any) -> None:
    """Pickle plain data to `path` atomically.

    The bytes depend only on `results`: the same data, built in the same
    order, pickles to the same bytes.
    """
    atomic_write_bytes(path, pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to an ``.npz`` file atomically; load it with ``allow_pickle=False``."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def check_output_dir(path: str | os.PathLike, min_free_bytes: int) -> None:
    """Check that `path` can be created or written and has `min_free_bytes` free.

    Creates nothing: the check runs on the nearest folder of `path` that
    exists.

    Raises:
        ResultWriteError: If a component of `path` is a file, the folder is
            not writable, or its file system has less than `min_free_bytes`
            free. The message names the path and what to do.
    """
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ResultWriteError(
            f"cannot write {path}: {existing} is a file, not a folder. Move "
            f"{existing} away, or run the workflow from another directory "
            "(snakemake --directory)."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ResultWriteError(
            f"cannot write {path}: {existing} is not writable for this user. "
            "Make it writable, or run the workflow from another directory "
            "(snakemake --directory)."
        )
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        raise ResultWriteError(
            f"not enough free space for {path}: {free / 2**20:.0f} MiB free on the "
            f"file system of {existing}, the workflow needs at least "
            f"{min_free_bytes / 2**20:.0f} MiB. Free some space, or run the "
            "workflow from another directory (snakemake --directory)."
        )
