"""Write and read result files: plain data only, written atomically.

Result pickles hold numbers, strings, lists, tuples, dicts and NumPy arrays.
`load_results` uses a restricted unpickler, so a file that would build any
other object (and could run code on load) is rejected.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# The globals a pickle of plain data and NumPy arrays needs.
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


class UnsafeResultError(pickle.UnpicklingError):
    """A result file refers to a Python object other than plain data."""


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafeResultError(
                f"{self.path}: refers to {module}.{name}, which is not plain data; "
                "result files may hold only numbers, strings, lists, dicts and "
                "NumPy arrays. Delete the file and rerun the rule that writes it."
            )
        return super().find_class(module, name)


def load_results(path: str | os.PathLike) -> Any:
    """Load a result pickle, rejecting anything but plain data.

    Raises:
        UnsafeResultError: If the file refers to another Python object.
    """
    with open(path, "rb") as handle:
        unpickler = _PlainDataUnpickler(handle)
        unpickler.path = str(path)
        return unpickler.load()


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write `payload` to `path` through a temporary file and a rename.

    A job killed mid-write leaves no partial file at `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_results(path: str | os.PathLike, results: Any) -> None:
    """Pickle plain data to `path` atomically."""
    atomic_write_bytes(path, pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))


def save_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to an ``.npz`` file atomically; load it with ``allow_pickle=False``."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
