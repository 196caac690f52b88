"""The models: a TransformerLens transformer with two variants, and an MLP baseline.

Weight shapes follow TransformerLens: ``W_Q, W_K, W_V: [n_heads, d_model, d_head]``,
``W_O: [n_heads, d_head, d_model]``, ``W_E: [d_vocab, d_model]``,
``W_pos: [n_ctx, d_model]``.

The two variants that stock TransformerLens lacks are added with permanent
hooks, so every hook point keeps working:

- linear attention: the attention pattern is the causally masked, scaled score
  matrix ``q . k / sqrt(d_head)`` with the future entries set to 0 (no softmax);
- residual scaling ``s``: ``resid_mid = s * resid_pre + attn_out``; the skip
  connection around the MLP is unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .data import SEQUENCE_LENGTH, VOCAB_SIZE

NORMS = ("none", "pre")
ATTENTION_BLOCKS = {"query": "W_Q", "key": "W_K", "value": "W_V", "output": "W_O"}


@dataclass(frozen=True)
class TransformerSettings:
    """Architecture of one growth-rate transformer."""

    num_layers: int
    """Number of transformer blocks."""
    d_model: int
    """Width of the residual stream; also ``d_head`` (one head)."""
    norm: str = "none"
    """``none`` (no normalization) or ``pre`` (pre-layer-norm, ``LN``)."""
    linear_attention: bool = False
    """Replace the softmax by the causally masked, scaled scores."""
    residual_scaling: float = 1.0
    """Factor ``s`` on the skip connection around attention."""
    mlp_ratio: int = 4
    """``d_mlp = mlp_ratio * d_model``."""


class _Stash:
    """One tensor handed from an earlier hook point to a later one in a forward pass."""

    def __init__(self) -> None:
        self.tensor: torch.Tensor | None = None

    def keep(self, tensor: torch.Tensor, hook=None) -> torch.Tensor:
        self.tensor = tensor
        return tensor

    def take(self) -> torch.Tensor:
        tensor, self.tensor = self.tensor, None
        if tensor is None:
            raise RuntimeError("A model variant's hook ran out of order.")
        return tensor


def _add_linear_attention(attention: nn.Module) -> None:
    """Make an attention layer use its masked, scaled scores as the pattern."""
    scores = _Stash()

    def keep_masked_scores(attn_scores: torch.Tensor, hook=None) -> torch.Tensor:
        # The causal mask writes -inf into future entries; linear attention
        # gives them weight 0 instead.
        scores.keep(torch.where(torch.isinf(attn_scores), 0.0, attn_scores))
        return attn_scores

    def replace_pattern(pattern: torch.Tensor, hook=None) -> torch.Tensor:
        return scores.take().to(pattern.dtype)

    attention.hook_attn_scores.add_hook(keep_masked_scores, is_permanent=True)
    attention.hook_pattern.add_hook(replace_pattern, is_permanent=True)


def _add_residual_scaling(block: nn.Module, scale: float) -> None:
    """Scale the skip connection around a block's attention by `scale`."""
    resid_pre, attn_out = _Stash(), _Stash()

    def scaled_resid_mid(resid_mid: torch.Tensor, hook=None) -> torch.Tensor:
        # Rebuilt from the two summands instead of corrected, so s = 0 gives
        # exactly attn_out.
        return scale * resid_pre.take() + attn_out.take()

    block.hook_resid_pre.add_hook(resid_pre.keep, is_permanent=True)
    block.hook_attn_out.add_hook(attn_out.keep, is_permanent=True)
    block.hook_resid_mid.add_hook(scaled_resid_mid, is_permanent=True)


def build_transformer(
    settings: TransformerSettings, seed: int, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """Build a one-head HookedTransformer for addition on the CPU.

    GPT-2 style initialization (``init_weights=True``) under `seed`; move the
    model to a device afterwards, so the weights do not depend on the device.

    Raises:
        ValueError: If `settings.norm` is unknown or `settings.num_layers` < 1.
    """
    if settings.norm not in NORMS:
        raise ValueError(f"Unknown norm {settings.norm!r}: use one of {list(NORMS)}.")
    if settings.num_layers < 1:
        raise ValueError(f"num_layers ({settings.num_layers}) must be at least 1.")

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    config = HookedTransformerConfig(
        n_layers=settings.num_layers,
        n_heads=1,
        d_model=settings.d_model,
        d_head=settings.d_model,
        d_mlp=settings.mlp_ratio * settings.d_model,
        act_fn="relu",
        normalization_type="LN" if settings.norm == "pre" else None,
        d_vocab=VOCAB_SIZE,
        d_vocab_out=VOCAB_SIZE,
        n_ctx=SEQUENCE_LENGTH,
        init_weights=True,
        seed=seed,
        device="cpu",
        dtype=dtype,
    )
    with warnings.catch_warnings():
        # transformer-lens 3.x announces that HookedTransformer moves in 4.0; the
        # pin stays below 4, so the warning only clutters every job's log.
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        model = HookedTransformer(config, move_to_device=False)
    for block in model.blocks:
        if settings.linear_attention:
            _add_linear_attention(block.attn)
        if settings.residual_scaling != 1.0:
            _add_residual_scaling(block, settings.residual_scaling)
    return model


def move_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to `device`, keeping a HookedTransformer's ``cfg.device`` in step."""
    if hasattr(model, "cfg"):
        from transformer_lens.utilities.devices import move_to_and_update_config

        return move_to_and_update_config(model, device, print_details=False)
    return model.to(device)


def attention_weight(model: nn.Module, layer: int, block: str) -> nn.Parameter:
    """Return the weight of an attention block (``query``, ``key``, ``value``, ``output``)."""
    return getattr(model.blocks[layer].attn, ATTENTION_BLOCKS[block])


class EmbeddingMLP(nn.Module):
    """The MLP baseline: an embedding and `num_layers` bias-free linear layers.

    ``tokens [batch, pos] -> logits [batch, pos, vocab]``, applied to every
    token on its own, with no activations: ``num_layers - 1`` layers map
    ``width -> width`` and the last maps ``width -> vocab``. PyTorch's default
    initialization.
    """

    def __init__(self, width: int, num_layers: int, vocab_size: int = VOCAB_SIZE):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers ({num_layers}) must be at least 1.")
        self.embedding = nn.Embedding(vocab_size, width)
        widths = [width] * num_layers + [vocab_size]
        self.layers = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1], bias=False) for i in range(num_layers)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(tokens)
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden


def build_mlp(
    width: int, num_layers: int, seed: int, dtype: torch.dtype = torch.float32
) -> EmbeddingMLP:
    """Build the MLP baseline on the CPU with PyTorch's default initialization under `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EmbeddingMLP(width, num_layers)
    return model.to(dtype)


def embedding_weights(model: nn.Module) -> list[nn.Parameter]:
    """Return the weights that the growth experiment redraws with scale sigma."""
    if isinstance(model, EmbeddingMLP):
        return [model.embedding.weight]
    return [model.embed.W_E, model.pos_embed.W_pos]
