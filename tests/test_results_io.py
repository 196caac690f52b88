"""Result files: plain data only on load, atomic writes, and clear errors when a write fails."""

from __future__ import annotations

import ast
import errno
import os
import pickle
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from transformer_curvature import results_io
from transformer_curvature.results_io import (
    DamagedResultError,
    ResultWriteError,
    UnsafeResultError,
    atomic_write_bytes,
    check_output_dir,
    load_results,
    load_seed_result,
    save_results,
)

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / "workflow"


Point = namedtuple("Point", "x y")


class RunsShellCommand:
    """Pickles to a call of ``os.system``, the classic code-on-load payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class CallsGlobal:
    """Pickles to a call of an arbitrary global with arguments."""

    def __init__(self, function, *args) -> None:
        self.function = function
        self.args = args

    def __reduce__(self):
        return (self.function, self.args)


def plain_results() -> dict:
    return {
        "config": "norm=none_num_layers=1",
        "seed": 1234,
        "sigmas": np.logspace(-2, 1, 5),
        "norms": {"query": {"H": np.arange(10.0).reshape(2, 5)}},
        "counts": [1, 2, 3],
        "stderr": np.float64(0.5),
        "flags": (True, None, np.int64(3), 2.5j),
        "dtype": np.dtype("float32").name,
    }


def test_plain_results_round_trip(tmp_path):
    path = tmp_path / "seed=1234.pickle"
    results = plain_results()
    save_results(path, results)
    loaded = load_results(path)
    assert loaded.keys() == results.keys()
    np.testing.assert_array_equal(loaded["sigmas"], results["sigmas"])
    np.testing.assert_array_equal(loaded["norms"]["query"]["H"], results["norms"]["query"]["H"])
    assert loaded["flags"] == results["flags"]
    assert loaded["counts"] == [1, 2, 3]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda marker: RunsShellCommand(f"touch {marker}"), id="os_system"),
        pytest.param(
            lambda marker: {"norms": [1.0, RunsShellCommand(f"touch {marker}")]}, id="nested"
        ),
        pytest.param(
            lambda marker: CallsGlobal(subprocess.call, ["touch", str(marker)]), id="subprocess"
        ),
        pytest.param(
            lambda marker: CallsGlobal(eval, f"open({str(marker)!r}, 'w')"), id="builtins_eval"
        ),
    ],
)
def test_code_on_load_rejected(tmp_path, payload):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(payload(marker)))
    # The reference: plain pickle runs the payload, so the file is a real attack.
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UnsafeResultError) as raised:
        load_results(path)
    assert not marker.exists()
    message = str(raised.value)
    assert str(path) in message
    assert "not plain data" in message
    assert "Delete the file and rerun" in message


def test_arbitrary_class_rejected(tmp_path):
    path = tmp_path / "point.pickle"
    path.write_bytes(pickle.dumps(Point(1, 2)))
    with pytest.raises(UnsafeResultError, match=r"test_results_io\.Point"):
        load_results(path)


@pytest.mark.parametrize("size", [0, 1, 40])
def test_truncated_file_names_path(tmp_path, size):
    path = tmp_path / "seed=1.pickle"
    save_results(path, {"norms": np.arange(100.0)})
    path.write_bytes(path.read_bytes()[:size])
    with pytest.raises(DamagedResultError, match=r"seed=1\.pickle: damaged result file") as error:
        load_results(path)
    assert "Delete it and rerun" in str(error.value)


def seed_result(config="cfg", seed=7):
    """Return a minimal per-seed growth result."""
    return {
        "config": config,
        "seed": seed,
        "sigmas": np.array([0.1, 1.0]),
        "num_layers": 1,
        "norms": {"query": {"H": np.ones((1, 2))}},
    }


def test_seed_result_loads_at_its_path(tmp_path):
    path = tmp_path / "cfg" / "seed=7.pickle"
    save_results(path, seed_result())
    assert load_seed_result(path)["seed"] == 7


@pytest.mark.parametrize(
    ("folder", "name", "expected"),
    [
        ("cfg", "seed=8.pickle", "which belong in cfg/seed=7.pickle"),
        ("other", "seed=7.pickle", "configuration 'cfg', seed 7"),
    ],
)
def test_seed_result_at_wrong_path_rejected(tmp_path, folder, name, expected):
    path = tmp_path / folder / name
    save_results(path, seed_result())
    with pytest.raises(DamagedResultError, match=expected) as error:
        load_seed_result(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"a": 1}, r"lacks the keys \['config', 'seed'"),
        ([1, 2], "contains list, not a per-seed result"),
    ],
)
def test_seed_result_without_keys_rejected(tmp_path, content, expected):
    path = tmp_path / "cfg" / "seed=7.pickle"
    save_results(path, content)
    with pytest.raises(DamagedResultError, match=expected):
        load_seed_result(path)


def test_object_array_elements_checked(tmp_path):
    marker = tmp_path / "code_ran"
    array = np.empty(1, dtype=object)
    array[0] = RunsShellCommand(f"touch {marker}")
    path = tmp_path / "object_array.pickle"
    path.write_bytes(pickle.dumps(array))
    with pytest.raises(UnsafeResultError, match="posix.system"):
        load_results(path)
    assert not marker.exists()


def python_sources() -> list[Path]:
    """Every Python file of the workflow: scripts and package."""
    return sorted(WORKFLOW.rglob("*.py"))


def unsafe_loads(source: Path, root: Path = REPO) -> list[str]:
    """List the calls in `source` that could unpickle a file without the restricted unpickler."""
    tree = ast.parse(source.read_text(), filename=str(source))
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        where = f"{source.relative_to(root)}:{node.lineno}: {name}"
        if name in {
            "pickle.load",
            "pickle.loads",
            "pickle.Unpickler",
            "torch.load",
            "pd.read_pickle",
            "pandas.read_pickle",
            "joblib.load",
            "dill.load",
        }:
            if source.name != "results_io.py":
                problems.append(where)
        elif name in {"np.load", "numpy.load"}:
            allow = keywords.get("allow_pickle")
            if not (isinstance(allow, ast.Constant) and allow.value is False):
                problems.append(f"{where} without allow_pickle=False")
    return problems


def test_readers_use_restricted_unpickler():
    problems = [problem for source in python_sources() for problem in unsafe_loads(source)]
    assert problems == []


def test_reader_scan_finds_unsafe_load(tmp_path):
    source = tmp_path / "reader.py"
    source.write_text(
        "import pickle\nimport numpy as np\n"
        "data = pickle.load(open('x', 'rb'))\nmore = np.load('y.npy')\n"
    )
    problems = unsafe_loads(source, root=tmp_path)
    assert problems == [
        "reader.py:3: pickle.load",
        "reader.py:4: np.load without allow_pickle=False",
    ]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "nested" / "result.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["result.bin"]


def test_stale_partial_removed(tmp_path):
    path = tmp_path / "seed=1234.pickle"
    stale = tmp_path / ".seed=1234.pickle.abcd_123.partial"
    other = tmp_path / ".seed=1234.pickle.extra.abcd_123.partial"
    unrelated = tmp_path / "notes.partial"
    for leftover in (stale, other, unrelated):
        leftover.write_bytes(b"half")
    atomic_write_bytes(path, b"whole")
    assert not stale.exists()
    assert other.exists()  # a temporary file of another output, "seed=1234.pickle.extra"
    assert unrelated.exists()
    assert path.read_bytes() == b"whole"


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "The file system is full"),
        (errno.EACCES, "Permission denied"),
        (errno.EROFS, "read-only"),
    ],
)
def test_failed_write_names_path(tmp_path, monkeypatch, code, advice):
    path = tmp_path / "result.pickle"

    def failing_fsync(descriptor):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(results_io.os, "fsync", failing_fsync)
    with pytest.raises(ResultWriteError) as raised:
        save_results(path, {"seed": 1})
    assert raised.value.errno == code
    assert raised.value.filename == str(path)
    assert str(path) in str(raised.value)
    assert advice in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left


def test_failed_temporary_file_names_path(tmp_path, monkeypatch):
    path = tmp_path / "result.pickle"

    def failing_mkstemp(**kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs["dir"])

    monkeypatch.setattr(results_io.tempfile, "mkstemp", failing_mkstemp)
    with pytest.raises(ResultWriteError, match="Permission denied: make the folder writable"):
        atomic_write_bytes(path, b"data")
    assert not path.exists()


def test_write_under_file_names_path(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    path = blocker / "tiny" / "seed=1.pickle"
    with pytest.raises(ResultWriteError) as raised:
        atomic_write_bytes(path, b"data")
    assert str(path) in str(raised.value)
    assert "is a file, not a folder" in str(raised.value)
    assert blocker.read_text() == "not a folder"


def test_output_dir_under_file_rejected(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("")
    with pytest.raises(ResultWriteError) as raised:
        check_output_dir(blocker / "tiny", min_free_bytes=0)
    message = str(raised.value)
    assert f"{blocker} is a file, not a folder" in message
    assert "Move" in message


def test_output_dir_unwritable_rejected(tmp_path, monkeypatch):
    target = tmp_path / "results" / "tiny"
    real_access = os.access

    def no_write(path, mode, **kwargs):
        if Path(path) == tmp_path and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(results_io.os, "access", no_write)
    with pytest.raises(ResultWriteError, match=f"{tmp_path} is not writable"):
        check_output_dir(target, min_free_bytes=0)
    assert not (tmp_path / "results").exists()  # the check creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_dir_read_only_rejected(tmp_path):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with pytest.raises(ResultWriteError, match="is not writable"):
            check_output_dir(read_only / "results", min_free_bytes=0)
        with pytest.raises(ResultWriteError, match="Permission denied"):
            atomic_write_bytes(read_only / "results" / "x.pickle", b"data")
    finally:
        read_only.chmod(0o755)


def test_output_dir_full_disk_rejected(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    full = type(usage)(total=usage.total, used=usage.total - 2**20, free=2**20)
    monkeypatch.setattr(results_io.shutil, "disk_usage", lambda path: full)
    with pytest.raises(ResultWriteError) as raised:
        check_output_dir(tmp_path / "results", min_free_bytes=256 * 2**20)
    message = str(raised.value)
    assert "1 MiB free" in message
    assert "at least 256 MiB" in message
    assert str(tmp_path / "results") in message


def test_output_dir_accepted(tmp_path):
    check_output_dir(tmp_path / "results" / "tiny", min_free_bytes=1)
    assert not (tmp_path / "results").exists()
