"""The growth transformer's forward pass as two pure functions of its weights.

The loss reads only the logits at the six answer-predicting positions
(``-7..-2``). With causal attention these logits depend on positions
``0..16`` alone, and after the last attention layer every operation (the last
MLP, the final layer norm, the unembedding) acts on each position separately.
So the forward pass splits into

- ``body(params, tokens) -> m``: embeddings, every layer before the last, and
  the last layer's attention and skip connection, evaluated at the answer-
  predicting positions only: ``m = resid_mid`` of the last layer,
  ``[batch, 6, d_model]``;
- ``head(params, m) -> logits``: the last MLP, the final layer norm and the
  unembedding, ``[batch, 6, d_vocab_out]``, one position at a time.

Every attention weight lies in the body, and the head acts on each position
separately, which `curvature.linearize_head` relies on. The functions restate
the HookedTransformer that `models.build_transformer` builds, including its
two variants; `check_against_model` compares their logits with the model's.
Parameter names and shapes are the model's (``model.named_parameters()``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .data import NUM_ANSWER_TOKENS, SEQUENCE_LENGTH
from .models import TransformerSettings

Params = Mapping[str, torch.Tensor]

# Logits at these positions predict the answer digits; the losses read no others.
FIRST_ANSWER_LOGIT = SEQUENCE_LENGTH - NUM_ANSWER_TOKENS - 1  # 11
NUM_USED_POSITIONS = SEQUENCE_LENGTH - 1  # position 17 feeds no logit that the loss reads

# Largest relative difference from the model's logits that `check_against_model`
# accepts by default: float32 rounding stays near 1e-6, float64 near 1e-15.
CHECK_RTOL = {torch.float32: 1e-4, torch.float64: 1e-10}

# HookedTransformerConfig fields that must keep these values for the functions
# to restate the model; `models.build_transformer` leaves them at their defaults.
_REQUIRED_CONFIG = {
    "act_fn": "relu",
    "attn_only": False,
    "positional_embedding_type": "standard",
    "parallel_attn_mlp": False,
    "gated_mlp": False,
    "use_split_qkv_input": False,
    "use_attn_in": False,
    "post_embedding_ln": False,
    "use_normalization_before_and_after": False,
    "attention_dir": "causal",
    "attn_scores_soft_cap": -1.0,
    "scale_attn_by_inverse_layer_idx": False,
    "final_rms": False,
    "use_qk_norm": False,
    "n_key_value_heads": None,
    "use_attention_sinks": False,
    "clip_qkv": None,
    "use_logn_attn": False,
}


class SplitTransformer:
    """Body and head functions of one growth transformer.

    Args:
        settings: The architecture, as given to `models.build_transformer`.
        model_config: The model's ``HookedTransformerConfig`` (``model.cfg``),
            for the layer-norm epsilon and the attention scale.

    Raises:
        ValueError: If `model_config` sets an option these functions do not
            restate, or its normalization differs from `settings.norm`.
    """

    def __init__(self, settings: TransformerSettings, model_config) -> None:
        required = _REQUIRED_CONFIG | {
            "normalization_type": "LN" if settings.norm == "pre" else None
        }
        for field, expected in required.items():
            value = getattr(model_config, field, expected)
            if value != expected:
                raise ValueError(
                    f"HookedTransformerConfig.{field} is {value!r}, but SplitTransformer "
                    f"supports only {expected!r} here; restate that option in "
                    "split_forward.py before using it."
                )
        self.settings = settings
        self.layer_norm = settings.norm == "pre"
        self.eps = float(model_config.eps)
        self.attention_scale = (
            float(model_config.attn_scale) if model_config.use_attn_scale else 1.0
        )

    def _layer_norm(self, params: Params, x: torch.Tensor, name: str) -> torch.Tensor:
        centered = x - x.mean(-1, keepdim=True)
        scale = (centered.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        return centered / scale * params[f"{name}.w"] + params[f"{name}.b"]

    def _mlp_block(self, params: Params, layer: int, resid_mid: torch.Tensor) -> torch.Tensor:
        """Return ``resid_post = resid_mid + MLP(LN2(resid_mid))``."""
        prefix = f"blocks.{layer}"
        normalized = (
            self._layer_norm(params, resid_mid, f"{prefix}.ln2") if self.layer_norm else resid_mid
        )
        hidden = torch.relu(
            normalized @ params[f"{prefix}.mlp.W_in"] + params[f"{prefix}.mlp.b_in"]
        )
        return resid_mid + hidden @ params[f"{prefix}.mlp.W_out"] + params[f"{prefix}.mlp.b_out"]

    def _attention(
        self, params: Params, layer: int, resid_pre: torch.Tensor, query_positions: slice
    ) -> torch.Tensor:
        """Return ``attn_out [batch, queries, d_model]`` for the queries at `query_positions`."""
        prefix = f"blocks.{layer}.attn"
        normalized = (
            self._layer_norm(params, resid_pre, f"blocks.{layer}.ln1")
            if self.layer_norm
            else resid_pre
        )

        def project(inputs: torch.Tensor, name: str) -> torch.Tensor:
            # [batch, pos, d_model] x [heads, d_model, d_head] -> [batch, heads, pos, d_head]
            weight, bias = params[f"{prefix}.W_{name}"], params[f"{prefix}.b_{name}"]
            return torch.einsum("bpd,hde->bhpe", inputs, weight) + bias[:, None, :]

        queries = project(normalized[:, query_positions], "Q")
        keys = project(normalized, "K")
        values = project(normalized, "V")
        scores = queries @ keys.transpose(-1, -2) / self.attention_scale

        num_keys = resid_pre.shape[1]
        key_index = torch.arange(num_keys, device=resid_pre.device)
        query_index = key_index[query_positions]
        causal = query_index[:, None] >= key_index[None, :]
        if self.settings.linear_attention:
            pattern = torch.where(causal, scores, 0.0)
        else:
            pattern = torch.softmax(torch.where(causal, scores, -math.inf), dim=-1)
        mixed = pattern @ values  # [batch, heads, queries, d_head]
        return (
            torch.einsum("bhqe,hed->bqd", mixed, params[f"{prefix}.W_O"]) + params[f"{prefix}.b_O"]
        )

    def body(self, params: Params, tokens: torch.Tensor) -> torch.Tensor:
        """Map tokens ``[batch, 18]`` to the last layer's ``resid_mid`` at positions 11..16.

        Positions 11..16 are the answer-predicting positions.

        Returns:
            ``[batch, 6, d_model]``.
        """
        used = tokens[:, :NUM_USED_POSITIONS]
        resid = params["embed.W_E"][used] + params["pos_embed.W_pos"][:NUM_USED_POSITIONS]
        last_layer = self.settings.num_layers - 1
        for layer in range(self.settings.num_layers):
            # Only the last layer's answer-predicting queries reach the loss.
            queries = slice(FIRST_ANSWER_LOGIT, None) if layer == last_layer else slice(None)
            attention_out = self._attention(params, layer, resid, queries)
            resid_mid = self.settings.residual_scaling * resid[:, queries] + attention_out
            if layer == last_layer:
                return resid_mid
            resid = self._mlp_block(params, layer, resid_mid)
        raise AssertionError("unreachable: num_layers is at least 1")

    def head(self, params: Params, resid_mid: torch.Tensor) -> torch.Tensor:
        """Map the last layer's ``resid_mid [..., d_model]`` to logits ``[..., d_vocab_out]``.

        Each position is mapped on its own.
        """
        resid = self._mlp_block(params, self.settings.num_layers - 1, resid_mid)
        if self.layer_norm:
            resid = self._layer_norm(params, resid, "ln_final")
        return resid @ params["unembed.W_U"] + params["unembed.b_U"]

    def answer_logits(self, params: Params, tokens: torch.Tensor) -> torch.Tensor:
        """Return the logits at the answer-predicting positions, ``[batch, 6, d_vocab_out]``."""
        return self.head(params, self.body(params, tokens))


def full_length_logits(answer_logits: torch.Tensor) -> torch.Tensor:
    """Place ``[batch, 6, vocab]`` answer logits into ``[batch, 18, vocab]``, zeros elsewhere.

    The losses in `losses` read only positions ``-7..-2``, so they give the
    same value on these logits as on the model's.
    """
    batch, _, vocab = answer_logits.shape
    before = answer_logits.new_zeros(batch, FIRST_ANSWER_LOGIT, vocab)
    after = answer_logits.new_zeros(batch, SEQUENCE_LENGTH - NUM_USED_POSITIONS, vocab)
    return torch.cat([before, answer_logits, after], dim=1)


def check_against_model(
    split: SplitTransformer,
    model: torch.nn.Module,
    tokens: torch.Tensor,
    rtol: float | None = None,
) -> float:
    """Compare the split functions' answer logits with the model's own.

    Args:
        rtol: Accepted relative difference; by default `CHECK_RTOL` of the
            model's dtype.

    Returns:
        The largest absolute difference, relative to the largest absolute logit.

    Raises:
        ValueError: If that relative difference exceeds `rtol`.
    """
    params = {name: parameter.detach() for name, parameter in model.named_parameters()}
    if rtol is None:
        rtol = CHECK_RTOL[next(iter(params.values())).dtype]
    with torch.no_grad():
        expected = model(tokens)[:, FIRST_ANSWER_LOGIT:NUM_USED_POSITIONS]
        actual = split.answer_logits(params, tokens)
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    difference = ((actual - expected).abs().max() / scale).item()
    if not difference <= rtol:
        raise ValueError(
            f"The split forward pass differs from the model by {difference:.3g} "
            f"(relative to the largest logit), more than {rtol:g}; the model has a "
            "feature that split_forward does not restate."
        )
    return difference
