"""Model variants against a forward pass written out by hand with the same weights."""

import math

import pytest
import torch

from transformer_curvature.data import make_addition_batches
from transformer_curvature.models import (
    TransformerSettings,
    build_mlp,
    build_transformer,
)


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter random values, so that zero-initialized biases count too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.5 * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def layer_norm(x, weight, bias, eps):
    centred = x - x.mean(-1, keepdim=True)
    return centred / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt() * weight + bias


def reference_forward(model, tokens, settings: TransformerSettings):
    """The transformer's forward pass from its weights alone."""
    d_head = settings.d_model
    eps = model.cfg.eps
    pre = settings.norm == "pre"
    positions = tokens.shape[1]
    future = torch.triu(torch.ones(positions, positions, dtype=torch.bool), diagonal=1)

    resid = model.embed.W_E[tokens] + model.pos_embed.W_pos[:positions]
    for block in model.blocks:
        attn = block.attn
        x = layer_norm(resid, block.ln1.w, block.ln1.b, eps) if pre else resid
        q = x @ attn.W_Q[0] + attn.b_Q[0]
        k = x @ attn.W_K[0] + attn.b_K[0]
        v = x @ attn.W_V[0] + attn.b_V[0]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
        if settings.linear_attention:
            pattern = scores.masked_fill(future, 0.0)
        else:
            pattern = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
        attn_out = pattern @ v @ attn.W_O[0] + attn.b_O
        resid_mid = settings.residual_scaling * resid + attn_out

        x = layer_norm(resid_mid, block.ln2.w, block.ln2.b, eps) if pre else resid_mid
        hidden = torch.relu(x @ block.mlp.W_in + block.mlp.b_in)
        resid = resid_mid + hidden @ block.mlp.W_out + block.mlp.b_out

    if pre:
        resid = layer_norm(resid, model.ln_final.w, model.ln_final.b, eps)
    return resid @ model.unembed.W_U + model.unembed.b_U


VARIANTS = [
    TransformerSettings(num_layers=1, d_model=8),
    TransformerSettings(num_layers=2, d_model=8),
    TransformerSettings(num_layers=2, d_model=8, norm="pre"),
    TransformerSettings(num_layers=2, d_model=8, linear_attention=True, residual_scaling=0.0),
    TransformerSettings(num_layers=1, d_model=8, linear_attention=True),
    TransformerSettings(num_layers=2, d_model=8, residual_scaling=0.5),
    TransformerSettings(num_layers=1, d_model=8, norm="pre", residual_scaling=0.0),
]


@pytest.mark.parametrize("settings", VARIANTS, ids=repr)
def test_transformer_matches_reference_forward(settings):
    model = build_transformer(settings, seed=7, dtype=torch.float64)
    randomize(model)
    tokens = torch.as_tensor(make_addition_batches(4, 1, seed=1)[0])
    with torch.no_grad():
        expected = reference_forward(model, tokens, settings)
        actual = model(tokens)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_linear_attention_pattern_reaches_hook():
    settings = TransformerSettings(num_layers=1, d_model=8, linear_attention=True)
    model = build_transformer(settings, seed=3, dtype=torch.float64)
    tokens = torch.as_tensor(make_addition_batches(2, 1, seed=1)[0])
    _, cache = model.run_with_cache(tokens)
    pattern = cache["blocks.0.attn.hook_pattern"]
    scores = cache["blocks.0.attn.hook_attn_scores"]
    future = torch.triu(torch.ones(18, 18, dtype=torch.bool), diagonal=1)
    assert (pattern[..., future] == 0).all()
    torch.testing.assert_close(pattern[..., ~future], scores[..., ~future])
    # A softmax pattern would have rows that sum to 1.
    assert not torch.allclose(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))


def test_residual_scaling_zero_drops_attention_skip():
    settings = TransformerSettings(num_layers=1, d_model=8, residual_scaling=0.0)
    model = build_transformer(settings, seed=3, dtype=torch.float64)
    tokens = torch.as_tensor(make_addition_batches(2, 1, seed=1)[0])
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_mid"], cache["blocks.0.hook_attn_out"], rtol=0, atol=0
    )


def test_same_seed_gives_same_weights():
    settings = TransformerSettings(num_layers=1, d_model=8)
    first = build_transformer(settings, seed=5)
    second = build_transformer(settings, seed=5)
    other = build_transformer(settings, seed=6)
    torch.testing.assert_close(first.blocks[0].attn.W_Q, second.blocks[0].attn.W_Q)
    assert not torch.equal(first.blocks[0].attn.W_Q, other.blocks[0].attn.W_Q)


def test_unknown_norm_rejected():
    with pytest.raises(ValueError, match="'post'"):
        build_transformer(TransformerSettings(num_layers=1, d_model=4, norm="post"), seed=0)


def test_zero_layers_rejected():
    with pytest.raises(ValueError, match="num_layers"):
        build_transformer(TransformerSettings(num_layers=0, d_model=4), seed=0)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_mlp_matches_reference_forward(num_layers):
    model = build_mlp(width=6, num_layers=num_layers, seed=2, dtype=torch.float64)
    tokens = torch.as_tensor(make_addition_batches(3, 1, seed=1)[0])
    hidden = model.embedding.weight[tokens]
    for layer in model.layers:
        assert layer.bias is None
        hidden = hidden @ layer.weight.T
    assert hidden.shape == (3, 18, 12)
    torch.testing.assert_close(model(tokens), hidden)


def test_mlp_layer_shapes():
    model = build_mlp(width=6, num_layers=3, seed=2)
    shapes = [tuple(layer.weight.shape) for layer in model.layers]
    assert shapes == [(6, 6), (6, 6), (12, 6)]
