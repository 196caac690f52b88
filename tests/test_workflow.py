"""The Snakemake workflow: the plan of the paper preset, targets, reruns, a tiny run."""

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_FILES = ("Snakefile", "config.yaml", "presets", "profiles", "workflow", "envs")

# The figure names of the paper, written out by hand.
GROWTH_FIGURES = [
    *(
        f"norm=none_num_layers={layers}_scale=log_residual_scaling=1.0"
        f"_linear_attention=False_loss=ce__all.pdf"
        for layers in range(1, 6)
    ),
    "norm=none_num_layers=1_scale=linear_residual_scaling=1.0_linear_attention=False_loss=ce__all.pdf",
    "norm=none_num_layers=1_scale=linear_short_residual_scaling=1.0_linear_attention=False_loss=ce__all.pdf",
    "norm=pre_num_layers=1_scale=log_residual_scaling=1.0_linear_attention=False_loss=ce__all.pdf",
    *(
        f"norm=none_num_layers={layers}_scale=log_short_residual_scaling=0.0"
        f"_linear_attention=True_loss=mse__all.pdf"
        for layers in range(1, 4)
    ),
]
PAPER_FIGURES = [
    "heterogeneity.pdf",
    "histogram_classical.pdf",
    "histogram_linear.pdf",
    *GROWTH_FIGURES,
    *(f"mlp_num_layers={layers}_frob_mlp.pdf" for layers in range(1, 6)),
]


def copy_workflow(destination: Path) -> Path:
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, destination / name)
    return destination


def snakemake(workdir: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "--cores", "2", *arguments],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """Parse a dry run's jobs as ``(rule, wildcards)``."""
    jobs = []
    for block in re.split(r"\n(?=\[.*\]\n(?:local)?rule )", output):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.MULTILINE)
        if rule is None:
            continue
        wildcards = {}
        found = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        if found:
            for pair in found.group(1).split(", "):
                key, _, value = pair.partition("=")
                wildcards[key] = value
        jobs.append((rule.group(1), wildcards))
    return jobs


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def test_paper_dry_run_plans_every_job(workflow_copy):
    result = snakemake(workflow_copy, "--dry-run")
    assert result.returncode == 0, result.stderr
    counts = Counter(rule for rule, _ in planned_jobs(result.stdout))
    # 11 transformer configurations and 5 MLP depths, 20 seeds each.
    assert counts["growth_seed"] == 11 * 20 + 5 * 20
    assert counts["collect_attention_growth"] == 11
    assert counts["collect_mlp_growth"] == 5
    assert counts["plot_growth"] + counts["plot_mlp_growth"] == 16
    assert not (workflow_copy / "results" / "growth").exists()


def test_paper_dry_run_uses_paper_paths_and_seeds(workflow_copy):
    result = snakemake(workflow_copy, "--dry-run")
    seeds = {
        int(wildcards["seed"])
        for rule, wildcards in planned_jobs(result.stdout)
        if rule == "growth_seed"
    }
    assert seeds == set(range(1234, 1254))
    for figure in PAPER_FIGURES:
        assert f"figures/{figure}" in result.stdout, figure


def test_one_figure_target_plans_only_its_jobs(workflow_copy):
    result = snakemake(workflow_copy, "--dry-run", "figures/heterogeneity.pdf")
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result.stdout)
    assert sorted(rule for rule, _ in jobs) == [
        "dense_heterogeneity",
        "make_batches",
        "plot_heterogeneity",
    ]
    assert jobs[[rule for rule, _ in jobs].index("make_batches")][1] == {
        "experiment": "heterogeneity"
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny"))
    result = snakemake(workdir, "--configfile", "presets/tiny.yaml")
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


@pytest.mark.workflow
def test_tiny_run_writes_every_figure(tiny_run):
    written = sorted(path.name for path in (tiny_run / "figures" / "tiny").glob("*.pdf"))
    assert written == sorted(PAPER_FIGURES)
    for name in written:
        content = (tiny_run / "figures" / "tiny" / name).read_bytes()
        assert content.startswith(b"%PDF-"), name
        assert b"%%EOF" in content[-64:], name


@pytest.mark.workflow
def test_tiny_run_writes_authors_layout(tiny_run):
    sys.path.insert(0, str(REPO / "workflow"))
    from transformer_curvature.results_io import load_results

    name = "norm=none_num_layers=2_scale=log_residual_scaling=1.0_linear_attention=False_loss=ce"
    layout = load_results(tiny_run / "results" / "tiny" / f"{name}_frob_q_outer.pickle")
    assert sorted(layout) == [0, 1]
    assert sorted(layout[0]) == [0, 1]
    assert len(layout[1][1]) == 5
    per_seed = load_results(tiny_run / "results" / "tiny" / "growth" / name / "seed=1235.pickle")
    assert layout[1][1] == list(per_seed["norms"]["query"]["H_o"][1])


@pytest.mark.workflow
def test_complete_run_plans_nothing(tiny_run):
    result = snakemake(tiny_run, "--configfile", "presets/tiny.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout) == []


@pytest.mark.workflow
def test_changed_configuration_reruns_only_its_jobs(tiny_run, tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"growth": {"experiments": {"pre_ln": {"dtype": "float64"}}}}))
    result = snakemake(
        tiny_run, "--configfile", "presets/tiny.yaml", str(override), "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    jobs = [(rule, wildcards) for rule, wildcards in planned_jobs(result.stdout) if rule != "all"]
    pre_ln = "norm=pre_num_layers=1_scale=log_residual_scaling=1.0_linear_attention=False_loss=ce"
    assert Counter(rule for rule, _ in jobs) == {
        "growth_seed": 2,
        "collect_attention_growth": 1,
        "plot_growth": 1,
        # The two tables gather every configuration, so they are rebuilt.
        "write_exponent_table": 1,
        "write_norm_table": 1,
    }
    assert {wildcards["config"] for _, wildcards in jobs if wildcards} == {pre_ln}


def pinned(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_env_pins_match_requirements(env_file):
    requirements = pinned(
        (REPO / "requirements.txt").read_text().splitlines()
        + (REPO / "requirements-nodeps.txt").read_text().splitlines()
    )
    environment = yaml.safe_load(env_file.read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    env_pins = pinned(pip_section)
    assert env_pins, env_file
    for name, version in env_pins.items():
        assert requirements.get(name) == version, f"{env_file.name}: {name}=={version}"


def test_rules_name_existing_conda_envs():
    for rule_file in (REPO / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', rule_file.read_text()):
            assert (rule_file.parent / env).resolve().is_file(), f"{rule_file.name}: {env}"
