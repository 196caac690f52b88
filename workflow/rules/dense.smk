DENSE_SOURCES = (
    "curvature",
    "data",
    "dense",
    "devices",
    "jobs",
    "losses",
    "models",
    "results_io",
)


rule dense_heterogeneity:
    input:
        tokens=f"{RESULTS}/data/heterogeneity.npy",
        code=package_sources(*DENSE_SOURCES),
    output:
        dense=f"{RESULTS}/dense/heterogeneity.npz",
    params:
        dense=config["dense"],
        device=config["device"],
    threads: config["dense"]["threads"]
    resources:
        gpu=config["dense"]["gpu"],
    log:
        f"{RESULTS}/logs/dense/heterogeneity.log",
    benchmark:
        f"{RESULTS}/benchmarks/dense/heterogeneity.tsv"
    conda:
        "../../envs/curvature.yaml"
    script:
        "../scripts/dense_heterogeneity.py"


rule dense_attention_blocks:
    input:
        tokens=f"{RESULTS}/data/histograms.npy",
        code=package_sources(*DENSE_SOURCES),
    output:
        dense=f"{RESULTS}/dense/histograms_{{attention}}.npz",
    wildcard_constraints:
        attention="softmax|linear",
    params:
        dense=config["dense"],
        device=config["device"],
    threads: config["dense"]["threads"]
    resources:
        gpu=config["dense"]["gpu"],
    log:
        f"{RESULTS}/logs/dense/histograms_{{attention}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/dense/histograms_{{attention}}.tsv"
    conda:
        "../../envs/curvature.yaml"
    script:
        "../scripts/dense_attention_blocks.py"
