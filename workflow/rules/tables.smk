# Per-seed result files of every growth configuration, in config order.
GROWTH_SEED_RESULTS = [
    f"{RESULTS}/growth/{name}/seed={seed}.pickle"
    for name, spec in GROWTH.items()
    for seed in experiments.seeds(config, spec)
]
# Each configuration's fields by name: what the theory needs for its rows.
GROWTH_CONFIG_FIELDS = {name: dataclasses.asdict(spec) for name, spec in GROWTH.items()}
TABLES = [f"{RESULTS}/exponents.tsv", f"{RESULTS}/norms.tsv"]


rule write_exponent_table:
    input:
        seeds=GROWTH_SEED_RESULTS,
        code=package_sources("exponents", "jobs", "results_io", "theory"),
    output:
        table=report(
            f"{RESULTS}/exponents.tsv",
            caption="../report/exponents.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/tables/exponents.log",
    conda:
        "../../envs/plotting.yaml"
    params:
        analysis=config["analysis"],
        configs=GROWTH_CONFIG_FIELDS,
    script:
        "../scripts/write_exponents.py"


rule write_norm_table:
    input:
        seeds=GROWTH_SEED_RESULTS,
        code=package_sources("exponents", "jobs", "results_io", "theory"),
    output:
        table=f"{RESULTS}/norms.tsv",
    log:
        f"{RESULTS}/logs/tables/norms.log",
    conda:
        "../../envs/plotting.yaml"
    params:
        configs=list(GROWTH),
    script:
        "../scripts/write_norms.py"
