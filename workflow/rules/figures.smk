PLOT_SOURCES = ("plotting", "results_io", "theory")


rule plot_growth:
    input:
        **attention_result_files(f"{RESULTS}/{{{{config}}}}_{{name}}.pickle"),
        code=package_sources(*PLOT_SOURCES),
    output:
        figure=f"{FIGURES}/{{config}}__all.pdf",
    wildcard_constraints:
        config=one_of(ATTENTION_CONFIGS),
    params:
        sigmas=lambda wildcards: sigmas(wildcards.config),
        log_axes=lambda wildcards: config["sigma_grids"][GROWTH[wildcards.config].sigma_grid]["spacing"] == "log",
        config=lambda wildcards: dict(
            dataclasses.asdict(GROWTH[wildcards.config]), name=wildcards.config
        ),
    log:
        f"{RESULTS}/logs/figures/{{config}}.log",
    conda:
        "../../envs/plotting.yaml"
    script:
        "../scripts/plot_growth.py"


rule plot_mlp_growth:
    input:
        frob_mlp=f"{RESULTS}/{{config}}_frob_mlp.pickle",
        code=package_sources(*PLOT_SOURCES),
    output:
        figure=f"{FIGURES}/{{config}}_frob_mlp.pdf",
    wildcard_constraints:
        config=one_of(MLP_CONFIGS),
    params:
        sigmas=lambda wildcards: sigmas(wildcards.config),
    log:
        f"{RESULTS}/logs/figures/{{config}}.log",
    conda:
        "../../envs/plotting.yaml"
    script:
        "../scripts/plot_mlp_growth.py"


rule plot_heterogeneity:
    input:
        dense=f"{RESULTS}/dense/heterogeneity.npz",
        code=package_sources(*PLOT_SOURCES),
    output:
        figure=f"{FIGURES}/heterogeneity.pdf",
    log:
        f"{RESULTS}/logs/figures/heterogeneity.log",
    conda:
        "../../envs/plotting.yaml"
    script:
        "../scripts/plot_heterogeneity.py"


rule plot_histogram_classical:
    input:
        dense=f"{RESULTS}/dense/histograms_softmax.npz",
        code=package_sources(*PLOT_SOURCES),
    output:
        figure=f"{FIGURES}/histogram_classical.pdf",
    params:
        layout="stacked",
    log:
        f"{RESULTS}/logs/figures/histogram_classical.log",
    conda:
        "../../envs/plotting.yaml"
    script:
        "../scripts/plot_histograms.py"


rule plot_histogram_linear:
    input:
        dense=f"{RESULTS}/dense/histograms_linear.npz",
        background=f"{RESULTS}/dense/histograms_softmax.npz",
        code=package_sources(*PLOT_SOURCES),
    output:
        figure=f"{FIGURES}/histogram_linear.pdf",
    params:
        layout="side_by_side",
    log:
        f"{RESULTS}/logs/figures/histogram_linear.log",
    conda:
        "../../envs/plotting.yaml"
    script:
        "../scripts/plot_histograms.py"
