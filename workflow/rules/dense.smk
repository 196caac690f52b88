DENSE_SOURCES = (
    "curvature",
    "data",
    "dense",
    "devices",
    "jobs",
    "losses",
    "models",
    "results_io",
    "split_forward",
)


rule dense_heterogeneity:
    input:
        tokens=f"{RESULTS}/data/heterogeneity.npy",
        code=package_sources(*DENSE_SOURCES),
    output:
        dense=f"{RESULTS}/dense/heterogeneity.npz",
    log:
        f"{RESULTS}/logs/dense/heterogeneity.log",
    benchmark:
        f"{RESULTS}/benchmarks/dense/heterogeneity.tsv"
    conda:
        "../../envs/curvature.yaml"
    threads: config["dense"]["threads"]
    resources:
        gpu=config["dense"]["gpu"],
    params:
        dense=config["dense"],
        device=config["device"],
    script:
        "../scripts/dense_heterogeneity.py"


rule dense_attention_blocks:
    input:
        tokens=f"{RESULTS}/data/histograms.npy",
        code=package_sources(*DENSE_SOURCES),
    output:
        dense=f"{RESULTS}/dense/histograms_{{attention}}.npz",
    log:
        f"{RESULTS}/logs/dense/histograms_{{attention}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/dense/histograms_{{attention}}.tsv"
    wildcard_constraints:
        attention="softmax|linear",
    conda:
        "../../envs/curvature.yaml"
    threads: config["dense"]["threads"]
    resources:
        gpu=config["dense"]["gpu"],
    params:
        dense=config["dense"],
        device=config["device"],
    script:
        "../scripts/dense_attention_blocks.py"
