rule make_batches:
    input:
        code=package_sources("data", "jobs", "results_io"),
    output:
        tokens=f"{RESULTS}/data/{{experiment}}.npy",
    log:
        f"{RESULTS}/logs/data/{{experiment}}.log",
    conda:
        "../../envs/curvature.yaml"
    params:
        data=lambda wildcards: experiments.data_settings(config, wildcards.experiment),
    script:
        "../scripts/make_batches.py"
