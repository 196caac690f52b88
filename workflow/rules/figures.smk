PLOT_SOURCES = ("jobs", "plotting", "results_io", "theory")


# The report's labels of each growth figure: the settings that tell figures apart.
GROWTH_REPORT_LABELS = {
    name: {"layers": str(spec.num_layers), "sigma grid": spec.sigma_grid}
    | (
        {}
        if spec.model == "mlp"
        else {
            "norm": spec.norm,
            "attention": "linear" if spec.linear_attention else "softmax",
            "residual scaling": str(float(spec.residual_scaling)),
            "loss": spec.loss,
        }
    )
    for name, spec in GROWTH.items()
}


rule plot_growth:
    input:
        **attention_result_files(f"{RESULTS}/{{{{config}}}}_{{name}}.pickle"),
        code=package_sources(*PLOT_SOURCES, "experiments", "exponents"),
    output:
        figure=report(
            f"{FIGURES}/{{config}}__all.pdf",
            caption="../report/growth.rst",
            category="Growth rates",
            subcategory=lambda wildcards: GROWTH[wildcards.config].experiment,
            labels=lambda wildcards: GROWTH_REPORT_LABELS[wildcards.config],
        ),
    log:
        f"{RESULTS}/logs/figures/{{config}}.log",
    wildcard_constraints:
        config=one_of(ATTENTION_CONFIGS),
    conda:
        "../../envs/plotting.yaml"
    params:
        sigmas=lambda wildcards: sigmas(wildcards.config),
        log_axes=lambda wildcards: config["sigma_grids"][
            GROWTH[wildcards.config].sigma_grid
        ]["spacing"]
        == "log",
        config=lambda wildcards: dict(
            dataclasses.asdict(GROWTH[wildcards.config]), name=wildcards.config
        ),
        analysis=config["analysis"],
    script:
        "../scripts/plot_growth.py"


rule plot_mlp_growth:
    input:
        frob_mlp=f"{RESULTS}/{{config}}_frob_mlp.pickle",
        code=package_sources(*PLOT_SOURCES, "exponents"),
    output:
        figure=report(
            f"{FIGURES}/{{config}}_frob_mlp.pdf",
            caption="../report/mlp_growth.rst",
            category="Growth rates",
            subcategory=lambda wildcards: GROWTH[wildcards.config].experiment,
            labels=lambda wildcards: GROWTH_REPORT_LABELS[wildcards.config],
        ),
    log:
        f"{RESULTS}/logs/figures/{{config}}.log",
    wildcard_constraints:
        config=one_of(MLP_CONFIGS),
    conda:
        "../../envs/plotting.yaml"
    params:
        sigmas=lambda wildcards: sigmas(wildcards.config),
        sigma_grid=lambda wildcards: GROWTH[wildcards.config].sigma_grid,
        analysis=config["analysis"],
    script:
        "../scripts/plot_mlp_growth.py"


rule plot_heterogeneity:
    input:
        dense=f"{RESULTS}/dense/heterogeneity.npz",
        code=package_sources(*PLOT_SOURCES),
    output:
        figure=report(
            f"{FIGURES}/heterogeneity.pdf",
            caption="../report/heterogeneity.rst",
            category="Dense Hessians",
        ),
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
        figure=report(
            f"{FIGURES}/histogram_classical.pdf",
            caption="../report/histogram_classical.rst",
            category="Dense Hessians",
        ),
    log:
        f"{RESULTS}/logs/figures/histogram_classical.log",
    conda:
        "../../envs/plotting.yaml"
    params:
        layout="stacked",
    script:
        "../scripts/plot_histograms.py"


rule plot_histogram_linear:
    input:
        dense=f"{RESULTS}/dense/histograms_linear.npz",
        background=f"{RESULTS}/dense/histograms_softmax.npz",
        code=package_sources(*PLOT_SOURCES),
    output:
        figure=report(
            f"{FIGURES}/histogram_linear.pdf",
            caption="../report/histogram_linear.rst",
            category="Dense Hessians",
        ),
    log:
        f"{RESULTS}/logs/figures/histogram_linear.log",
    conda:
        "../../envs/plotting.yaml"
    params:
        layout="side_by_side",
    script:
        "../scripts/plot_histograms.py"
