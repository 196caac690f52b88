rule growth_seed:
    input:
        tokens=growth_data,
        code=package_sources(
            "curvature",
            "data",
            "devices",
            "experiments",
            "growth",
            "jobs",
            "losses",
            "models",
            "provenance",
            "results_io",
            "split_forward",
        ),
    output:
        result=f"{RESULTS}/growth/{{config}}/seed={{seed}}.pickle",
        provenance=f"{RESULTS}/growth/{{config}}/seed={{seed}}.provenance.json",
    log:
        f"{RESULTS}/logs/growth/{{config}}/seed={{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/growth/{{config}}/seed={{seed}}.tsv"
    conda:
        "../../envs/curvature.yaml"
    threads: config["growth"]["threads"]
    resources:
        gpu=config["growth"]["gpu"],
    params:
        growth_config=lambda wildcards: dataclasses.asdict(GROWTH[wildcards.config]),
        settings=growth_settings,
        data=lambda wildcards: experiments.data_settings(
            config, GROWTH[wildcards.config].experiment
        ),
        sigmas=lambda wildcards: sigmas(wildcards.config),
        device=config["device"],
    script:
        "../scripts/growth_seed.py"


rule collect_attention_growth:
    input:
        seeds=growth_seed_results,
        code=package_sources("experiments", "jobs", "results_io"),
    output:
        **attention_result_files(f"{RESULTS}/{{{{config}}}}_{{name}}.pickle"),
    log:
        f"{RESULTS}/logs/collect/{{config}}.log",
    wildcard_constraints:
        config=one_of(ATTENTION_CONFIGS),
    conda:
        "../../envs/plotting.yaml"
    script:
        "../scripts/collect_growth.py"


rule collect_mlp_growth:
    input:
        seeds=growth_seed_results,
        code=package_sources("experiments", "jobs", "results_io"),
    output:
        frob_mlp=f"{RESULTS}/{{config}}_frob_mlp.pickle",
    log:
        f"{RESULTS}/logs/collect/{{config}}.log",
    wildcard_constraints:
        config=one_of(MLP_CONFIGS),
    conda:
        "../../envs/plotting.yaml"
    script:
        "../scripts/collect_growth.py"
