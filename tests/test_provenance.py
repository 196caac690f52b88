"""Provenance records: package versions, git revision, digests and the JSON sidecar."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

import pytest

from transformer_curvature import provenance

REPO = Path(__file__).resolve().parent.parent


def test_package_versions_match_installed():
    versions = provenance.package_versions()
    assert set(versions) == {"python", *provenance.TRACKED_PACKAGES}
    for package in provenance.TRACKED_PACKAGES:
        assert versions[package] == metadata.version(package)


def test_missing_package_version_none():
    versions = provenance.package_versions(("no-such-distribution-xyz",))
    assert versions["no-such-distribution-xyz"] is None


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "tokens.npy"
    payload = bytes(range(256)) * 5000  # more than one read chunk
    path.write_bytes(payload)
    assert provenance.file_sha256(path) == hashlib.sha256(payload).hexdigest()


def test_git_revision_unknown_outside_checkout(tmp_path):
    assert provenance.git_revision(tmp_path) == {"revision": None, "dirty": None}


def test_git_revision_unknown_below_top_level():
    # workflow/ sits inside the checkout but is not its top level.
    assert provenance.git_revision(REPO / "workflow") == {"revision": None, "dirty": None}


@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO / ".git").exists(),
    reason="needs git and a git checkout of the project",
)
def test_git_revision_of_checkout():
    expected = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    record = provenance.git_revision(REPO)
    assert record["revision"] == expected
    assert isinstance(record["dirty"], bool)


def test_run_record_and_sidecar(tmp_path):
    result = tmp_path / "seed=7.pickle"
    result.write_bytes(b"result bytes")
    tokens = tmp_path / "tokens.npy"
    tokens.write_bytes(b"tokens")
    job = provenance.job_provenance(
        config={"num_layers": 2},
        seed=7,
        device="cpu",
        dtype="float32",
        threads=1,
        inputs={"tokens": tokens},
    )
    assert job["inputs_sha256"] == {"tokens": hashlib.sha256(b"tokens").hexdigest()}
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    record = provenance.run_provenance(
        started=started,
        finished=started + timedelta(seconds=90),
        wall_time_s=90.12345,
        repository=tmp_path,
        device_name="cpu",
        result_path=result,
        job=job,
        extra={"nonfinite_norms": {"total": 4, "nan": 1, "inf": 0}},
    )
    sidecar = tmp_path / "seed=7.provenance.json"
    provenance.write_sidecar(sidecar, record)
    loaded = json.loads(sidecar.read_text())
    assert loaded["result"] == "seed=7.pickle"
    assert loaded["result_sha256"] == hashlib.sha256(b"result bytes").hexdigest()
    assert loaded["started_at"] == "2026-01-02T01:04:05+00:00"
    assert loaded["finished_at"] == "2026-01-02T01:05:35+00:00"
    assert loaded["wall_time_s"] == 90.123
    assert loaded["git"] == {"revision": None, "dirty": None}
    assert loaded["job"] == job
    assert loaded["nonfinite_norms"] == {"total": 4, "nan": 1, "inf": 0}


def test_sidecar_rejects_nan(tmp_path):
    with pytest.raises(ValueError):
        provenance.write_sidecar(tmp_path / "bad.json", {"value": float("nan")})
    assert not (tmp_path / "bad.json").exists()
