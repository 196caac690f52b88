"""Compute the dense query and value blocks of the Hessian for one attention kind."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np

from transformer_curvature.data import as_curvlinops_data
from transformer_curvature.dense import dense_hessian
from transformer_curvature.devices import resolve_device
from transformer_curvature.jobs import start_job
from transformer_curvature.losses import make_loss
from transformer_curvature.models import TransformerSettings, build_transformer, move_model
from transformer_curvature.results_io import save_arrays

logger = start_job(snakemake)
settings = snakemake.params.dense
linear = snakemake.wildcards.attention == "linear"
device = resolve_device(snakemake.params.device)
architecture = TransformerSettings(
    num_layers=1,
    d_model=settings["d_model"],
    mlp_ratio=settings["mlp_ratio"],
    linear_attention=linear,
    residual_scaling=settings["histograms"]["linear_residual_scaling"] if linear else 1.0,
)
model = build_transformer(architecture, seed=settings["model_seed"])
model = move_model(model, device)
data = as_curvlinops_data(np.load(snakemake.input.tokens, allow_pickle=False), device)
loss = make_loss(settings["loss"])

blocks = {}
for block, name in (("query", "blocks.0.attn.W_Q"), ("value", "blocks.0.attn.W_V")):
    blocks[block], _, _ = dense_hessian(
        model, loss, (name,), data, settings["chunk_size"], settings=architecture
    )
save_arrays(snakemake.output.dense, **blocks)
logger.info("wrote %s", snakemake.output.dense)
