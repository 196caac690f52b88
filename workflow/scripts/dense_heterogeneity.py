"""Compute the dense Hessian of a one-layer transformer, full and attention-only."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import numpy as np

from transformer_curvature.data import as_curvlinops_data
from transformer_curvature.dense import ATTENTION_PARAMETERS, TRANSFORMER_PARAMETERS, dense_hessian
from transformer_curvature.devices import resolve_device
from transformer_curvature.jobs import start_job
from transformer_curvature.losses import make_loss
from transformer_curvature.models import TransformerSettings, build_transformer, move_model
from transformer_curvature.results_io import save_arrays

logger = start_job(snakemake)
settings = snakemake.params.dense
device = resolve_device(snakemake.params.device)
architecture = TransformerSettings(
    num_layers=1, d_model=settings["d_model"], mlp_ratio=settings["mlp_ratio"]
)
model = build_transformer(architecture, seed=settings["model_seed"])
model = move_model(model, device)
data = as_curvlinops_data(np.load(snakemake.input.tokens, allow_pickle=False), device)
loss = make_loss(settings["loss"])

full, full_names, full_sizes = dense_hessian(
    model, loss, TRANSFORMER_PARAMETERS, data, settings["chunk_size"], settings=architecture
)
logger.info("full Hessian %s over %s", full.shape, full_names)
attention, attention_names, attention_sizes = dense_hessian(
    model, loss, ATTENTION_PARAMETERS, data, settings["chunk_size"], settings=architecture
)
save_arrays(
    snakemake.output.dense,
    full=full,
    attention=attention,
    full_group_names=np.array(full_names),
    full_group_sizes=np.array(full_sizes),
    attention_group_names=np.array(attention_names),
    attention_group_sizes=np.array(attention_sizes),
)
logger.info("wrote %s", snakemake.output.dense)
