"""The collect script: the authors' layout, non-finite values kept and logged once, stale inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_job_script

from transformer_curvature.results_io import load_results, save_results


SIGMAS = np.array([0.1, 1.0, 10.0])
MATRICES = ("H", "H_o", "H_f")


def seed_result(seed: int, sigmas=SIGMAS, config: str = "test_config", bad: dict | None = None) -> dict:
    """Build a one-layer per-seed result: seed + sigma index, plus 10 per block and 1 per matrix."""
    norms = {}
    for block_index, block in enumerate(("query", "value")):
        norms[block] = {}
        for matrix_index, matrix in enumerate(MATRICES):
            values = seed + np.arange(len(sigmas), dtype=float) + 10 * block_index + matrix_index
            norms[block][matrix] = values.reshape(1, -1)
    for (block, matrix, sigma_index), value in (bad or {}).items():
        norms[block][matrix][0, sigma_index] = value
    return {"config": config, "seed": seed, "sigmas": sigmas, "num_layers": 1, "norms": norms}


def run_collect(tmp_path: Path, results: list[dict]) -> Path:
    """Write per-seed files, run collect_growth.py on them, and return its log."""
    seed_paths = []
    for result in results:
        path = tmp_path / result["config"] / f"seed={result['seed']}.pickle"
        if not path.exists():  # a test may have put another file there
            save_results(path, result)
        seed_paths.append(str(path))
    names = ("frob_q", "frob_q_outer", "frob_q_func", "frob_v", "frob_v_outer", "frob_v_func")
    log = tmp_path / "collect.log"
    run_job_script(
        "collect_growth",
        inputs={"seeds": seed_paths},
        outputs={name: tmp_path / f"{name}.pickle" for name in names},
        log=log,
        rule="collect_attention_growth",
    )
    return log


def warnings_in(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if " WARNING " in line]


def test_layout_orders_repeats_by_seed(tmp_path):
    # Seeds given out of order: repeat 0 must be the smallest seed.
    run_collect(tmp_path, [seed_result(1235), seed_result(1234)])
    layout = load_results(tmp_path / "frob_q.pickle")
    assert layout == {0: {0: [1234.0, 1235.0, 1236.0], 1: [1235.0, 1236.0, 1237.0]}}
    layout = load_results(tmp_path / "frob_v_func.pickle")
    assert layout[0][0] == [1234.0 + 12, 1235.0 + 12, 1236.0 + 12]


def test_finite_values_log_no_warning(tmp_path):
    log = run_collect(tmp_path, [seed_result(1234)])
    assert warnings_in(log) == []
    assert "all 18 values are finite" in log.read_text()


def test_nonfinite_values_kept_and_counted(tmp_path):
    bad = {("query", "H", 2): np.nan, ("value", "H_o", 2): np.inf, ("value", "H_f", 1): -np.inf}
    log = run_collect(tmp_path, [seed_result(1234, bad=bad), seed_result(1235)])
    warnings = warnings_in(log)
    assert len(warnings) == 1
    assert "3 of 36 values are not finite" in warnings[0]
    assert "frob_q 1, frob_v_outer 1, frob_v_func 1" in warnings[0]
    assert "at sigma 1, 10" in warnings[0]
    query = load_results(tmp_path / "frob_q.pickle")
    assert np.isnan(query[0][0][2])
    assert query[0][0][:2] == [1234.0, 1235.0]
    assert load_results(tmp_path / "frob_v_outer.pickle")[0][0][2] == np.inf


def test_mismatched_sigmas_rejected(tmp_path):
    other = seed_result(1235, sigmas=np.array([0.1, 1.0, 9.0]))
    with pytest.raises(ValueError, match=r"seed=1235.pickle: its sigma grid differs"):
        run_collect(tmp_path, [seed_result(1234), other])
    assert not (tmp_path / "frob_q.pickle").exists()


def test_mismatched_config_rejected(tmp_path):
    other = seed_result(1235, config="another_config")
    with pytest.raises(ValueError, match=r"config is 'another_config'.*Delete the stale file"):
        run_collect(tmp_path, [seed_result(1234), other])


def test_copied_seed_file_rejected(tmp_path):
    # seed=1234.pickle contains a copy of seed 1235's result, as after a stray cp.
    save_results(tmp_path / "test_config" / "seed=1234.pickle", seed_result(1235))
    with pytest.raises(ValueError, match=r"seed=1234\.pickle: contains configuration 'test_config', seed 1235"):
        run_collect(tmp_path, [seed_result(1234), seed_result(1235)])
    assert not (tmp_path / "frob_q.pickle").exists()
